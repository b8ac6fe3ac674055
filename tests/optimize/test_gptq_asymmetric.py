"""GPTQ fit to the float model's output (gptq.asymmetric_target, --gptq-asymmetric)."""

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import helper

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.optimize import gptq as gptq_mod
from faaq_onnx.optimize.gptq import TARGET_ROWS_PER_INPUT, asymmetric_target
from faaq_onnx.optimize.gptq_layers import gptq_layers
from faaq_onnx.optimize.hessian import HessianSum, LinearForm, linear_form
from faaq_onnx.optimize.units import Unit
from faaq_onnx.stages.effort import fit_gptq_to_float_output
from tests.optimize.test_gptq import build_conv_model, smooth_images
from tests.optimize.test_gptq_layers import make_comp


def _inputs(rows=400, k=8, seed=0):
    """Float inputs and what a quantized model upstream feeds instead: a distorted copy."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 3)) @ rng.standard_normal((3, k))).astype(np.float32)
    x += 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    mix = np.eye(k) + 0.15 * rng.standard_normal((k, k))
    xq = (x @ mix + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
    return x, xq


def test_the_cross_product_is_taken_over_the_same_patches():
    rng = np.random.default_rng(1)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=2)
    form = linear_form(node, 1, (4, 2, 3, 3))
    x = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
    xf = rng.standard_normal(x.shape).astype(np.float32)
    exact = HessianSum(form)
    exact.add(x, xf)
    want = np.matmul(form.patches(x).transpose(0, 2, 1), form.patches(xf)).astype(np.float64)
    np.testing.assert_allclose(exact.cross, want, rtol=1e-5, atol=1e-4)
    # sampled patches: the float ones come from the positions the quantized ones were drawn at
    x = rng.standard_normal((8, 4, 24, 24)).astype(np.float32)  # 4,608 patches
    capped = HessianSum(form, rows_per_k=1)
    capped.add(x, 3 * x)
    assert capped.rows < 8 * 24 * 24  # a draw of them
    np.testing.assert_allclose(capped.cross, 3 * capped.sum, rtol=1e-4, atol=1e-3)
    plain = HessianSum(form, rows_per_k=1)
    plain.add(x)  # the same draw without the float tensor: the same sum, no cross product
    np.testing.assert_allclose(plain.sum, capped.sum)
    assert plain.cross is None


def test_the_target_is_the_float_weight_when_the_inputs_agree():
    x, _ = _inputs()
    form = LinearForm("MatMul", (8, 5))
    w = np.random.default_rng(2).standard_normal((8, 5))
    hs = HessianSum(form)
    hs.add(x, x)
    np.testing.assert_allclose(asymmetric_target(form, w, hs), w, atol=1e-9)


def test_the_target_reproduces_the_float_output_from_the_quantized_inputs():
    x, xq = _inputs()
    form = LinearForm("MatMul", (8, 5))
    w = np.random.default_rng(3).standard_normal((8, 5))
    hs = HessianSum(form)
    hs.add(xq, x)
    target = asymmetric_target(form, w, hs, damp=1e-6)
    lstsq = np.linalg.lstsq(xq.astype(np.float64), x.astype(np.float64) @ w, rcond=None)[0]
    np.testing.assert_allclose(target, lstsq, rtol=1e-3, atol=1e-3)
    err = lambda v: np.mean((xq @ v - x @ w) ** 2)  # noqa: E731
    assert err(target) < 0.2 * err(w)
    # the ridge pulls towards the float weight: more damping, nearer w
    far = np.abs(asymmetric_target(form, w, hs, damp=1e-6) - w).sum()
    assert np.abs(asymmetric_target(form, w, hs, damp=10.0) - w).sum() < 0.5 * far


def test_no_target_without_a_cross_product_or_with_too_few_rows():
    x, xq = _inputs(rows=TARGET_ROWS_PER_INPUT * 8 - 1)
    form = LinearForm("MatMul", (8, 5))
    w = np.ones((8, 5))
    few = HessianSum(form)
    few.add(xq, x)
    assert asymmetric_target(form, w, few) is None  # 31 rows for K = 8: a fit would be overfit
    few.add(xq[:1], x[:1])
    assert asymmetric_target(form, w, few) is not None
    alone = HessianSum(form)
    alone.add(xq)
    assert asymmetric_target(form, w, alone) is None


def test_a_group_with_zero_inputs_keeps_its_weights():
    """A depthwise channel that never fires: nothing to fit, and nothing singular."""
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2)
    form = linear_form(node, 1, (2, 1, 1, 1))
    x = np.random.default_rng(4).standard_normal((64, 2, 4, 4)).astype(np.float32)
    x[:, 1] = 0
    hs = HessianSum(form)
    hs.add(x, 1.5 * x)
    target = asymmetric_target(form, np.array([1.0, 2.0]).reshape(2, 1, 1, 1), hs, damp=1e-6)
    np.testing.assert_allclose(target.ravel(), [1.5, 2.0], rtol=1e-4)


class _Both:
    """Layer inputs as the quantized model feeds them, and the float model's."""

    def __init__(self, xq, x):
        self.xq, self.x = xq, x

    def sequential_inputs(self, choices, mode):
        def layer_input(name, lazy=False):
            return self.xq

        layer_input.run = None
        return layer_input

    def float_run(self):
        return SimpleNamespace(get=lambda name, lazy=False: self.x)


def _round(asymmetric: bool, rows: int = 400):
    x, xq = _inputs(rows=rows)
    w = np.random.default_rng(5).standard_normal((8, 5))
    comp = make_comp([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], {"w": w}, {"w": 1})
    comp.config.gptq_asymmetric = asymmetric
    unit = Unit("unit0", ["mm"], ["x"], "y", ["w"])
    plan = SimpleNamespace(choices={})
    (rep,), _, _ = gptq_layers(comp, [unit], _Both(xq, x), plan, {"w": 4}, "quantized")
    deq = comp.weights.stored["w"][1].dequantized().astype(np.float64)
    return rep, float(np.mean((xq @ deq - x @ w) ** 2))


def test_asymmetric_gptq_is_nearer_the_float_output():
    sym, sym_err = _round(False)
    asym, asym_err = _round(True)
    assert "asymmetric" not in sym and asym["asymmetric"] == [True]
    assert asym_err < 0.5 * sym_err
    # its report measures both roundings against the weights it fit
    assert asym["mse"] < asym["mse_nearest"]


def test_a_layer_with_too_few_rows_is_rounded_as_plain_gptq():
    rep, err = _round(True, rows=TARGET_ROWS_PER_INPUT * 8 - 1)
    _, plain = _round(False, rows=TARGET_ROWS_PER_INPUT * 8 - 1)
    assert rep["asymmetric"] == [False]
    assert err == pytest.approx(plain)


def test_it_reaches_gptq_only_when_asked(monkeypatch):
    seen = []
    real = gptq_mod.asymmetric_target

    def spy(form, w, hsum, damp=gptq_mod.TARGET_DAMP):
        seen.append(hsum.compares_float)
        return real(form, w, hsum, damp)

    monkeypatch.setattr(gptq_mod, "asymmetric_target", spy)
    _round(True)
    _round(False)
    assert seen == [True, False]


def test_unset_it_is_on_for_a_scheme_and_off_for_a_budgets_candidates():
    assert QuantConfig().gptq_asymmetric is None
    # a budget leaves it unset: off for its candidates, on for the re-round of its plan
    for budget, want in ((None, True), ("avg-bits=4", None)):
        config = QuantConfig()
        fit_gptq_to_float_output(config, budget)
        assert config.gptq_asymmetric is want
    for asked in (True, False):  # what the user said stays
        config = QuantConfig(gptq_asymmetric=asked)
        fit_gptq_to_float_output(config, "avg-bits=4")
        assert config.gptq_asymmetric is asked


@pytest.fixture
def conv_model(tmp_path):
    path = tmp_path / "tiny_convs.onnx"
    onnx.save(build_conv_model(), str(path))
    return str(path)


def test_through_quantize(conv_model):
    """The plain W4A8 command fits its layers to the float output; a budget's candidates are
    plain GPTQ unless asked, and the allocated plan's own pass (the re-round, the weights that
    ship) fits them unless --no-gptq-asymmetric."""
    calib = {"input": smooth_images(64)}
    res = quantize(
        conv_model, calib, None, QuantConfig(progress=False, scheme="w4a8", optimize="auto")
    )
    units = res.report["optimization"]["rounding"]["w4a8"]["units"]
    assert all(u["asymmetric"] == [True] for u in units if u["op"] == "Conv"), units
    assert all("asymmetric" in u for u in units)
    for asked, has, own in ((None, False, True), (True, True, True), (False, False, False)):
        config = QuantConfig(progress=False, optimize="auto", gptq_asymmetric=asked)
        res = quantize(
            conv_model,
            calib,
            None,
            config,
            budget="avg-bits=6",
            candidates="w4a8,w8a8",
            cache_dir=False,
        )
        passes = res.report["optimization"]["rounding"]
        assert all(("asymmetric" in u) is has for u in passes["w4a8"]["units"]), passes
        assert passes["emitted plan"]["units"]  # avg-bits=6 mixes W4 and W8
        assert all(("asymmetric" in u) is own for u in passes["emitted plan"]["units"]), passes
        assert config.gptq_asymmetric is asked  # as the user left it


def test_the_float_gap_summed_with_the_weights_equals_the_one_from_the_cross_product():
    """A 3x3 conv's K = 9 · C inputs: Σ x (x_float - x)ᵀ W is summed directly (N < K / 2), and
    gives what the K x K cross product gives, so the target is the same."""
    rng = np.random.default_rng(5)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    form = linear_form(node, 1, (3, 4, 3, 3))  # K = 36, N = 3
    w = rng.standard_normal((3, 4, 3, 3))
    wg = form.to_gkn(w)
    x = rng.standard_normal((6, 4, 8, 8)).astype(np.float32)
    xq = (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    direct = HessianSum(form, rows_per_k=4, weight=wg.astype(np.float32))
    via_cross = HessianSum(form, rows_per_k=4)
    for part in (slice(0, 3), slice(3, 6)):
        direct.add(xq[part], x[part])
        via_cross.add(xq[part], x[part])
    assert direct.cross is None and via_cross.cross is not None  # the K x K product not summed
    assert direct.compares_float and via_cross.compares_float
    np.testing.assert_allclose(direct.float_gap(wg), via_cross.float_gap(wg), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(
        asymmetric_target(form, w, direct), asymmetric_target(form, w, via_cross), rtol=1e-4
    )
    pointwise = linear_form(helper.make_node("Conv", ["x", "w"], ["y"]), 1, (8, 4, 1, 1))
    wide = HessianSum(pointwise, weight=np.ones((1, 4, 8), np.float32))  # N >= K / 2
    wide.add(xq, x)
    assert wide.cross is not None  # the cheaper of the two there
