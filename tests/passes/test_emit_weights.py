"""Weight and bias emission: the integers, scales and zero points written (packed and widened
by a Cast, or read by DequantizeLinear directly), checked against ONNX Runtime running the
emitted graph, the storage report, and the int32 bias and when it is not made."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.graph import through_cast, to_proto
from faaq_onnx.groups import QuantizerGraph, WeightQuantizer
from faaq_onnx.passes.emit_weights import InsertWeightDQPass, QuantizeBiasPass, storage_format
from faaq_onnx.quant.weights import quantize_weight
from tests.conftest import optimized_op_types, run_model

_R = np.random.default_rng(0)
W = _R.standard_normal((4, 3, 3, 3)).astype(np.float32)
B = _R.standard_normal(4).astype(np.float32)
X = _R.standard_normal((2, 3, 5, 5)).astype(np.float32)
XS = np.float32(0.05)


def _model(qdq_input=True, bias=True, op="Conv", qdq_output=False):
    """x [-> Q -> DQ] -> Conv(w, b) (or Gemm on a flattened x) [-> Q -> DQ]."""
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
    if qdq_output:
        nodes[-1].output[0] = "c"
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "ys")]
        nodes += [
            helper.make_node("QuantizeLinear", ["c", "ys", "xz"], ["cq"]),
            helper.make_node("DequantizeLinear", ["cq", "ys", "xz"], ["y"]),
        ]
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


@pytest.mark.parametrize(
    "bits, symmetric, storage, int2, qdq_input, form, container",
    [
        (4, True, "cast", False, True, "cast", "int4"),
        (4, False, "cast", False, False, "cast", "uint4"),
        (4, False, "cast", False, True, "cast+offset", "int4"),
        (3, True, "cast", False, True, "cast", "int4"),
        (2, True, "cast", True, True, "cast", "int2"),
        (2, True, "cast", False, True, "cast", "int4"),
        (2, False, "cast", True, True, "cast+offset", "int2"),
        (8, True, "cast", False, True, "direct", "int8"),
        (6, False, "cast", True, False, "direct", "uint8"),
        (6, False, "cast", True, True, "direct+offset", "int8"),
        (8, False, "cast", False, True, "direct", "uint8"),
        (4, True, "dequant", False, True, "dequant", "int4"),
        (4, False, "dequant", False, True, "dequant", "uint4"),
        (8, True, "dequant", False, True, "direct", "int8"),
    ],
)
def test_weights_are_stored_in_their_form_and_run_as_written(
    bits, symmetric, storage, int2, qdq_input, form, container
):
    """The emitted model computes what the dequantized integers say; a Cast widens packed
    weights (and zero points) only in the cast form; an asymmetric weight below 8 bits that
    feeds an integer kernel is written with zero point 0 (its codes q - z, packed as signed
    codes plus an int8 offset per channel); the report states form and bytes."""
    qw = quantize_weight(W, bits, "per-channel", 0, 1, symmetric=symmetric)
    assert storage_format(qw, storage, int2)[0] == form.removesuffix("+offset")
    model, summary = _emit(qw, storage, int2, qdq_input)
    proto = to_proto(model)
    inits = {t.name: t for t in proto.graph.initializer}
    assert inits["w_quantized"].data_type == getattr(TensorProto, container.upper())
    if container != "int2":  # int2 needs opset 25 and an ORT that runs it
        m = _model(qdq_input)
        m.graph.initializer[0].CopyFrom(
            numpy_helper.from_array(_dequantized(qw).astype(np.float32), "w")
        )
        np.testing.assert_allclose(
            run_model(proto, {"x": X})[0], run_model(m, {"x": X})[0], rtol=1e-4, atol=1e-4
        )
    casts = [n for n in proto.graph.node if n.op_type == "Cast"]
    n_casts = (1 + bool(qw.zero_point.any())) if form == "cast" else int(form == "cast+offset")
    assert len(casts) == n_casts
    dq = next(n for n in proto.graph.node if n.name == "w_DequantizeLinear")
    zp_name = through_cast(dq.input[2], {o: n for n in proto.graph.node for o in n.output}, inits)[
        0
    ]
    zp = numpy_helper.to_array(inits[zp_name])
    assert zp.astype(np.int64).any() == (not symmetric and not form.endswith("+offset"))
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
    zp = {"cast+offset": 4, "direct+offset": 0}.get(form, zp)  # int8 offsets; none
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


@pytest.mark.parametrize("bits", [4, 6])
def test_asymmetric_low_bit_weights_run_on_the_symmetric_integer_kernel(bits):
    """Offset form: zero point 0 and an int32 bias, so ORT fuses QLinearConv with no weight zero
    point (its fast path) and folds the Cast and Add away; outputs as the integers say."""
    qw = quantize_weight(W, bits, "per-channel", 0, 1, symmetric=False)
    model = ir.from_proto(_model(qdq_output=True))
    summary = _summary()
    InsertWeightDQPass(_qgraph(), {"w": qw}, {"w": bits}, summary)(model)
    assert QuantizeBiasPass(_qgraph(), {"w": qw}, summary)(model).modified
    proto = to_proto(model)
    ops = optimized_op_types(proto)
    assert "QLinearConv" in ops and "Add" not in ops and "Cast" not in ops
    m = _model(qdq_output=True)
    m.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(_dequantized(qw).astype(np.float32), "w")
    )
    # one output step apart at most: the int32 bias and the integer kernel's rounding
    np.testing.assert_allclose(
        run_model(proto, {"x": X})[0], run_model(m, {"x": X})[0], atol=0.1001
    )


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
        (5, False, "dequant", False, "direct+offset", "int8"),
        (3, True, "cast", True, "cast", "int4"),  # int2 allowed, but 3 bits need 4
        (3, False, "dequant", True, "dequant", "uint4"),  # dequant form: never int2
    ],
)
def test_storage_at_the_container_boundaries(bits, symmetric, storage, int2, form, container):
    """The smallest container that holds the bits: a packed 4-bit (or 2-bit) one up to its
    width, int8 from 5 bits on, where no Cast or packing is needed."""
    test_weights_are_stored_in_their_form_and_run_as_written(
        bits, symmetric, storage, int2, True, form, container
    )


def test_int32_bias_saturates_at_both_int32_bounds():
    """Channels with tiny weight scales: a positive bias clips to 2**31 - 1, a negative one to
    -2**31, exactly (no wrap-around past the bounds)."""
    pos, neg = int(np.argmax(B)), int(np.argmin(B))
    assert B[pos] > 0 > B[neg]
    qw = quantize_weight(W, 8, "per-channel", 0, 1)
    qw.scale[[pos, neg]] = 1e-12
    model, summary = _emit(qw)
    QuantizeBiasPass(_qgraph(), {"w": qw}, summary)(model)
    inits = {t.name: numpy_helper.to_array(t) for t in to_proto(model).graph.initializer}
    bq = inits["b_quantized"]
    assert bq.dtype == np.int32
    assert (int(bq[pos]), int(bq[neg])) == (2147483647, -2147483648)


def test_int32_bias_runs_as_the_bias_it_stands_for():
    """ORT runs the int32 bias (a per-channel DequantizeLinear along the bias's one axis): the
    output moves by at most half a bias step from the model with the float bias."""
    qw = quantize_weight(W, 8, "per-channel", 0, 1)
    model, summary = _emit(qw)
    before = run_model(to_proto(model), {"x": X})[0]
    assert QuantizeBiasPass(_qgraph(), {"w": qw}, summary)(model).modified
    proto = to_proto(model)
    (dq,) = [n for n in proto.graph.node if n.name == "b_DequantizeLinear"]
    assert [(a.name, a.i) for a in dq.attribute] == [("axis", 0)]
    after = run_model(proto, {"x": X})[0]
    step = (XS * qw.scale).reshape(1, -1, 1, 1)
    assert np.all(np.abs(after - before) <= step / 2 + 1e-5)


def test_a_weight_left_float_keeps_its_float_bias():
    qw = quantize_weight(W, 8, "per-channel", 0, 1)
    model, summary = _emit(qw)
    assert not QuantizeBiasPass(_qgraph(), {}, summary)(model).modified
    assert summary.int32_biases == []


def test_defaults_store_a_two_bit_weight_cast_from_int4():
    """Without storage arguments: the cast form, and no int2 container (it needs opset 25)."""
    qw = quantize_weight(W, 2, "per-channel", 0, 1)
    model = ir.from_proto(_model())
    summary = _summary()
    assert InsertWeightDQPass(_qgraph(), {"w": qw}, {"w": 2}, summary)(model).modified
    rep = summary.weights["w"]
    assert (rep["storage"], rep["container"]) == ("cast", "int4")


def test_nothing_to_emit_leaves_the_model_unmodified():
    model = ir.from_proto(_model())
    summary = _summary()
    assert not InsertWeightDQPass(QuantizerGraph({}, {}, {}), {}, {}, summary)(model).modified
    assert summary.weights == {}
    assert "w" in {t.name for t in to_proto(model).graph.initializer}


def test_a_weight_another_node_reads_keeps_its_float_initializer():
    """Only the quantizer's consumers read the dequantized weight; a node outside them (here an
    Identity to a graph output) still reads the float initializer, which must stay."""
    proto = _model()
    proto.graph.node.append(helper.make_node("Identity", ["w"], ["w_copy"], name="other"))
    proto.graph.output.append(helper.make_tensor_value_info("w_copy", TensorProto.FLOAT, None))
    model = ir.from_proto(proto)
    qw = quantize_weight(W, 8, "per-channel", 0, 1)
    InsertWeightDQPass(_qgraph(), {"w": qw}, {"w": 8}, _summary())(model)
    out = to_proto(model)
    assert "w" in {t.name for t in out.graph.initializer}
    (other,) = [n for n in out.graph.node if n.name == "other"]
    (conv,) = [n for n in out.graph.node if n.name == "conv"]
    assert list(other.input) == ["w"] and conv.input[1] != "w"
    _, w_copy = run_model(out, {"x": X})
    np.testing.assert_array_equal(w_copy, W)


def test_no_int32_bias_behind_a_per_channel_activation_scale():
    """An int32 bias needs one activation scale: a per-channel activation DequantizeLinear
    leaves the float bias."""
    proto = _model()
    inits = {t.name: t for t in proto.graph.initializer}
    inits["xs"].CopyFrom(numpy_helper.from_array(np.full(3, XS, np.float32), "xs"))
    inits["xz"].CopyFrom(numpy_helper.from_array(np.full(3, 128, np.uint8), "xz"))
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            n.attribute.append(helper.make_attribute("axis", 1))
    model = ir.from_proto(proto)
    qw = quantize_weight(W, 8, "per-channel", 0, 1)
    summary = _summary()
    InsertWeightDQPass(_qgraph(), {"w": qw}, {"w": 8}, summary, "cast", False)(model)
    assert not QuantizeBiasPass(_qgraph(), {"w": qw}, summary)(model).modified
    assert summary.int32_biases == []
