"""The reconstruction engine's pieces by their formulas: AdaRound's rectified sigmoid, hard
codes and regularizer, the learned weight-scale gain, LSQ activation quantization with QDrop,
the straight-through rounding, the loss and the input mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faaq_onnx.optimize.reconstruct import (
    LearnedActQuant,
    ReconSettings,
    SoftWeight,
    _channels_last,
    _mix,
    _recon_loss,
    _ste_round,
)
from faaq_onnx.quant.weights import weight_grid


def _soft():
    w = np.array([[0.26, -0.74, 0.5], [1.1, 0.05, -0.3]], np.float32)
    return w, SoftWeight(w, weight_grid(w, 4, "per-channel", 0, 1))


def test_h_is_the_rectified_sigmoid_of_the_paper():
    """h(V) = clip(sigmoid(V) (1.1 + 0.1) - 0.1, 0, 1) (AdaRound: zeta 1.1, gamma -0.1)."""
    _, sw = _soft()
    v = np.array([[-10.0, -1.0, 0.0], [0.5, 2.0, 10.0]], np.float32)
    sw.v.data = torch.from_numpy(v)
    expected = np.clip(1 / (1 + np.exp(-v)) * 1.2 - 0.1, 0, 1)
    np.testing.assert_allclose(sw.h().detach().numpy(), expected, rtol=1e-6, atol=1e-7)
    assert sw.h()[0, 0] == 0.0 and sw.h()[1, 2] == 1.0


def test_hard_codes_round_up_from_h_one_half_and_stay_on_the_grid():
    w, sw = _soft()
    floor = np.floor(w / sw.scale.numpy())
    sw.v.data = torch.full(w.shape, 10.0)  # h = 1: all up
    np.testing.assert_array_equal(sw.codes(), np.clip(floor + 1, -8, 7))
    sw.v.data = torch.full(w.shape, -10.0)  # h = 0: all down
    np.testing.assert_array_equal(sw.codes(), np.clip(floor, -8, 7))
    sw.v.data = torch.full(w.shape, float(-np.log(1.2 / 0.6 - 1)))  # h = 0.5 exactly: up
    assert abs(float(sw.h().detach()[0, 0]) - 0.5) < 1e-6
    np.testing.assert_array_equal(
        sw.codes(), np.clip(floor + (sw.h() >= 0.5).detach().numpy(), -8, 7)
    )


def test_regularizer_is_one_at_h_one_half_and_zero_at_the_ends():
    """sum(1 - |2h - 1|^beta)."""
    _, sw = _soft()
    sw.v.data = torch.tensor([[10.0, -10.0, 0.0], [10.0, -10.0, 10.0]])
    h = sw.h().detach().numpy()
    for beta in (2.0, 20.0):
        assert float(sw.reg(beta).detach()) == pytest.approx(np.sum(1 - np.abs(2 * h - 1) ** beta))
    assert float(sw.reg(2.0).detach()) == pytest.approx(1 - abs(2 * h[0, 2] - 1) ** 2)


def test_soft_weight_starts_at_the_float_weight_with_or_without_a_learned_scale():
    w, sw = _soft()
    np.testing.assert_allclose(sw.soft().detach().numpy(), w, atol=1e-3)
    grid = weight_grid(w, 4, "per-channel", 0, 1)
    learned = SoftWeight(w, grid, learn_scale=True)
    assert learned.log_gain.shape == (2,)
    np.testing.assert_allclose(learned.soft().detach().numpy(), w, atol=1e-3)
    np.testing.assert_array_equal(sw.learned_scale(), grid.scale)
    learned.log_gain.data = torch.tensor([np.log(2.0), 0.0])
    np.testing.assert_allclose(
        learned.learned_scale(), grid.scale * np.array([2.0, 1.0]), rtol=1e-6
    )
    # the gain scales the dequantized row it belongs to
    np.testing.assert_allclose(
        learned.soft().detach().numpy()[0], 2 * sw.soft().detach().numpy()[0], rtol=1e-5
    )


def test_learned_activation_quantizer_is_fake_quant_with_qdrop():
    """clip(round(x / s) + zp, qmin, qmax) - zp, times s; with drop 1 every element stays float;
    LSQ's gradient scale 1 / sqrt(n * qmax)."""
    q = LearnedActQuant(0.5, 3, 0, 15, 100)
    assert q.scale == pytest.approx(0.5) and q.grad_scale == pytest.approx(1 / np.sqrt(100 * 15))
    x = torch.tensor([-3.0, -1.4, 0.2, 0.74, 2.0, 9.0])
    expected = (np.clip(np.round(x.numpy() / 0.5) + 3, 0, 15) - 3) * 0.5
    np.testing.assert_allclose(q(x).detach().numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(q(x, drop=1.0), x)
    gen = torch.Generator().manual_seed(0)
    mixed = q(torch.linspace(-1, 1, 1000), drop=0.5, gen=gen).detach().numpy()
    kept = np.isclose(mixed, np.linspace(-1, 1, 1000, dtype=np.float32))
    assert 0.4 < kept.mean() < 0.65  # about half float (plus the values already on the grid)


def test_straight_through_rounding():
    t = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    y = _ste_round(t)
    np.testing.assert_array_equal(y.detach().numpy(), np.round([0.4, 1.6, -2.5]))
    y.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [1.0, 1.0, 1.0])


def test_loss_sums_over_channels_and_averages_the_rest():
    out = torch.arange(24.0).reshape(2, 3, 4)
    target = torch.zeros(2, 3, 4)
    d = out.numpy() ** 2
    assert float(_recon_loss(out, target)) == pytest.approx(d.sum(1).mean())
    assert float(_recon_loss(torch.tensor([1.0, 3.0]), torch.zeros(2))) == pytest.approx(5.0)


def test_mix_takes_each_element_from_one_side_about_half_the_time():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.zeros(4, 8, 16, 16), torch.ones(4, 8, 16, 16)
    m = _mix(a, b, gen)
    assert set(torch.unique(m).tolist()) == {0.0, 1.0} and 0.45 < float(m.mean()) < 0.55
    assert m.is_contiguous(memory_format=torch.channels_last)
    flat = torch.zeros(3, 5)
    assert _channels_last(flat) is flat


def test_recon_settings_defaults():
    """AdaRound/AIMET's: 1000 iterations, batch 32, lr 1e-3, lambda 0.01, 20 % warm start, beta
    annealed 20 -> 2; BRECQ's step-size lr 4e-5; no QDrop, no scale learning."""
    s = ReconSettings()
    assert (s.iters, s.batch_size, s.lr, s.act_lr, s.reg) == (1000, 32, 1e-3, 4e-5, 0.01)
    assert (s.warm_start, s.beta, s.drop, s.scale_lr, s.seed, s.threads) == (
        0.2,
        (20.0, 2.0),
        0.0,
        0.0,
        0,
        1,
    )


@pytest.mark.parametrize("beta", [None, 20.0, 7.3, 2.0])
@pytest.mark.parametrize("method", ["minmax", "mse"])
@pytest.mark.parametrize("layout", ["C", "transposed"])
def test_fused_soft_rounding_is_soft_and_reg_with_their_autograd_gradient(beta, method, layout):
    """The iterations' fused soft_and_reg gives soft() and reg(β) and the gradient autograd
    takes through them, for weights inside the grid and clipped beyond it (an MSE range clips
    the largest), h(V) inside (0, 1) and clamped at both ends, in any memory layout (GPTQ's
    starts come transposed)."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((6, 5, 3, 3)) * np.linspace(0.1, 2, 6)[:, None, None, None]).astype(
        np.float32
    )
    grid = weight_grid(w, 4, "per-channel", 0, 1, method=method)
    sw = SoftWeight(w, grid)
    v = rng.standard_normal(w.shape).astype(np.float32) * 3  # some h(V) clamped at 0 and at 1
    if layout == "transposed":  # a parameter that is a transposed view (as GPTQ's starts can be)
        v = np.ascontiguousarray(v.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    sw.v = torch.nn.Parameter(torch.from_numpy(v))
    assert sw.v.is_contiguous() == (layout == "C")
    assert (sw.h() == 0).any() and (sw.h() == 1).any()
    codes = (torch.floor(sw.floor) + sw.zp).numpy()
    if method == "mse":  # weights beyond the range: their soft value cannot move
        assert (codes < grid.fmt.qmin).any() or (codes + 1 > grid.fmt.qmax).any()
    upstream = torch.from_numpy(rng.standard_normal(w.shape).astype(np.float32))

    def run(fused: bool):
        sw.v.grad = None
        if fused:
            soft, reg = sw.soft_and_reg(beta)
        else:
            soft = sw.soft()
            reg = sw.reg(beta) if beta is not None else torch.zeros(())
        loss = (soft * upstream).sum() + 0.37 * reg
        loss.backward()
        return soft.detach().numpy(), float(reg.detach()), sw.v.grad.numpy().copy()

    ref, fused = run(False), run(True)
    np.testing.assert_allclose(fused[0], ref[0], rtol=1e-6, atol=1e-6)
    assert fused[1] == pytest.approx(ref[1], rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(fused[2], ref[2], rtol=1e-4, atol=1e-6)
    assert np.abs(ref[2]).max() > 0


def test_a_learned_scale_keeps_the_autograd_path():
    w, _ = _soft()
    sw = SoftWeight(w, weight_grid(w, 4, "per-channel", 0, 1), learn_scale=True)
    soft, reg = sw.soft_and_reg(5.0)
    (soft.sum() + reg).backward()
    assert sw.log_gain.grad is not None and sw.v.grad is not None
