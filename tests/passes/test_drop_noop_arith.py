"""x·1, x/1, x+0, x−0 leave the graph; anything that could change a value or a shape stays."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import helper, numpy_helper

from faaq_onnx.passes.drop_noop_arith import DropNoopArithmeticPass

F32 = onnx.TensorProto.FLOAT


def _model(op, const, const_first=False, x_shape=(2, 3)):
    ins = ["c", "x"] if const_first else ["x", "c"]
    nodes = [
        helper.make_node(op, ins, ["t"], name="arith"),
        helper.make_node("Sigmoid", ["t"], ["y"], name="sig"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, list(x_shape))],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(np.asarray(const, np.float32), "c")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return onnx.shape_inference.infer_shapes(m)


def _run(proto, x):
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _dropped(proto):
    model = ir.from_proto(proto)
    changed = DropNoopArithmeticPass()(model).modified
    out = ir.to_proto(model)
    return changed, [n.op_type for n in out.graph.node], out


def test_neutral_arithmetic_is_dropped_and_the_function_kept():
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for op, const, first in [
        ("Mul", [1.0], False),
        ("Mul", 1.0, True),
        ("Div", [1.0], False),
        ("Add", [0.0], True),
        ("Sub", 0.0, False),
    ]:
        proto = _model(op, const, first)
        changed, ops, out = _dropped(proto)
        assert changed and ops == ["Sigmoid"], (op, const, first)
        np.testing.assert_array_equal(_run(out, x), _run(proto, x))


def test_arithmetic_that_changes_values_or_shapes_stays():
    for op, const, first, shape in [
        ("Mul", [1.0001], False, (2, 3)),
        ("Div", [1.0], True, (2, 3)),  # 1/x
        ("Sub", [0.0], True, (2, 3)),  # 0-x
        ("Add", [[[0.0]]], False, (2, 3)),  # broadcasts x to rank 3
        ("Mul", [1.0, 1.0, 1.0], False, (2, 3)),  # more than one element
    ]:
        changed, ops, _ = _dropped(_model(op, const, first, shape))
        assert not changed and ops == [op, "Sigmoid"], (op, const, first)


def test_a_neutral_op_producing_a_graph_output_stays():
    proto = _model("Mul", [1.0])
    proto.graph.output.append(helper.make_tensor_value_info("t", F32, None))
    changed, ops, _ = _dropped(proto)
    assert not changed and ops == ["Mul", "Sigmoid"]


def test_rank_of_a_conv_output_without_a_shape_comes_from_its_weight():
    """PaddlePaddle's Swish, x·Sigmoid(1·x), behind a Conv whose output shape inference
    could not give (a dynamic Reshape upstream in the real file)."""
    w = np.random.default_rng(1).standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], name="conv"),
        helper.make_node("Mul", ["h", "one"], ["h1"], name="times_one"),
        helper.make_node("Sigmoid", ["h1"], ["s"], name="sig"),
        helper.make_node("Mul", ["h", "s"], ["y"], name="swish"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    g.value_info.append(helper.make_tensor_value_info("h", F32, None))  # a type, no shape
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    model = ir.from_proto(m)
    assert model.graph.node(0).outputs[0].shape is None
    assert DropNoopArithmeticPass()(model).modified
    sig = next(n for n in model.graph if n.op_type == "Sigmoid")
    assert sig.inputs[0].producer().op_type == "Conv"
