"""FoldBatchNormPass and AddZeroBiasPass: same outputs as ONNX Runtime runs on the model before,
for every producer layout they accept; and what they must leave alone, left alone."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.graph import to_proto
from faaq_onnx.passes.fold_batchnorm import AddZeroBiasPass, FoldBatchNormPass
from tests.conftest import graph_model, run_model

_R = np.random.default_rng(3)


def _f(*shape, lo=None):
    a = _R.standard_normal(shape).astype(np.float32)
    return np.abs(a) + lo if lo is not None else a


def _model(nodes, x_shape, inits, outputs=("y",)):
    return graph_model(nodes, x_shape, inits, outputs, opset=17, infer=False)


def _bn(c, x="p", y="y", **attrs):
    node = helper.make_node("BatchNormalization", [x, "s", "b", "m", "v"], [y], name="bn", **attrs)
    return node, {"s": _f(c, lo=0.5), "b": _f(c), "m": _f(c), "v": _f(c, lo=0.2)}


def _producer(kind):
    """(producer node writing 'p', its initializers, input shape, channels the BN normalizes)."""
    if kind.startswith("ConvTranspose"):
        group = 2 if "group" in kind else 1
        ins = ["x", "w", "bias"] if "bias" in kind else ["x", "w"]
        attrs = {"group": group} if group > 1 else {}  # no attribute: group 1
        node = helper.make_node("ConvTranspose", ins, ["p"], name="prod", strides=[2, 2], **attrs)
        inits = {"w": _f(4, 3, 2, 2), "bias": _f(3 * group)}
        return node, inits, [2, 4, 3, 3], 3 * group
    if kind.startswith("Conv"):
        group = 2 if "group" in kind else 1
        ins = ["x", "w", "bias"] if "bias" in kind else ["x", "w"]
        node = helper.make_node("Conv", ins, ["p"], name="prod", group=group, pads=[1, 1, 1, 1])
        inits = {"w": _f(6, 4 // group, 3, 3), "bias": _f(6)}
        return node, inits, [2, 4, 5, 5], 6
    trans_b = 1 if "transB" in kind else 0
    ins = ["x", "w", "bias"] if "bias" in kind else ["x", "w"]
    attrs = {"transB": 1} if trans_b else {}  # no attribute: transB 0
    node = helper.make_node("Gemm", ins, ["p"], name="prod", **attrs)
    inits = {"w": _f(5, 4) if trans_b else _f(4, 5), "bias": _f(5)}
    return node, inits, [3, 4], 5


KINDS = [
    "Conv",
    "Conv bias",
    "Conv group bias",
    "ConvTranspose",
    "ConvTranspose group",
    "ConvTranspose group bias",
    "Gemm",
    "Gemm bias",
    "Gemm transB",
    "Gemm transB bias",
]


def _fold_and_compare(proto, x_shape, pass_):
    x = {"x": _f(*x_shape)}
    before = run_model(proto, x)
    model = ir.from_proto(proto)
    result = pass_()(model)
    after_proto = to_proto(model)
    after = run_model(after_proto, x)
    for a, b in zip(after, before):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    return result.modified, [n.op_type for n in after_proto.graph.node], after_proto


@pytest.mark.parametrize("kind", KINDS)
def test_batchnorm_folds_into_its_producer_and_outputs_are_unchanged(kind):
    """Every foldable producer layout (grouped convs, transposed ones, Gemm either way round,
    with and without a bias, a non-default epsilon): the BN goes, outputs stay."""
    prod, inits, x_shape, c = _producer(kind)
    bn, bn_inits = _bn(c, epsilon=0.3)
    if "bias" not in kind:
        inits.pop("bias")
    modified, ops, proto = _fold_and_compare(
        _model([prod, bn], x_shape, inits | bn_inits), x_shape, FoldBatchNormPass
    )
    assert modified and ops == [prod.op_type]
    assert [o.name for o in proto.graph.output] == ["y"]
    assert list(proto.graph.node[0].input[1:]) == ["w_bnfold", "prod_bias_bnfold"]  # named after it


def test_default_epsilon_is_the_onnx_default():
    """No epsilon attribute: 1e-5, which matters when a variance is tiny."""
    prod, inits, x_shape, c = _producer("Conv")
    bn, bn_inits = _bn(c)
    bn_inits["v"] = np.full(c, 1e-5, np.float32)
    inits.pop("bias")
    modified, ops, _ = _fold_and_compare(
        _model([prod, bn], x_shape, inits | bn_inits), x_shape, FoldBatchNormPass
    )
    assert modified and ops == ["Conv"]


def _unchanged(nodes, x_shape, inits, outputs=("y",)):
    modified, ops, _ = _fold_and_compare(
        _model(nodes, x_shape, inits, outputs), x_shape, FoldBatchNormPass
    )
    assert not modified and "BatchNormalization" in ops


@pytest.mark.parametrize("attrs", [{"transA": 1}, {"alpha": 0.5}, {"beta": 2.0}])
def test_gemm_with_transA_alpha_or_beta_keeps_its_batchnorm(attrs):
    """Only a plain Gemm (transA 0, alpha 1, beta 1) folds."""
    shape = [4, 3] if attrs.get("transA") else [3, 4]
    prod = helper.make_node("Gemm", ["x", "w", "bias"], ["p"], name="prod", **attrs)
    bn, bn_inits = _bn(5)
    _unchanged([prod, bn], shape, {"w": _f(4, 5), "bias": _f(5)} | bn_inits)


def test_what_cannot_fold_is_left_alone():
    """A BN after a Relu, after a Conv whose output is read twice or is a graph output, after a
    Conv sharing its weight, with a computed scale, or with its running-stat outputs read."""
    conv, inits, shape, c = _producer("Conv bias")
    bn, bn_inits = _bn(c)
    relu = helper.make_node("Relu", ["x"], ["p"])
    _unchanged([relu, bn], [2, 6, 5, 5], bn_inits)
    twice = helper.make_node("Add", ["p", "y"], ["z"])
    _unchanged([conv, bn, twice], shape, inits | bn_inits, ("z",))
    _unchanged([conv, bn], shape, inits | bn_inits, ("y", "p"))
    conv2 = helper.make_node("Conv", ["x", "w"], ["q"], pads=[1, 1, 1, 1])
    _unchanged([conv, bn, conv2], shape, inits | bn_inits, ("y", "q"))
    neg = helper.make_node("Neg", ["s0"], ["s"])
    s0 = bn_inits.pop("s")
    _unchanged([conv, neg, bn], shape, inits | bn_inits | {"s0": s0})


def test_training_mode_batchnorm_with_read_statistics_is_left_alone():
    """A BN whose running-mean output is read is in training mode: not folded."""
    conv, inits, shape, c = _producer("Conv bias")
    _, bn_inits = _bn(c)
    bn = helper.make_node(
        "BatchNormalization", ["p", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1
    )
    model = ir.from_proto(_model([conv, bn], shape, inits | bn_inits, ("y", "rm")))
    assert not FoldBatchNormPass()(model).modified


def test_a_folded_graph_output_keeps_its_name():
    """The BN's output was the graph output: the producer's output takes over that name."""
    conv, inits, shape, c = _producer("Conv")
    bn, bn_inits = _bn(c)
    relu = helper.make_node("Relu", ["y"], ["r"])
    inits.pop("bias")
    modified, ops, proto = _fold_and_compare(
        _model([conv, bn, relu], shape, inits | bn_inits, ("r", "y")), shape, FoldBatchNormPass
    )
    assert modified and ops == ["Conv", "Relu"]
    assert [o.name for o in proto.graph.output] == ["r", "y"]
    assert proto.graph.node[0].output[0] == "y"


@pytest.mark.parametrize(
    "kind", ["Conv", "Conv group", "ConvTranspose", "ConvTranspose group", "Gemm", "Gemm transB"]
)
def test_zero_bias_has_one_zero_per_output_channel(kind):
    """Each bias-less producer gets an all-zero bias of its output-channel count (ConvTranspose:
    w.shape[1] times the group; Gemm: B's columns, or rows when transposed)."""
    prod, inits, x_shape, c = _producer(kind)
    inits.pop("bias")
    prod.output[0] = "y"
    modified, ops, proto = _fold_and_compare(
        _model([prod], x_shape, inits), x_shape, AddZeroBiasPass
    )
    assert modified and ops == [prod.op_type]
    assert len(proto.graph.node[0].input) == 3
    assert proto.graph.node[0].input[2] == "prod_bias"  # named after its layer
    bias = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}["prod_bias"]
    assert bias.shape == (c,) and not bias.any() and bias.dtype == np.float32


def test_zero_bias_is_not_added_where_it_would_be_wrong_or_is_there():
    """A producer with a bias, a Gemm with beta != 1 or transA, a computed weight, a Relu, a MatMul:
    unchanged."""
    x3 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    cases = [
        (helper.make_node("Gemm", ["x", "w", "b"], ["y"]), {"w": _f(4, 5), "b": _f(5)}),
        (helper.make_node("Gemm", ["x", "w"], ["y"], beta=0.5), {"w": _f(4, 5)}),
        (helper.make_node("Gemm", ["x", "w"], ["y"], transA=1), {"w": _f(3, 5)}),
        (helper.make_node("Gemm", ["x", "x"], ["y"], transB=1), {}),
        (helper.make_node("Relu", ["x"], ["y"]), {}),
        (helper.make_node("MatMul", ["x", "w"], ["y"]), {"w": _f(4, 5)}),  # not a bias op
    ]
    for node, inits in cases:
        g = helper.make_graph(
            [node],
            "g",
            [x3],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(v, k) for k, v in inits.items()],
        )
        model = ir.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
        assert not AddZeroBiasPass()(model).modified, node
