"""The reconstruction loop of optimize/reconstruct.py, on a unit that is one product x @ W:
batches, the warm start and β schedule of the regularizer, the learning rates, the QDrop hooks,
threads, progress and the returned loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faaq_onnx.optimize import reconstruct as rc
from faaq_onnx.optimize.reconstruct import LearnedActQuant, ReconSettings, SoftWeight, reconstruct
from faaq_onnx.quant.weights import weight_grid


class SpyWeight(SoftWeight):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.betas = []

    def soft_and_reg(self, beta):
        if beta is not None:
            self.betas.append(beta)
        return super().soft_and_reg(beta)


def _unit(n=20, k=6, m=3, seed=0, learn_scale=False):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, m)).astype(np.float32)
    x = rng.standard_normal((n, k)).astype(np.float32)
    sw = SpyWeight(w, weight_grid(w, 3, "per-channel", 1, 0), learn_scale=learn_scale)
    seen = {"batches": [], "threads": []}

    def run_unit(feeds, hooks):
        seen["batches"].append(feeds["x"].shape[0])
        seen["threads"].append(torch.get_num_threads())
        y = feeds["x"] @ feeds["w"]
        return hooks["y"](y) if "y" in hooks else y

    return w, x, x @ w, sw, run_unit, seen


def test_regularizer_starts_after_the_warm_start_with_beta_annealed_by_cosine():
    _w, x, target, sw, run_unit, seen = _unit()
    s = ReconSettings(iters=10, batch_size=8, warm_start=0.2, beta=(20.0, 2.0))
    reconstruct(run_unit, {"w": sw}, {}, {"x": x}, target, s)
    assert seen["batches"] == [8] * 10
    # warm start: iterations 0, 1 without; then 8 iterations, progress 0, 1/8, ..., 7/8
    want = [2 + 9 * (1 + np.cos(i / 8 * np.pi)) for i in range(8)]
    np.testing.assert_allclose(sw.betas, want)
    assert sw.betas[0] == pytest.approx(20.0)


def test_no_regularizer_when_its_weight_is_zero_and_batches_never_exceed_the_samples():
    _w, x, target, sw, run_unit, seen = _unit(n=5)
    reconstruct(run_unit, {"w": sw}, {}, {"x": x}, target, ReconSettings(iters=4, reg=0.0))
    assert sw.betas == [] and seen["batches"] == [5] * 4


def test_threads_are_the_settings_during_the_loop_and_restored_after():
    _w, x, target, sw, run_unit, seen = _unit()
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    reconstruct(run_unit, {"w": sw}, {}, {"x": x}, target, ReconSettings(iters=2, threads=other))
    assert seen["threads"] == [other, other] and torch.get_num_threads() == before


def test_progress_every_fifty_iterations_and_at_the_last():
    _w, x, target, sw, run_unit, _ = _unit()
    calls = []
    reconstruct(
        run_unit,
        {"w": sw},
        {},
        {"x": x},
        target,
        ReconSettings(iters=102, lr=0.0),
        progress=lambda it, loss: calls.append((it, loss)),
    )
    assert [c[0] for c in calls] == [0, 50, 100, 101]
    # lr 0: the weight never moves, so every loss is the soft weight's error on its batch
    assert all(c[1] >= 0 for c in calls)


def test_returned_loss_is_the_last_batchs_reconstruction_error():
    _w, x, target, sw, run_unit, _ = _unit(n=8)
    s = ReconSettings(iters=3, batch_size=8, lr=0.0, reg=0.0)
    loss = reconstruct(run_unit, {"w": sw}, {}, {"x": x}, target, s)
    # batches drawn with replacement: recompute the last one from the same seeded stream
    gen = torch.Generator().manual_seed(s.seed)
    for _ in range(3):
        idx = torch.randint(0, 8, (8,), generator=gen).numpy()
    soft = sw.soft().detach().numpy()
    want = np.mean(np.sum((x[idx] @ soft - target[idx]) ** 2, axis=1))
    assert loss == pytest.approx(float(want), rel=1e-5)


def test_learning_rates_per_parameter_group(monkeypatch):
    groups = []
    real = torch.optim.Adam

    def spy(params, *a, **k):
        groups.extend({"n": len(g["params"]), "lr": g["lr"]} for g in params)
        return real(params, *a, **k)

    monkeypatch.setattr(rc.torch.optim, "Adam", spy)
    _w, x, target, sw, run_unit, _ = _unit(learn_scale=True)
    act = LearnedActQuant(0.1, 0, -8, 7, 100)
    s = ReconSettings(iters=1, lr=0.003, scale_lr=0.02, act_lr=0.0005)
    reconstruct(run_unit, {"w": sw}, {"y": act}, {"x": x}, target, s)
    assert groups == [{"n": 1, "lr": 0.003}, {"n": 1, "lr": 0.02}, {"n": 1, "lr": 0.0005}]
    groups.clear()
    _, _, _, plain, run_unit, _ = _unit()
    reconstruct(run_unit, {"w": plain}, {}, {"x": x}, target, ReconSettings(iters=1))
    assert groups == [{"n": 1, "lr": 1e-3}]


def test_hooks_apply_qdrop_with_the_settings_probability():
    _w, x, target, sw, run_unit, _ = _unit()
    seen = []

    class Act(LearnedActQuant):
        def __call__(self, x, drop=0.0, gen=None):
            seen.append(drop)
            return super().__call__(x, drop, gen)

    act = Act(0.1, 0, -8, 7, 60)
    reconstruct(run_unit, {"w": sw}, {"y": act}, {"x": x}, target, ReconSettings(iters=2, drop=0.3))
    assert seen == [0.3, 0.3]


def test_no_qdrop_draws_no_random_numbers():
    """drop 0: the quantizer leaves the generator alone, so the batches are those of a unit
    without activation quantizers."""
    q = LearnedActQuant(0.5, 0, -8, 7, 10)
    gen = torch.Generator().manual_seed(3)
    q(torch.linspace(-1, 1, 50), 0.0, gen)
    assert torch.equal(
        torch.rand(5, generator=gen), torch.rand(5, generator=torch.Generator().manual_seed(3))
    )


def test_float_inputs_mix_each_element_from_either_side():
    _w, x, target, sw, _run_unit, _ = _unit(n=4)
    fed = []

    def record(feeds, hooks):
        fed.append(feeds["x"].detach().numpy().copy())
        return feeds["x"] @ feeds["w"]

    xq = np.zeros_like(x)
    reconstruct(
        record,
        {"w": sw},
        {},
        {"x": xq},
        target,
        ReconSettings(iters=3, batch_size=4),
        float_inputs={"x": x},
    )
    allv = np.concatenate(fed)
    from_float = np.isin(allv, x)
    assert np.all(from_float | (allv == 0)) and 0.2 < from_float.mean() < 0.8
    assert rc.MIX_FLOAT == 0.5


def test_batches_are_drawn_only_from_the_rows_asked_for():
    """With `rows`, every batch comes from those rows: the same codes as reconstructing on those
    rows alone (same seed, same draws), and rows outside them (NaN here) are never read."""
    w, x, target, _, run_unit, _ = _unit(n=24)
    pool = np.arange(0, 24, 3)
    poisoned = target.copy()
    poisoned[np.setdiff1d(np.arange(24), pool)] = np.nan
    s = ReconSettings(iters=30, batch_size=4)
    grid = weight_grid(w, 3, "per-channel", 1, 0)
    a, b = SoftWeight(w, grid), SoftWeight(w, grid)
    loss = reconstruct(run_unit, {"w": a}, {}, {"x": x}, poisoned, s, rows=pool)
    reconstruct(run_unit, {"w": b}, {}, {"x": x[pool]}, target[pool], s)
    assert np.isfinite(loss)
    np.testing.assert_array_equal(a.codes(), b.codes())
