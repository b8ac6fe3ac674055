"""kernel_report: what ORT really runs for the quantized nodes of a QDQ model."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
from faaq_onnx.runtime.kernels import format_kernel_report, kernel_report


def _model(nodes, inits, x_shape, y_shape, opset):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def qdq_conv(weight_bits: int, act_qdq: bool, c: int = 8, cast: bool = False) -> onnx.ModelProto:
    """Conv with per-channel int8 or int4 weights; activations Q/DQ'd to uint8 or left float.

    `cast`: the int4 weight is widened by Cast(to=INT8) before an int8 DequantizeLinear."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    qmax = 2 ** (weight_bits - 1) - 1
    s_w = (np.abs(w).reshape(c, -1).max(1) / qmax).astype(np.float32)
    dtype = np.int8 if weight_bits == 8 else ml_dtypes.int4
    q_w = np.clip(np.rint(w / s_w[:, None, None, None]), -qmax, qmax).astype(dtype)
    inits = [
        numpy_helper.from_array(q_w, "w_packed" if cast else "w_q"),
        numpy_helper.from_array(s_w, "w_s"),
        numpy_helper.from_array(np.zeros(c, np.int8 if cast else dtype), "w_z"),
    ]
    nodes = (
        [helper.make_node("Cast", ["w_packed"], ["w_q"], to=TensorProto.INT8, name="w_Cast")]
        if cast
        else []
    )
    nodes += [
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="w_DQ", axis=0)
    ]
    a, out = "x", "y"
    if act_qdq:
        inits += [
            numpy_helper.from_array(np.array(0.02, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
            numpy_helper.from_array(np.array(0.1, np.float32), "s2"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_Q"),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="x_DQ"),
        ]
        a, out = "xdq", "h"
    nodes.append(helper.make_node("Conv", [a, "w"], [out], name="conv", pads=[1, 1, 1, 1]))
    if act_qdq:
        nodes += [
            helper.make_node("QuantizeLinear", ["h", "s2", "z"], ["hq"], name="h_Q"),
            helper.make_node("DequantizeLinear", ["hq", "s2", "z"], ["y"], name="h_DQ"),
        ]
    shape = ["N", c, 8, 8]
    return _model(nodes, inits, shape, shape, 21 if weight_bits == 4 else 13)


def blocked_int4_matmul(k=64, n=32, block=32) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    q = rng.integers(-8, 8, size=(k, n)).astype(ml_dtypes.int4)
    s = rng.uniform(0.01, 0.1, size=(k // block, n)).astype(np.float32)
    nodes = [
        helper.make_node(
            "DequantizeLinear", ["q", "s"], ["w"], name="w_DQ", axis=0, block_size=block
        ),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    return _model(
        nodes,
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(s, "s")],
        ["N", k],
        ["N", n],
        21,
    )


def test_int8_qdq_conv_fuses_into_qlinearconv(tmp_path):
    p = tmp_path / "w8a8.onnx"
    onnx.save(qdq_conv(8, act_qdq=True), str(p))
    rep = kernel_report(str(p))
    (conv,) = rep["quantized_nodes"]
    assert conv == {
        "node": "conv",
        "op_type": "Conv",
        "weight_type": "int8",
        "activation_type": "uint8",
        "runs_as": "QLinearConv",
        "integer_kernel": True,
        "weighted": True,
    }
    assert rep["ops_before"]["Conv"] == 1 and rep["ops_before"]["DequantizeLinear"] == 3
    assert rep["integer_ops_after"] == {"com.microsoft.QLinearConv": 1}
    assert "Conv" not in rep["ops_after"]
    assert rep["summary"][0] == "all 1 quantized ops on integer kernels"


def test_int4_cast_form_runs_on_qlinearconv():
    rep = kernel_report(qdq_conv(4, act_qdq=True, cast=True))
    (conv,) = rep["quantized_nodes"]
    assert conv["weight_type"] == "int4 (cast to int8)" and conv["runs_as"] == "QLinearConv"
    assert conv["integer_kernel"] and "why_float" not in conv
    assert rep["summary"][0] == "all 1 quantized ops on integer kernels"
    assert "Cast" not in rep["ops_after"]


def test_int4_dq_form_names_why_it_runs_float():
    rep = kernel_report(qdq_conv(4, act_qdq=True))
    (conv,) = rep["quantized_nodes"]
    assert not conv["integer_kernel"] and "never fused" in conv["why_float"]
    assert rep["summary"][0] == "0 of 1 quantized ops on integer kernels; 1 run as float:"
    assert "--weight-storage cast" in rep["summary"][1]


def test_int4_conv_weights_run_as_float():
    rep = kernel_report(qdq_conv(4, act_qdq=False))
    (conv,) = rep["quantized_nodes"]
    assert conv["weight_type"] == "int4" and conv["activation_type"] is None
    assert conv["runs_as"] == "Conv" and conv["integer_kernel"] is False
    assert rep["integer_ops_after"] == {}
    assert any(line.startswith("  1 x Conv -> Conv:") for line in rep["summary"])
    # the weight is dequantized on every run: ORT keeps the DequantizeLinear
    assert rep["qdq_ops_after"].get("DequantizeLinear", 0) >= 1
    text = format_kernel_report(rep)
    assert "Conv (weights int4, activations float) -> Conv" in text


def test_blocked_int4_matmul_is_fused_by_ort_and_by_our_pass():
    qdq = blocked_int4_matmul()
    rep = kernel_report(qdq)
    (mm,) = rep["quantized_nodes"]
    # ORT's own DQ -> MatMul fusion (CPU EP, opt level all) produces MatMulNBits
    assert mm["runs_as"] == "MatMulNBits" and mm["integer_kernel"]
    converted, names = convert_to_matmulnbits(qdq)
    assert names == ["mm"]
    rep2 = kernel_report(converted)
    assert rep2["ops_before"] == {"com.microsoft.MatMulNBits": 1}
    assert rep2["ops_after"] == {"com.microsoft.MatMulNBits": 1}
    assert rep2["quantized_nodes"] == [
        {
            "node": "mm",
            "op_type": "MatMulNBits",
            "weight_type": "uint4 (packed)",
            "activation_type": None,
            "runs_as": "MatMulNBits",
            "integer_kernel": True,
            "weighted": True,
        }
    ]
    assert rep2["summary"][0] == "all 1 quantized ops on integer kernels"


def test_missing_or_broken_model_is_a_faaq_error(tmp_path):
    with pytest.raises(FaaqError, match="not found"):
        kernel_report(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(FaaqError):
        kernel_report(bad)
