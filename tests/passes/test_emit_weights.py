"""Weight and bias emission: the integers, scales and zero points written (packed and widened
by a Cast, or read by DequantizeLinear directly), checked against ONNX Runtime running the
emitted graph, the storage report, and the int32 bias and when it is not made."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.graph import to_proto
from faaq_onnx.groups import QuantizerGraph, WeightQuantizer
from faaq_onnx.passes.emit_weights import InsertWeightDQPass, QuantizeBiasPass, storage_format
from faaq_onnx.quant.weights import quantize_weight
from tests.conftest import run_model

_R = np.random.default_rng(0)
W = _R.standard_normal((4, 3, 3, 3)).astype(np.float32)
B = _R.standard_normal(4).astype(np.float32)
X = _R.standard_normal((2, 3, 5, 5)).astype(np.float32)
XS = np.float32(0.05)


def _model(qdq_input=True, bias=True, op="Conv"):
    """x [-> Q -> DQ] -> Conv(w, b) (or Gemm on a flattened x)."""
    nodes, inits = [], [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")]
    src = "x"
    if qdq_input:
        inits += [
            numpy_helper.from_array(np.array(XS), "xs"),
            numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        ]
        src = "xd"
    ins = [src, "w", "b"] if bias else [src, "w"]
    if op == "Conv":
        nodes.append(helper.make_node("Conv", ins, ["y"], name="conv"))
    else:
        nodes.append(helper.make_node(op, ins[:2], ["y"], name="conv"))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def _qgraph(bias="b"):
    wq = WeightQuantizer("w", ["conv"], "Conv", W.shape, 0, 1, 100, bias)
    return QuantizerGraph({"w": wq}, {}, {})


def _summary():
    return SimpleNamespace(weights={}, int32_biases=[])


def _emit(qw, storage="cast", int2=False, qdq_input=True, bias=True):
    model = ir.from_proto(_model(qdq_input, bias))
    summary = _summary()
    InsertWeightDQPass(_qgraph(), {"w": qw}, {"w": qw.fmt.bits}, summary, storage, int2)(model)
    return model, summary


def _dequantized(qw):
    """(q - zero point) * scale, per output channel, computed here."""
    shape = (-1, 1, 1, 1) if qw.axis == 0 else ()
    return (qw.q.astype(np.float64) - qw.zero_point.reshape(shape)) * qw.scale.reshape(shape)


def _float_with(weight):
    m = _model()
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight.astype(np.float32), "w"))
    return run_model(m, {"x": X})[0]


@pytest.mark.parametrize(
    "bits, symmetric, storage, int2, form, container",
    [
        (4, True, "cast", False, "cast", "int4"),
        (4, False, "cast", False, "cast", "uint4"),
        (3, True, "cast", False, "cast", "int4"),
        (2, True, "cast", True, "cast", "int2"),
        (2, True, "cast", False, "cast", "int4"),
        (8, True, "cast", False, "direct", "int8"),
        (6, False, "cast", True, "direct", "uint8"),
        (4, True, "dequant", False, "dequant", "int4"),
        (8, True, "dequant", False, "direct", "int8"),
    ],
)
def test_weights_are_stored_in_their_form_and_run_as_written(
    bits, symmetric, storage, int2, form, container
):
    """The emitted model computes what the dequantized integers say; a Cast widens packed
    weights (and zero points) only in the cast form; the report states form and bytes."""
    qw = quantize_weight(W, bits, "per-channel", 0, 1, symmetric=symmetric)
    assert storage_format(qw, storage, int2)[0] == form
    model, summary = _emit(qw, storage, int2)
    proto = to_proto(model)
    inits = {t.name: t for t in proto.graph.initializer}
    assert inits["w_quantized"].data_type == getattr(TensorProto, container.upper())
    if container != "int2":  # int2 needs opset 25 and an ORT that runs it
        np.testing.assert_allclose(
            run_model(proto, {"x": X})[0], _float_with(_dequantized(qw)), rtol=1e-4, atol=1e-4
        )
    casts = [n for n in proto.graph.node if n.op_type == "Cast"]
    n_casts = (1 + bool(qw.zero_point.any())) if form == "cast" else 0
    assert len(casts) == n_casts
    assert "w" not in inits  # the float weight is gone
    rep = summary.weights["w"]
    assert (rep["storage"], rep["container"], rep["bits"], rep["type"]) == (
        form,
        container,
        bits,
        ("int" if symmetric else "uint") + str(bits),
    )
    cbits = int(container.lstrip("uint"))
    packed = -(-W.size * cbits // 8)
    zp = -(-4 * cbits // 8) if qw.zero_point.any() else 0
    assert rep["stored_bytes"] == packed + 4 * 4 + zp and rep["float_bytes"] == W.size * 4
    assert rep["container_bits"] == cbits and rep["elements"] == W.size
    assert rep["granularity"] == "per-channel" and rep["planned_bits"] == bits


def test_per_tensor_and_blocked_weights():
    qw = quantize_weight(W, 8, "per-tensor", None, None)
    model, summary = _emit(qw)
    dq = next(
        n for n in to_proto(model).graph.node if n.op_type == "DequantizeLinear" and "w_" in n.name
    )
    assert not any(a.name == "axis" for a in dq.attribute)
    assert summary.weights["w"]["granularity"] == "per-tensor"
    qw = quantize_weight(W, 4, "block", 0, 1, block_size=2, symmetric=False)
    form, fmt = storage_format(qw, "cast", True)
    assert form == "dequant" and fmt.container_bits == 4  # blocked: never cast, never int2
    model, summary = _emit(qw, "cast", True)
    dq = next(n for n in to_proto(model).graph.node if n.name == "w_DequantizeLinear")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 1, "block_size": 2}  # along K
    assert summary.weights["w"]["granularity"] == "block"


def test_int32_bias_is_bias_over_the_product_of_scales():
    """b_q = rint(b / (s_x * s_w)) in int32 behind a DequantizeLinear of scale s_x * s_w."""
    qw = quantize_weight(W, 8, "per-channel", 0, 1)
    model, summary = _emit(qw)
    assert QuantizeBiasPass(_qgraph(), {"w": qw}, summary)(model).modified
    proto = to_proto(model)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_allclose(inits["b_scale"], XS * qw.scale, rtol=1e-6)
    expected = np.rint(B.astype(np.float64) / (XS * qw.scale.astype(np.float64)))
    np.testing.assert_array_equal(inits["b_quantized"], expected.astype(np.int32))
    assert inits["b_quantized"].dtype == np.int32 and not inits["b_zero_point"].any()
    assert "b" not in inits and summary.int32_biases == ["b"]


def test_a_bias_too_large_for_int32_saturates():
    qw = quantize_weight(W, 8, "per-channel", 0, 1)
    qw.scale[0] = 1e-12  # a channel of tiny weights
    model, summary = _emit(qw)
    QuantizeBiasPass(_qgraph(), {"w": qw}, summary)(model)
    inits = {t.name: numpy_helper.to_array(t) for t in to_proto(model).graph.initializer}
    assert inits["b_quantized"][0] == (2**31 - 1 if B[0] > 0 else -(2**31))


@pytest.mark.parametrize(
    "case",
    ["asymmetric weights", "blocked", "16-bit", "no activation DQ", "no bias", "per-tensor axis"],
)
def test_no_int32_bias_where_the_kernel_would_not_take_it(case):
    kw = {"symmetric": case != "asymmetric weights"}
    if case == "blocked":
        qw = quantize_weight(W, 4, "block", 0, 1, block_size=3)
    elif case == "16-bit":
        qw = quantize_weight(W, 16, "per-channel", 0, 1)
    else:
        qw = quantize_weight(W, 8, "per-channel", 0, 1, **kw)
    if case == "per-tensor axis":
        qw = quantize_weight(W, 8, "per-channel", 1, 1)  # scales along the wrong axis
    model, summary = _emit(qw, qdq_input=case != "no activation DQ", bias=case != "no bias")
    assert not QuantizeBiasPass(_qgraph(), {"w": qw}, summary)(model).modified
    assert summary.int32_biases == []


@pytest.mark.parametrize(
    "bits, symmetric, storage, int2, form, container",
    [
        (5, True, "cast", False, "direct", "int8"),  # one bit past a 4-bit container
        (5, False, "dequant", False, "direct", "uint8"),
        (3, True, "cast", True, "cast", "int4"),  # int2 allowed, but 3 bits need 4
        (3, False, "dequant", True, "dequant", "uint4"),  # dequant form: never int2
    ],
)
def test_storage_at_the_container_boundaries(bits, symmetric, storage, int2, form, container):
    """The smallest container that holds the bits: a packed 4-bit (or 2-bit) one up to its
    width, int8 from 5 bits on, where no Cast or packing is needed."""
    test_weights_are_stored_in_their_form_and_run_as_written(
        bits, symmetric, storage, int2, form, container
    )
