import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.analysis.calibrate import tap_model
from faaq_onnx.graph import (
    add_initializer,
    ancestor_nodes,
    const_array,
    default_opset,
    ir_version_for,
    is_float_tensor,
    model_input_dtypes,
    model_input_shapes,
    node_name,
    prefix_model,
    to_proto,
    values_by_name,
)
from tests.conftest import build_tiny_cnn, run_model


def test_prefix_model_keeps_only_what_the_outputs_need():
    model = build_tiny_cnn()
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    part = prefix_model(model, [first.output[0]])
    assert [n.name for n in part.graph.node] == [first.name]
    assert {t.name for t in part.graph.initializer} == {i for i in first.input[1:] if i}
    x = {"input": np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)}
    whole = run_model(tap_model(model, [first.output[0]]), x)[-1]
    np.testing.assert_array_equal(run_model(part, x)[0], whole)


def test_prefix_model_starts_at_given_tensors():
    """With `given`, nothing before those tensors is kept: they are inputs, fed by the caller,
    and the part computes from them what the whole model computes from its input."""
    from onnx import TensorProto, helper

    model = build_tiny_cnn()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    first, second = convs[0], convs[1]
    cut = second.input[0]
    info = helper.make_tensor_value_info(cut, TensorProto.FLOAT, None)
    part = prefix_model(model, [second.output[0]], given={cut: info})
    assert [i.name for i in part.graph.input] == [cut]
    assert first.name not in {n.name for n in part.graph.node}
    assert first.input[1] not in {t.name for t in part.graph.initializer}
    x = {"input": np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)}
    *_, mid, out = run_model(tap_model(model, [cut, second.output[0]]), x)
    np.testing.assert_allclose(run_model(part, {cut: mid})[0], out, rtol=1e-6, atol=1e-6)


# ---- the small queries ----


def _proto(opsets=(("", 17),)):
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    c = numpy_helper.from_array(np.array([1.5, 2.5], np.float32), "cv")
    nodes = [
        helper.make_node("Constant", [], ["c"], value=c, name="const"),
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "c"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [3, None]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 10
    return m


def test_input_shapes_and_dtypes_leave_initializers_out():
    m = _proto()
    assert model_input_shapes(m) == {"x": ["n", 2], "k": [3, None]}
    assert model_input_dtypes(m) == {"x": np.dtype(np.float32), "k": np.dtype(np.int64)}


def test_default_opset_of_protos_and_models():
    assert default_opset(_proto()) == 17
    assert default_opset(_proto((("ai.onnx", 13), ("com.microsoft", 1)))) == 13
    assert default_opset(_proto((("com.microsoft", 1),))) == 0
    assert default_opset(ir.from_proto(_proto((("", 21),)))) == 21
    model = ir.from_proto(_proto((("com.microsoft", 1),)))
    assert default_opset(model) == 0
    model.opset_imports["ai.onnx"] = 19
    assert default_opset(model) == 19


def test_ir_version_follows_the_opset():
    """IR 10 (what ORT accepts) up to opset 24; int2's opset 25 needs IR 11."""
    assert [ir_version_for(o) for o in (13, 21, 24, 25, 26)] == [10, 10, 10, 11, 11]
    model = ir.from_proto(_proto((("", 25),)))
    assert to_proto(model).ir_version == 11
    assert to_proto(ir.from_proto(_proto())).ir_version == 10


def test_values_constants_and_types():
    model = ir.from_proto(_proto())
    values = values_by_name(model.graph)
    assert {"x", "k", "w", "c", "m", "y"} <= set(values)
    np.testing.assert_array_equal(const_array(values["w"]), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(const_array(values["c"]), [1.5, 2.5])  # a Constant's output
    assert const_array(values["m"]) is None and const_array(None) is None
    assert is_float_tensor(values["x"]) and not is_float_tensor(values["k"])
    for dt in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16):
        values["x"].dtype = dt
        assert is_float_tensor(values["x"])
    values["x"].dtype = ir.DataType.DOUBLE
    assert not is_float_tensor(values["x"])
    nodes = list(model.graph)
    assert node_name(nodes[1]) == "mm"
    assert node_name(nodes[2]) == f"Add_{id(nodes[2]):x}"


def test_add_initializer_never_takes_a_name_twice():
    model = ir.from_proto(_proto())
    a = add_initializer(model.graph, "w", np.zeros(2, np.float32))
    b = add_initializer(model.graph, "w", np.ones(2, np.int8))
    c = add_initializer(model.graph, "fresh", np.ones(3, np.int64))
    assert (a.name, b.name, c.name) == ("w_1", "w_2", "fresh")
    assert b.dtype == ir.DataType.INT8 and tuple(b.shape) == (2,)
    np.testing.assert_array_equal(const_array(model.graph.initializers["w_2"]), [1, 1])


def test_ancestors_stop_where_asked_and_follow_subgraph_reads():
    """The nodes a tensor depends on; an If's branches read outer tensors too."""
    branch = helper.make_graph(
        [helper.make_node("Neg", ["b"], ["t"], name="neg")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Sigmoid", ["x"], ["b"], name="sig"),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="if"),
        helper.make_node("Add", ["a", "y"], ["z"], name="add"),
    ]
    producer = {o: n for n in nodes for o in n.output}
    names = lambda ns: sorted(n.name for n in ns)  # noqa: E731
    assert names(ancestor_nodes(["z"], producer)) == ["add", "if", "relu", "sig"]
    assert names(ancestor_nodes(["z"], producer, stop={"y"})) == ["add", "relu"]
    assert names(ancestor_nodes(["a", "a"], producer)) == ["relu"]
    assert ancestor_nodes(["x"], producer) == []
