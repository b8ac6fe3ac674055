"""FuseMatMulAddPass: a 2-d MatMul by a constant weight plus a constant bias Add becomes one
Gemm (named as the MatMul, writing the Add's output), the function unchanged; the rest stays."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.passes.fuse_matmul_add import FuseMatMulAddPass
from tests.conftest import apply_pass_keeping_outputs


def _f(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run(nodes, inits, x_shape=(3, 4), outputs=("y",)):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape) if x_shape else None)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 10
    feeds = {"x": _f(*[d if isinstance(d, int) else 2 for d in x_shape or (3, 4)], seed=5)}
    return apply_pass_keeping_outputs(FuseMatMulAddPass(), proto, feeds)


def _mm(w="w"):
    return helper.make_node("MatMul", ["x", w], ["m"], name="fc")


@pytest.mark.parametrize(
    "bias, order",
    [((5,), "mb"), ((5,), "bm"), ((1, 5), "mb"), ((1,), "mb")],
)
def test_matmul_and_bias_add_become_one_gemm(bias, order):
    """Bias of shape (N,), (1, N), on either side of the Add; the Gemm keeps the MatMul's name,
    writes the Add's output and reads a 1-d bias."""
    n = bias[-1] if bias != (1,) else 1
    add_in = ["m", "b"] if order == "mb" else ["b", "m"]
    nodes = [_mm(), helper.make_node("Add", add_in, ["y"], name="add")]
    modified, after = _run(nodes, {"w": _f(4, n), "b": _f(*bias, seed=1)})
    assert modified
    (gemm,) = after.graph.node
    assert (gemm.op_type, gemm.name, list(gemm.output)) == ("Gemm", "fc", ["y"])
    b = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}[gemm.input[2]]
    assert b.shape == (n,)


def test_a_fixed_shape_rank_3_pair_becomes_reshape_gemm_reshape():
    """[batch, sequence, K] with every dimension known (a fixed-shape transformer export): ORT
    would fuse it into a float Gemm between Reshapes at load; written so here, it quantizes."""
    nodes = [_mm(), helper.make_node("Add", ["m", "b"], ["y"], name="add")]
    modified, after = _run(nodes, {"w": _f(4, 5), "b": _f(5, seed=1)}, x_shape=(2, 3, 4))
    assert modified
    assert [n.op_type for n in after.graph.node] == ["Reshape", "Gemm", "Reshape"]
    assert after.graph.node[1].name == "fc" and list(after.graph.node[2].output) == ["y"]


def test_a_bias_from_a_constant_node_becomes_an_initializer():
    nodes = [
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(_f(5, seed=1))),
        _mm(),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    modified, after = _run(nodes, {"w": _f(4, 5)})
    assert modified and [n.op_type for n in after.graph.node if n.op_type != "Constant"] == ["Gemm"]


CASES = {
    "a bias of one row per sample": ({"w": _f(4, 5), "b": _f(3, 5)}, (3, 4), ("y",), None),
    "a bias of the wrong length": ({"w": _f(4, 5), "b": _f(1, seed=2)}, (3, 4), ("y",), None),
    "a 3-d bias": ({"w": _f(4, 5), "b": _f(1, 1, 5)}, (3, 4), ("y",), None),
    "a rank-3 input of unknown batch": ({"w": _f(4, 5), "b": _f(5)}, ("N", 3, 4), ("y",), None),
    "an input of unknown shape": ({"w": _f(4, 5), "b": _f(5)}, None, ("y",), None),
    "a 3-d weight": ({"w": _f(2, 4, 5), "b": _f(5)}, (2, 3, 4), ("y",), None),
    "a MatMul output read twice": ({"w": _f(4, 5), "b": _f(5)}, (3, 4), ("y", "z"), "twice"),
    "a MatMul output that is a graph output": (
        {"w": _f(4, 5), "b": _f(5)},
        (3, 4),
        ("y", "m"),
        None,
    ),
    "a computed weight": ({"w0": _f(4, 5), "b": _f(5)}, (3, 4), ("y",), "computed w"),
    "a computed bias": ({"w": _f(4, 5), "b0": _f(5)}, (3, 4), ("y",), "computed b"),
    "a Mul after the MatMul": ({"w": _f(4, 5), "b": _f(5)}, (3, 4), ("y",), "mul"),
}


@pytest.mark.parametrize("case", CASES)
def test_what_a_gemm_cannot_express_stays(case):
    inits, shape, outputs, how = CASES[case]
    nodes = [_mm(), helper.make_node("Mul" if how == "mul" else "Add", ["m", "b"], ["y"])]
    if how == "twice":
        nodes.append(helper.make_node("Relu", ["m"], ["z"]))
    if how == "computed w":
        nodes.insert(0, helper.make_node("Identity", ["w0"], ["w"]))
    if how == "computed b":
        nodes.insert(0, helper.make_node("Neg", ["b0"], ["b"]))
    modified, after = _run(nodes, inits, shape, outputs)
    assert not modified and "MatMul" in [n.op_type for n in after.graph.node]
