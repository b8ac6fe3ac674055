"""zoo/exporter.fold_pads_into_convs on hand-made graphs: which Pads fold into the Convs reading
them (ORT's output unchanged), which stay, and the constant folding of their pads."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("torch")

from faaq_onnx.zoo.exporter import _fold_constant, _remove_dead_nodes, fold_pads_into_convs

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
X = RNG.standard_normal((2, 2, 7, 7)).astype(np.float32)


def graph(pad_node, extra_nodes=(), inits=(), conv_attrs=None, opset=17, outputs=("y",)):
    conv = helper.make_node("Conv", ["p", "w"], ["y"], name="conv", **(conv_attrs or {}))
    nodes = [*extra_nodes, pad_node, conv]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 7, 7])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(W, "w"), *inits],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def run(m):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": X})


def pads_const(values, name="pads"):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def conv_pads(m):
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    return list(next(a for a in conv.attribute if a.name == "pads").ints)


def test_a_zero_pad_folds_into_the_convs_own_pads():
    pad = helper.make_node("Pad", ["x", "pads"], ["p"])
    m = graph(pad, inits=[pads_const([0, 0, 1, 2, 0, 0, 3, 0])], conv_attrs={"pads": [1, 1, 1, 1]})
    want = run(m)
    assert fold_pads_into_convs(m) == 1
    assert [n.op_type for n in m.graph.node] == ["Conv"]
    assert conv_pads(m) == [2, 3, 4, 1] and m.graph.node[0].input[0] == "x"
    assert [t.name for t in m.graph.initializer] == ["w"]  # the pads constant is gone too
    np.testing.assert_allclose(run(m)[0], want[0], atol=1e-5)


def test_a_conv_without_pads_gets_them_and_old_opsets_read_the_attribute():
    pad = helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 2, 1, 0, 0, 0, 1], mode="constant")
    m = graph(pad, opset=10)
    want = run(m)
    assert fold_pads_into_convs(m) == 1 and conv_pads(m) == [2, 1, 0, 1]
    np.testing.assert_allclose(run(m)[0], want[0], atol=1e-5)


def test_pads_computed_from_constants_fold():
    """The legacy exporter's Constant -> Cast -> Reshape chain around the pads."""
    const = helper.make_node(
        "Constant",
        [],
        ["c"],
        value=numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.float32)),
    )
    cast = helper.make_node("Cast", ["c"], ["ci"], to=TensorProto.INT64)
    reshape = helper.make_node("Reshape", ["ci", "shape"], ["pads"])
    pad = helper.make_node("Pad", ["x", "pads", "zero"], ["p"])
    m = graph(
        pad,
        extra_nodes=[const, cast, reshape],
        inits=[pads_const([8], "shape"), numpy_helper.from_array(np.float32(0.0), "zero")],
    )
    want = run(m)
    assert fold_pads_into_convs(m) == 1 and conv_pads(m) == [1, 1, 1, 1]
    assert [n.op_type for n in m.graph.node] == ["Conv"]  # the dead constant chain is removed
    np.testing.assert_allclose(run(m)[0], want[0], atol=1e-5)


@pytest.mark.parametrize(
    "case",
    [
        "nonzero value",
        "reflect",
        "negative",
        "batch axis",
        "channel axis",
        "end of batch axis",
        "end of channel axis",
        "graph output",
        "auto_pad",
        "pads from an input",
    ],
)
def test_pads_that_do_not_fold(case):
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    inits = [pads_const(pads)]
    ins = ["x", "pads"]
    attrs = {}
    conv_attrs = None
    outputs = ("y",)
    if case == "nonzero value":
        inits.append(numpy_helper.from_array(np.float32(0.5), "v"))
        ins.append("v")
    elif case == "reflect":
        attrs["mode"] = "reflect"
    elif case == "negative":
        inits = [pads_const([0, 0, 1, -1, 0, 0, 1, 1])]
    elif case in ("batch axis", "channel axis", "end of batch axis", "end of channel axis"):
        at = {"batch axis": 0, "channel axis": 1, "end of batch axis": 4, "end of channel axis": 5}
        bad = list(pads)
        bad[at[case]] = 1
        inits = [pads_const(bad)]
    elif case == "graph output":
        outputs = ("y", "p")
    elif case == "auto_pad":
        conv_attrs = {"auto_pad": "SAME_UPPER"}
    elif case == "pads from an input":
        inits = []
        ins = ["x", "shape_in"]
    m = graph(
        helper.make_node("Pad", ins, ["p"], **attrs),
        inits=inits,
        conv_attrs=conv_attrs,
        outputs=outputs,
    )
    if case == "pads from an input":
        m.graph.input.append(helper.make_tensor_value_info("shape_in", TensorProto.INT64, [8]))
    before = [n.op_type for n in m.graph.node]
    assert fold_pads_into_convs(m) == 0
    assert [n.op_type for n in m.graph.node] == before


def test_a_pad_read_by_anything_but_a_convs_data_input_stays():
    pad = helper.make_node("Pad", ["x", "pads"], ["p"])
    relu = helper.make_node("Relu", ["p"], ["r"])
    m = graph(pad, inits=[pads_const([0, 0, 1, 1, 0, 0, 1, 1])], outputs=("y", "r"))
    m.graph.node.append(relu)
    assert fold_pads_into_convs(m) == 0
    # a 2-D (rank < 3) pad never folds
    pad2 = helper.make_node("Pad", ["x", "pads"], ["p"])
    m2 = graph(pad2, inits=[pads_const([0, 0, 0, 0])])
    assert fold_pads_into_convs(m2) == 0


def test_constant_folding_depth_and_unknowns():
    consts = {"a": np.array([1, 2], np.int64)}
    producers = {
        "b": helper.make_node("Unsqueeze", ["a", "ax"], ["b"]),
        "c": helper.make_node("Relu", ["a"], ["c"]),  # not a shape op: not folded
    }
    consts["ax"] = np.array([0], np.int64)
    np.testing.assert_array_equal(_fold_constant("b", producers, dict(consts)), [[1, 2]])
    assert _fold_constant("c", producers, dict(consts)) is None
    assert _fold_constant("nowhere", producers, dict(consts)) is None
    assert _fold_constant("b", producers, dict(consts), depth=33) is None
    np.testing.assert_array_equal(_fold_constant("b", producers, dict(consts), depth=32), [[1, 2]])


def test_dead_nodes_and_initializers_go():
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Neg", ["a"], ["dead1"]),
            helper.make_node("Abs", ["dead1"], ["dead2"]),
            helper.make_node("Add", ["x", "k"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [
            numpy_helper.from_array(np.float32([1]), "k"),
            numpy_helper.from_array(np.float32([2]), "unused"),
        ],
    )
    _remove_dead_nodes(g)
    assert [n.op_type for n in g.node] == ["Add"] and [t.name for t in g.initializer] == ["k"]
    onnx.checker.check_graph(g)
