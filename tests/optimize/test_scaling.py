"""SmoothQuant and AWQ keep the float function and move what they should where they should."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.graph import to_proto
from faaq_onnx.optimize.scaling import (
    apply_scales,
    awq_scales,
    find_sites,
    smoothquant_scales,
    weight_kn,
)
from faaq_onnx.pipeline import Compilation
from tests.conftest import _save, run_model


def _outlier_mlp(tmp_path):
    """LayerNorm -> two MatMuls reading it (a site), with two outlier input channels."""
    rng = np.random.default_rng(0)
    k = 32
    gamma = np.ones(k, np.float32)
    gamma[[3, 17]] = 30.0  # outlier channels, as in transformer activations
    inits = [
        numpy_helper.from_array(gamma, "ln.g"),
        numpy_helper.from_array(np.zeros(k, np.float32), "ln.b"),
        numpy_helper.from_array(rng.normal(0, 0.2, (k, 16)).astype(np.float32), "wq"),
        numpy_helper.from_array(rng.normal(0, 0.2, (k, 16)).astype(np.float32), "wk"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.g", "ln.b"], ["h"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["h", "wq"], ["q"], name="mq"),
        helper.make_node("MatMul", ["h", "wk"], ["kk"], name="mk"),
        helper.make_node("Add", ["q", "kk"], ["y"], name="add"),
    ]
    g = helper.make_graph(
        nodes,
        "site",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        inits,
    )
    return _save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ln_mlp.onnx"
    )


@pytest.mark.parametrize("mode", ["smoothquant", "awq"])
def test_scaling_keeps_the_float_function_and_folds_into_layernorm(tmp_path, mode):
    path = _outlier_mlp(tmp_path)
    x = {"x": np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)}
    comp = Compilation(
        path, x, QuantConfig(progress=False, scheme="w4", optimize=mode), target_opset=21
    )
    site = comp.scaling["sites"][0]
    assert (
        sorted(site["nodes"]) == ["mk", "mq"] and site["fold"] == "folded into LayerNormalization"
    )
    assert comp.scaling["mode"] == mode
    assert comp.scaling["alpha"] == (0.5 if mode == "smoothquant" else None)
    assert site["tensor"] == "h" and site["scale_range"][0] <= site["scale_range"][1]
    if mode == "smoothquant":
        assert site["alpha"] == 0.5
    else:
        assert site["alpha"] in [k / 20 for k in range(20)]
    np.testing.assert_allclose(
        run_model(comp.float_proto, x)[0], run_model(path, x)[0], rtol=1e-4, atol=1e-4
    )


def test_smoothquant_improves_w8a8_on_outliers(tmp_path):
    path = _outlier_mlp(tmp_path)
    x = {"x": np.random.default_rng(1).standard_normal((96, 32)).astype(np.float32)}
    plain = quantize(path, x, config=QuantConfig(progress=False, calib_size=64, act_range="minmax"))
    smooth = quantize(
        path,
        x,
        config=QuantConfig(
            progress=False, calib_size=64, act_range="minmax", optimize="smoothquant"
        ),
    )
    assert (
        smooth.report["verify"]["outputs"]["y"]["sqnr_db"]
        > plain.report["verify"]["outputs"]["y"]["sqnr_db"] + 3
    )


def test_awq_improves_weight_only_w3(tmp_path):
    path = _outlier_mlp(tmp_path)
    x = {"x": np.random.default_rng(1).standard_normal((96, 32)).astype(np.float32)}
    cfg = dict(progress=False, calib_size=64, scheme="w3", weight_granularity="per-channel")
    plain = quantize(path, x, config=QuantConfig(**cfg))
    awq = quantize(path, x, config=QuantConfig(optimize="awq", **cfg))
    assert (
        awq.report["verify"]["outputs"]["y"]["sqnr_db"]
        > plain.report["verify"]["outputs"]["y"]["sqnr_db"]
    )


# ---- the formulas and the rewrite, unit by unit ----


def test_smoothquant_scales_follow_the_paper_with_floors_and_clamps():
    """s = max|x|^a / max|W|^(1-a); both maxima floored at 1e-5, s clamped to [1e-4, 1e4]."""
    x = np.array([4.0, 1e-7, 9.0, 1e9, 1e-9])
    w = np.array([1.0, 0.25, 1e-7, 1e-9, 1e3])
    s = smoothquant_scales(x, w, 0.5)
    expected = [2.0, np.sqrt(1e-5) / 0.5, 3.0 / np.sqrt(1e-5), 1e4, np.sqrt(1e-5) / np.sqrt(1e3)]
    np.testing.assert_allclose(s, np.clip(expected, 1e-4, 1e4), rtol=1e-12)
    assert s[3] == 1e4 and s[4] == pytest.approx(1e-4)
    np.testing.assert_allclose(smoothquant_scales(x[:1], w[:1] * 8, 0.75), [4**0.75 / 8**0.25])


def test_awq_scales_are_centred_powers_of_the_mean_magnitude():
    """s = mean|x|^alpha, divided by sqrt(max * min) so it centres on 1; alpha from the grid
    k/20; a lossless quantizer leaves nothing to gain, so alpha 0 (s = 1) is kept."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)) * np.array([0.1, 1, 1, 1, 5, 20])
    ws = [rng.standard_normal((6, 4)), rng.standard_normal((6, 3))]
    s, alpha = awq_scales(x, ws, lambda w: w)
    assert alpha == 0.0 and np.allclose(s, 1.0)

    def coarse(w):  # a 2-bit-ish grid per tensor
        step = np.abs(w).max() / 2
        return np.round(w / step) * step

    s, alpha = awq_scales(x, ws, coarse)
    assert alpha in [k / 20 for k in range(20)] and alpha > 0
    m = np.abs(x).mean(0)
    expected = m**alpha / np.sqrt((m**alpha).max() * (m**alpha).min())
    np.testing.assert_allclose(s, expected, rtol=1e-12)

    def err(scale):
        return sum(np.mean(((x / scale) @ coarse(w * scale[:, None]) - x @ w) ** 2) for w in ws)

    assert err(s) <= err(np.ones(6))  # no worse than no scaling (alpha 0)


def _ir_model(nodes, inits, x_shape=(2, 4), outputs=("y",), x_name="x"):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def _w(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_find_sites_groups_readers_and_skips_what_cannot_be_scaled():
    """One site per activation read by quantized MatMul/Gemm weights; K from the weight (transB:
    its columns); transA Gemms, unquantized weights and constant inputs are not sites."""
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["y1"], name="m1"),
        helper.make_node("Gemm", ["x", "bt"], ["y2"], name="g2", transB=1),
        helper.make_node("Gemm", ["x2", "c"], ["y3"], name="g3", transA=1),
        helper.make_node("Relu", ["x"], ["x2"], name="r"),
        helper.make_node("MatMul", ["x2", "f"], ["y4"], name="m4"),
        helper.make_node("MatMul", ["k", "a"], ["y5"], name="m5"),
        helper.make_node("Gemm", ["x2", "d"], ["y6"], name="g6"),
        helper.make_node("Gemm", ["x", "e"], ["x3"], name="g7", transB=1),
        helper.make_node("Gemm", ["x3", "e2"], ["y7"], name="g8", transB=1),
    ]
    inits = {
        "a": _w(4, 3),
        "bt": _w(5, 4),
        "c": _w(2, 3),
        "f": _w(4, 2),
        "k": _w(2, 4),
        "d": _w(4, 2),
        "e": _w(3, 4),
        "e2": _w(5, 3),
    }
    model = ir.from_proto(
        _ir_model(nodes, inits, outputs=("y1", "y2", "y3", "y4", "y5", "y6", "y7"))
    )
    sites = find_sites(model, {"a", "bt", "c", "d", "e", "e2"})
    got = {s.tensor: ([n.name for n in s.nodes], s.k) for s in sites}
    assert got == {"x": (["m1", "g2", "g7"], 4), "x2": (["g6"], 4), "x3": (["g8"], 3)}
    n = {nd.name: nd for nd in model.graph}
    np.testing.assert_array_equal(weight_kn(n["g2"]), inits["bt"].T)
    np.testing.assert_array_equal(weight_kn(n["m1"]), inits["a"])


def _apply(nodes, inits, weights, x_shape=(3, 4), outputs=("y",)):
    """(how it was folded, op types after): the float function must not change."""
    proto = _ir_model(nodes, inits, x_shape, outputs)
    feeds = {"x": np.random.default_rng(9).standard_normal(x_shape).astype(np.float32)}
    before = run_model(proto, feeds)
    model = ir.from_proto(proto)
    (site,) = find_sites(model, weights)
    s = np.array([0.5, 2.0, 4.0, 0.25])
    how = apply_scales(model, site, s)
    after_proto = to_proto(model)
    for a, b in zip(run_model(after_proto, feeds), before):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    arrays = {t.name: numpy_helper.to_array(t) for t in after_proto.graph.initializer}
    return how, [nd.op_type for nd in after_proto.graph.node], arrays, s


def test_weights_are_scaled_per_input_channel_and_the_inverse_folds_into_a_mul():
    """diag(s) W for MatMul, W diag(s) for a transB Gemm; 1/s folds into the constant Mul."""
    nodes = [
        helper.make_node("Mul", ["x", "g"], ["h"], name="mul"),
        helper.make_node("MatMul", ["h", "a"], ["y1"], name="m"),
        helper.make_node("Gemm", ["h", "bt"], ["y2"], name="gt", transB=1),
        helper.make_node("Add", ["y1", "y2"], ["y"]),
    ]
    inits = {"g": _w(4, seed=1), "a": _w(4, 3), "bt": _w(3, 4, seed=2)}
    how, ops, arrays, s = _apply(nodes, inits, {"a", "bt"})
    assert how == "folded into Mul" and ops == ["Mul", "MatMul", "Gemm", "Add"]
    np.testing.assert_allclose(arrays["a"], inits["a"] * s[:, None], rtol=1e-6)
    np.testing.assert_allclose(arrays["bt"], inits["bt"] * s[None, :], rtol=1e-6)
    np.testing.assert_allclose(arrays["g"], inits["g"] / s, rtol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_the_inverse_folds_into_layernorm_scale_and_bias(bias):
    ln_in = ["x", "ln.g", "ln.b"] if bias else ["x", "ln.g"]
    nodes = [
        helper.make_node("LayerNormalization", ln_in, ["h"], axis=-1),
        helper.make_node("MatMul", ["h", "a"], ["y"]),
    ]
    inits = {"ln.g": _w(4, seed=3), "a": _w(4, 3)}
    if bias:
        inits["ln.b"] = _w(4, seed=4)
    how, ops, arrays, s = _apply(nodes, inits, {"a"})
    assert how == "folded into LayerNormalization" and ops == ["LayerNormalization", "MatMul"]
    np.testing.assert_allclose(arrays["ln.g"], inits["ln.g"] / s, rtol=1e-6)
    if bias:
        np.testing.assert_allclose(arrays["ln.b"], inits["ln.b"] / s, rtol=1e-6)


@pytest.mark.parametrize(
    "case",
    [
        "graph input",
        "read by another op",
        "graph output",
        "shared Mul constant",
        "Mul by a scalar",
        "Relu",
    ],
)
def test_a_mul_is_inserted_where_nothing_can_take_the_inverse(case):
    """1/s becomes its own Mul when x is a graph input or output, is read by other ops, or its
    producer has no per-channel constant of its own to take it."""
    mm = helper.make_node("MatMul", ["h", "a"], ["y"])
    inits = {"a": _w(4, 3)}
    outputs = ("y",)
    if case == "graph input":
        nodes = [helper.make_node("MatMul", ["x", "a"], ["y"])]
    elif case == "read by another op":
        nodes = [
            helper.make_node("Mul", ["x", "g"], ["h"]),
            mm,
            helper.make_node("ReduceSum", ["h"], ["z"]),
        ]
        inits["g"] = _w(4, seed=1)
        outputs = ("y", "z")
    elif case == "graph output":
        nodes = [helper.make_node("Mul", ["x", "g"], ["h"]), mm]
        inits["g"] = _w(4, seed=1)
        outputs = ("y", "h")
    elif case == "shared Mul constant":
        nodes = [
            helper.make_node("Mul", ["x", "g"], ["h"]),
            mm,
            helper.make_node("Mul", ["y", "g2"], ["z"]),
            helper.make_node("Mul", ["x", "g"], ["z2"]),
        ]
        inits |= {"g": _w(4, seed=1), "g2": _w(3, seed=2)}
        outputs = ("y", "z", "z2")
    elif case == "Mul by a scalar":
        nodes = [helper.make_node("Mul", ["x", "g"], ["h"]), mm]
        inits["g"] = np.array([1.5], np.float32)
    else:
        nodes = [helper.make_node("Relu", ["x"], ["h"]), mm]
    how, ops, arrays, s = _apply(nodes, inits, {"a"}, outputs=outputs)
    assert how == "Mul inserted" and ops.count("Mul") == sum(n.op_type == "Mul" for n in nodes) + 1
    inv = next(v for k, v in arrays.items() if k.endswith("_smooth_inv"))
    np.testing.assert_allclose(inv, 1 / s, rtol=1e-6)


def test_awq_keeps_no_scaling_when_every_alpha_ties():
    """When no alpha lowers the error (here every weight quantizes to zero, so every alpha
    leaves the whole output as error), the first grid point, alpha 0 (s = 1), is kept."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 5)) * np.array([0.1, 1, 2, 5, 20])
    ws = [rng.standard_normal((5, 3))]
    s, alpha = awq_scales(x, ws, lambda w: np.zeros_like(w))
    assert alpha == 0.0
    np.testing.assert_array_equal(s, np.ones(5))
