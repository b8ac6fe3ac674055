"""Constant operands of quantized Add/Mul get a uint8 grid, so ORT runs QLinearAdd/QLinearMul."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.passes.emit_constants import constant_grid
from tests.conftest import optimized_op_types, run_model


@pytest.mark.parametrize("c", [np.array([0.37]), np.array([-2.5]), np.linspace(-1, 3, 7)])
def test_the_grid_holds_zero_and_a_scalar_exactly(c):
    codes, scale, zp = constant_grid(c.astype(np.float32))
    back = (codes.astype(np.float64) - zp) * scale
    assert codes.dtype == np.uint8
    assert np.abs(back - c).max() <= scale / 2 + 1e-9
    if c.size == 1:
        assert abs(back[0] - c[0]) < 1e-6 * abs(c[0])
    assert abs((0 - zp) * scale) <= scale / 2 + 1e-12 or 0 <= zp <= 255


def lab_net() -> onnx.ModelProto:
    """Conv -> Relu -> x * s + t (scalars) -> padded depthwise Conv: the scale and shift stay."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1"),
        nh.from_array(rng.normal(0, 0.4, (8, 1, 3, 3)).astype(np.float32), "w2"),
        nh.from_array(np.array([1.7], np.float32), "s"),
        nh.from_array(np.array([-0.4], np.float32), "t"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4, name="conv1"),
        h.make_node("Relu", ["c1"], ["r"], name="relu"),
        h.make_node("Mul", ["s", "r"], ["rs"], name="scale"),
        h.make_node("Add", ["rs", "t"], ["rt"], name="shift"),
        h.make_node("Conv", ["rt", "w2"], ["y"], pads=[1] * 4, group=8, name="dw"),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 8, 8, 8])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_a_scale_and_shift_before_a_padded_conv_run_on_integer_kernels(tmp_path):
    src = tmp_path / "lab.onnx"
    onnx.save(lab_net(), src)
    x = np.random.default_rng(1).normal(0, 1, (24, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "q.onnx"
    result = quantize(
        str(src), {"x": x}, str(out), QuantConfig(scheme="w8a8", progress=False, calib_size=16)
    )
    q = onnx.load(str(out))
    dq_const = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and "_const" in n.name]
    assert len(dq_const) == 2
    assert not {"s", "t"} & {t.name for t in q.graph.initializer}  # no float copy left behind
    ops = optimized_op_types(str(out))
    assert {"QLinearMul", "QLinearAdd"} <= set(ops), ops
    assert "Mul" not in ops and "Add" not in ops, ops
    ref, got = run_model(lab_net(), {"x": x[16:]})[0], run_model(q, {"x": x[16:]})[0]
    sqnr = 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum())
    assert sqnr > 25
    assert result.report["verify"]["kernels"]["summary"][0].startswith("all ")


def test_at_16_bit_activations_the_constants_stay_float(tmp_path):
    src = tmp_path / "lab.onnx"
    onnx.save(lab_net(), src)
    x = np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    result = quantize(str(src), {"x": x}, None, QuantConfig(scheme="w8a16", progress=False))
    names = [n.name for n in result.model.graph.node]
    assert not any("_const" in n for n in names)


def test_silu_runs_as_integer_sigmoid_and_mul(tmp_path):
    """Conv -> x * Sigmoid(x) -> Conv (SiLU): the Mul's inputs are quantized, so ORT runs
    QLinearSigmoid and QLinearMul, as in its own quantized models; no float Sigmoid or Mul."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1"),
        nh.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4, name="conv1"),
        h.make_node("Sigmoid", ["c1"], ["s"], name="sig"),
        h.make_node("Mul", ["c1", "s"], ["silu"], name="mul"),
        h.make_node("Conv", ["silu", "w2"], ["y"], name="conv2"),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 8, 8])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    src, out = tmp_path / "silu.onnx", tmp_path / "q.onnx"
    onnx.save(m, src)
    x = rng.normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    quantize(str(src), {"x": x}, str(out), QuantConfig(scheme="w8a8", progress=False))
    ops = optimized_op_types(str(out))
    assert {"QLinearSigmoid", "QLinearMul"} <= set(ops), ops
    assert "Sigmoid" not in ops and "Mul" not in ops, ops
