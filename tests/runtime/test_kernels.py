"""kernel_report: what ORT really runs for the quantized nodes of a QDQ model."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
from faaq_onnx.runtime.kernels import (
    _summary,
    _why_float,
    compare_kernels,
    format_kernel_report,
    kernel_report,
    record_left_float,
    recorded_left_float,
)


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


# ---- compare_kernels on hand-written before/after graphs, and the text it becomes ----


def _graph(nodes, inits=()):
    g = helper.make_graph(nodes, "g", [], [], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _init(name, dtype, shape=(2,)):
    return helper.make_tensor(name, dtype, list(shape), [0] * int(np.prod(shape)))


def _n(op, ins, outs, name="", domain="", **attrs):
    return helper.make_node(op, ins, outs, name=name, domain=domain, **attrs)


def _original():
    """x -Q(uint8)-DQ-> conv (int8 weight) -Q-DQ-> ...; an int4 weight behind a Cast; an int4
    weight read by DQ directly; a Reshape of a quantized tensor; a MatMulNBits; a node that
    disappears; a weight in a Constant node quantized at load."""
    inits = [
        _init("xs", TensorProto.FLOAT, ()),
        _init("xz", TensorProto.UINT8, ()),
        _init("az", TensorProto.INT8, ()),
        _init("w8", TensorProto.INT8),
        _init("w4", TensorProto.INT4),
        _init("w4d", TensorProto.INT4),
        _init("bq", TensorProto.INT32),
        _init("nb", TensorProto.UINT8),
        _init("wz", TensorProto.INT8, ()),
    ]
    wc = helper.make_tensor("wc_value", TensorProto.FLOAT, [2], [0.5, 1.0])
    nodes = [
        _n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        _n("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        _n("QuantizeLinear", ["x", "xs", "az"], ["aq"]),
        _n("DequantizeLinear", ["aq", "xs", "az"], ["ad"]),
        _n("DequantizeLinear", ["w8", "xs"], ["w8d"]),
        _n("DequantizeLinear", ["bq", "xs"], ["bd"]),
        _n("Conv", ["xd", "w8d", "bd"], ["c1"], name="conv1"),
        _n("Cast", ["w4"], ["w4c"]),
        _n("DequantizeLinear", ["w4c", "xs"], ["w4cd"]),
        _n("Conv", ["xd", "w4cd"], ["c2"], name="conv2"),
        _n("DequantizeLinear", ["w4d", "xs"], ["w4dd"], block_size=32),
        _n("MatMul", ["ad", "w4dd"], ["m3"], name="mm3"),
        _n("Reshape", ["xd", "shape"], ["r"], name="reshape"),
        _n("MatMulNBits", ["x", "nb", "xs"], ["n5"], name="nbits", domain="com.microsoft", bits=4),
        _n("Conv", ["xd", "w8d"], ["c6"], name="gone"),
        _n("Constant", [], ["wc"], value=wc),
        _n("QuantizeLinear", ["wc", "xs", "wz"], ["wcq"]),
        _n("DequantizeLinear", ["wcq", "xs", "wz"], ["wcd"]),
        _n("Gemm", ["xd", "wcd"], ["g7"], name="gemm7"),
        _n("Relu", ["x"], ["plain"], name="plain"),
    ]
    return _graph(nodes, inits)


def _optimized():
    return _graph(
        [
            _n("QLinearConv", ["x"], ["c1"], name="conv1_token_0"),
            _n("QLinearConv", ["x"], ["c2"], name="conv2"),
            _n("DequantizeLinear", ["w4d"], ["w4dd"], name="dq"),
            _n("MatMul", ["x"], ["m3"], name="mm3/MatMulAddFusion"),
            _n("Reshape", ["x"], ["r"], name="reshape"),
            _n("MatMulNBits", ["x"], ["n5"], name="nbits", domain="com.microsoft"),
            _n("QGemm", ["x"], ["g7"], name="some_other_name", domain="com.microsoft"),
            _n("Relu", ["x"], ["plain"], name="plain"),
        ]
    )


def test_compare_kernels_names_what_runs_each_quantized_node():
    rep = compare_kernels(_original(), _optimized(), "cpu", "m.onnx")
    got = {
        q["node"]: (q["op_type"], q["weight_type"], q["activation_type"], q["runs_as"])
        for q in rep["quantized_nodes"]
    }
    assert got == {
        "conv1": ("Conv", "int8", "uint8", "QLinearConv"),  # a fused '<name>_token_N'
        "conv2": ("Conv", "int4 (cast to int8)", "uint8", "QLinearConv"),
        "mm3": ("MatMul", "int4", "int8", "MatMul"),  # 'mm3/...' is still mm3
        "nbits": ("MatMulNBits", "uint4 (packed)", None, "MatMulNBits"),
        "gone": ("Conv", "int8", "uint8", "removed by the optimizer"),
        "gemm7": ("Gemm", "int8 (quantized at load)", "uint8", "QGemm"),  # found by its output
    }
    fused = {q["node"]: q["integer_kernel"] for q in rep["quantized_nodes"]}
    assert fused == {
        "conv1": True,
        "conv2": True,
        "mm3": False,
        "nbits": True,
        "gone": False,
        "gemm7": True,
    }
    why = {q["node"]: q.get("why_float") for q in rep["quantized_nodes"]}
    assert (
        why["mm3"].startswith("blocked weight scales") and why["gone"] == "removed by the optimizer"
    )
    assert [m["node"] for m in rep["data_movement_nodes"]] == ["reshape"]
    assert rep["ops_after"]["com.microsoft.MatMulNBits"] == 1
    assert rep["integer_ops_after"] == {
        "QLinearConv": 2,
        "com.microsoft.MatMulNBits": 1,
        "com.microsoft.QGemm": 1,
    }
    assert rep["qdq_ops_after"] == {"DequantizeLinear": 1}
    assert rep["float_ops_after"] == {"MatMul": 1, "Reshape": 1, "Relu": 1}
    assert rep["weighted_ops"]["total"] == 6 and rep["weighted_ops"]["integer"] == 4
    assert [f["node"] for f in rep["weighted_ops"]["float"]] == ["mm3", "gone"]
    assert rep["summary"] == [
        "4 of 6 quantized ops on integer kernels; 2 run as float:",
        "  1 x MatMul -> MatMul: blocked weight scales: no fused integer kernel (MatMulNBits "
        "takes blocked MatMul weights)",
        "  1 x Conv -> removed by the optimizer: removed by the optimizer",
        "weighted ops (Conv, Gemm, MatMul): 4 of 6 on integer kernels",
        "1 data-movement op(s) (Reshape, Slice, Pad, ...) read quantized tensors",
        "1 DequantizeLinear and 0 QuantizeLinear nodes still run on every inference",
    ]


def test_why_float_gives_the_first_cause_that_applies():
    assert _why_float("Conv", "int8", "uint8", True, None) == "removed by the optimizer"
    assert _why_float("Conv", "int4", "int16", True, "Conv", True).startswith("16-bit activations")
    assert _why_float("Conv", "int4", "uint16", False, "Conv").startswith("16-bit activations")
    assert _why_float("Conv", "int4", "uint8", True, "Conv", True).startswith(
        "activations below 8 bits"
    )
    assert _why_float("Conv", "int4", "uint8", True, "Conv").startswith("blocked weight scales")
    for wt in ("int4", "uint4", "int2", "uint2 (x)"):
        assert _why_float("Conv", wt, "uint8", False, "Conv").startswith(
            f"DequantizeLinear({wt}) is never fused"
        )
    assert _why_float("Conv", "int4 (cast to int8)", "uint8", False, "Conv") == (
        "ORT has no integer kernel for Conv with these inputs"
    )
    assert _why_float("Reshape", None, "uint8", False, "Reshape").startswith("data movement")
    assert _why_float("Add", None, None, False, "Add") == "no quantized data input"
    assert _why_float("Add", "int8", None, False, "Add").startswith("ORT has no integer kernel")
    assert _why_float("Add", None, "uint8", False, "Add").startswith("ORT has no integer kernel")


def test_summary_when_everything_is_fused_and_nothing_is_left_behind():
    q = [{"node": "a", "op_type": "Add", "integer_kernel": True, "weighted": False}]
    assert _summary(q, {}) == ["all 1 quantized ops on integer kernels"]
    assert _summary(q, {"QuantizeLinear": 2}) == [
        "all 1 quantized ops on integer kernels",
        "0 DequantizeLinear and 2 QuantizeLinear nodes still run on every inference",
    ]
    assert _summary([], {}, 0) == ["all 0 quantized ops on integer kernels"]


def test_format_kernel_report_table_and_groups():
    rep = compare_kernels(_original(), _optimized(), "cpu", "m.onnx")
    lines = format_kernel_report(rep).splitlines()
    assert lines[0] == "kernels ORT runs for m.onnx on cpu (optimization level all)"
    assert lines[1] == "  4 of 6 quantized ops on integer kernels; 2 run as float:"
    head = lines.index(
        "  " + "op type".ljust(len("com.microsoft.MatMulNBits")) + "  before  after  kind"
    )
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[head + 1 : head + 14] if ln.strip()}
    assert rows["DequantizeLinear"] == ["7", "1", "q/dq"]
    assert rows["QuantizeLinear"] == ["3", "0", "q/dq"]
    assert rows["Conv"] == ["3", "0", "float"]
    assert rows["QLinearConv"] == ["0", "2", "int"]
    assert rows["com.microsoft.MatMulNBits"] == ["1", "1", "int"]
    order = [ln.split()[0] for ln in lines[head + 1 :] if ln.startswith("  ") and ln.split()]
    totals = [int(rows[k][0]) + int(rows[k][1]) for k in order if k in rows]
    assert order[0] == "DequantizeLinear" and totals == sorted(totals, reverse=True)  # most first
    assert "  quantized nodes of the input and what runs them:" in lines
    assert "       1 x Conv (weights int8, activations uint8) -> QLinearConv" in lines
    assert (
        "       1 x MatMulNBits (weights uint4 (packed), activations float) -> MatMulNBits" in lines
    )


@pytest.mark.parametrize("where", ["input", "output", "neither"])
def test_a_clip_next_to_the_quantizer_means_narrow_activations(where):
    """DQ <- Q <- Clip in front of the op, or op -> Clip -> Q behind it: activations below 8 bits
    (the reason it runs float); a Relu there is no such bound."""
    bound = "Relu" if where == "neither" else "Clip"
    nodes = [
        _n(bound if where == "input" else "Identity", ["x"], ["xc"]),
        _n("QuantizeLinear", ["xc", "xs", "xz"], ["xq"]),
        _n("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        _n("DequantizeLinear", ["w8", "xs"], ["wd"]),
        _n("Conv", ["xd", "wd"], ["c"], name="conv"),
        _n(bound if where != "input" else "Identity", ["c"], ["cc"]),
        _n("QuantizeLinear", ["cc", "xs", "xz"], ["cq"]),
    ]
    inits = [
        _init("xs", TensorProto.FLOAT, ()),
        _init("xz", TensorProto.UINT8, ()),
        _init("w8", TensorProto.INT8),
    ]
    optimized = _graph([_n("Conv", ["x"], ["c"], name="conv")])
    (q,) = compare_kernels(_graph(nodes, inits), optimized)["quantized_nodes"]
    narrow = q["why_float"].startswith("activations below 8 bits")
    assert narrow == (where != "neither"), q["why_float"]


def _dq_mul(quantize_output: bool) -> onnx.ModelProto:
    """y = DQ(Q(x))·DQ(Q(x)), its product quantized again or left float."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("Mul", ["xd", "xd"], ["m" if quantize_output else "y"], name="mul"),
    ]
    if quantize_output:
        nodes += [
            helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"], name="q2"),
            helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["y"], name="dq2"),
        ]
    return _model(nodes, inits, [1, 4, 8, 8], [1, 4, 8, 8], 17)


def test_a_product_left_float_says_its_output_is_not_quantized():
    float_out = kernel_report(_dq_mul(False))
    mul = next(q for q in float_out["quantized_nodes"] if q["node"] == "mul")
    assert not mul["integer_kernel"]
    assert mul["why_float"].startswith("its output is not quantized")
    fused = kernel_report(_dq_mul(True))
    mul = next(q for q in fused["quantized_nodes"] if q["node"] == "mul")
    assert mul["integer_kernel"] and mul["runs_as"] == "QLinearMul"
    assert _why_float("Mul", None, "uint8", False, "Mul", output_float=True).startswith(
        "its output"
    )


def _quantized_conv_then_float_softmax() -> onnx.ModelProto:
    """A fused QDQ Conv; a Softmax reading its DequantizeLinear, then a Sigmoid and an Add that read
    no quantized tensor, and a Shape -> Concat of int64 shapes (no quantizer could read those)."""
    m = qdq_conv(8, True)
    g = m.graph
    y = g.output[0].name
    g.node.extend(
        [
            helper.make_node("Softmax", [y], ["sm"], name="softmax", axis=1),
            helper.make_node("Sigmoid", ["sm"], ["sig"], name="sigmoid"),
            helper.make_node("Add", ["sig", "sig"], ["out"], name="add"),
            helper.make_node("Shape", ["out"], ["shp"], name="shape"),
            helper.make_node("Concat", ["shp", "shp"], ["shp2"], name="concat", axis=0),
        ]
    )
    del g.output[:]
    g.output.extend(
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("shp2", TensorProto.INT64, None),
        ]
    )
    return m


def test_ops_with_integer_kernels_left_unquantized_are_listed_with_the_quantizers_reason():
    m = _quantized_conv_then_float_softmax()
    plain = kernel_report(m)
    listed = {u["node"]: u for u in plain["unquantized_nodes"]}
    assert set(listed) == {"sigmoid", "add"}  # softmax reads a DQ; the int64 Concat is no candidate
    assert listed["sigmoid"]["runs_as"] == "Sigmoid"
    assert listed["add"]["why_float"].startswith("no quantized input")
    assert any("were not quantized" in s for s in plain["summary"])
    why = {"sigmoid": "left float by faaq: reason 1", "softmax": "left float by faaq: reason 2"}
    told = compare_kernels(m, m, left_float=why)  # only what it was told, in its words
    assert [(u["node"], u["why_float"]) for u in told["unquantized_nodes"]] == [
        ("sigmoid", why["sigmoid"])
    ]
    softmax = next(q for q in told["quantized_nodes"] if q["node"] == "softmax")
    assert softmax["why_float"] == why["softmax"]


def test_a_float_model_lists_nothing_as_left_unquantized():
    nodes = [
        helper.make_node("Softmax", ["x"], ["sm"], name="softmax", axis=1),
        helper.make_node("Add", ["sm", "sm"], ["y"], name="add"),
    ]
    report = kernel_report(_model(nodes, [], [1, 4, 8, 8], [1, 4, 8, 8], 17))
    assert report["unquantized_nodes"] == []


def test_reasons_recorded_in_the_model_are_what_inspect_reports(tmp_path):
    m = _quantized_conv_then_float_softmax()
    record_left_float(m, {"sigmoid": "left float by faaq: reason 1", "gone": "a node not in it"})
    assert recorded_left_float(m) == {"sigmoid": "left float by faaq: reason 1"}
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    listed = kernel_report(str(path))["unquantized_nodes"]
    assert [(u["node"], u["why_float"]) for u in listed] == [
        ("sigmoid", "left float by faaq: reason 1")
    ]
    record_left_float(bare := _quantized_conv_then_float_softmax(), {})
    assert recorded_left_float(bare) is None and not bare.metadata_props


def test_recording_the_reasons_again_replaces_them():
    """One faaq.left_float entry, the latest: a duplicate key fails onnx.checker."""
    m = _quantized_conv_then_float_softmax()
    record_left_float(m, {"sigmoid": "left float by faaq: first"})
    record_left_float(m, {"sigmoid": "left float by faaq: second"})
    assert [p.key for p in m.metadata_props].count("faaq.left_float") == 1
    assert recorded_left_float(m) == {"sigmoid": "left float by faaq: second"}


def test_a_tf_style_nested_name_is_not_taken_for_the_node_it_is_nested_under():
    """tf2onnx names an op's helpers under it ('net/conv/ExpandDims' before 'net/conv'): ORT
    renames the fused Conv 'net/conv_token_N', and the report must find that one, not the
    helper node whose name merely starts with 'net/conv/'."""
    m = qdq_conv(8, True)
    g = m.graph
    # a float op named under the Conv's name, before it in the graph (ORT keeps a Sigmoid)
    for n in g.node:
        if n.name == "x_Q":
            n.input[0] = "x_named"
    g.node.insert(0, helper.make_node("Sigmoid", ["x"], ["x_named"], name="net/conv/ExpandDims"))
    for n in g.node:
        if n.name == "conv":
            n.name = "net/conv"
    runs = {q["node"]: q["runs_as"] for q in kernel_report(m)["quantized_nodes"]}
    assert runs["net/conv"] == "QLinearConv"
