"""Inputs without a sample axis: lifted to [1, *shape] for faaq's own runs, given back as they
were to the model faaq writes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from faaq_onnx.graph import to_proto
from faaq_onnx.passes.sample_axis import DropSampleAxisPass, LiftSampleAxisPass
from faaq_onnx.runtime.session import make_session


def state_model() -> onnx.ModelProto:
    """y = relu(x @ W + mean(state, 0)) * gain; stateN = [r, r]: a [2, B, 8] state (batch on
    axis 1) and a scalar gain, beside an x with its batch in front."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
        nh.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W2"),
        nh.from_array(np.array([0], np.int64), "zero"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["h"]),
        h.make_node("ReduceMean", ["state"], ["s"], keepdims=0, axes=[0]),
        h.make_node("Add", ["h", "s"], ["hs"]),
        h.make_node("Mul", ["hs", "gain"], ["hg"]),
        h.make_node("Relu", ["hg"], ["r"]),
        h.make_node("MatMul", ["r", "W2"], ["y"]),
        h.make_node("Unsqueeze", ["r", "zero"], ["r1"]),
        h.make_node("Concat", ["r1", "r1"], ["stateN"], axis=0),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("x", T.FLOAT, ["B", 8]),
            h.make_tensor_value_info("state", T.FLOAT, [2, "B", 8]),
            h.make_tensor_value_info("gain", T.FLOAT, []),
        ],
        [
            h.make_tensor_value_info("y", T.FLOAT, ["B", 4]),
            h.make_tensor_value_info("stateN", T.FLOAT, [2, "B", 8]),
        ],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def state_feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n samples: x batched on axis 0, state and gain one whole feed per sample."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, 8)).astype(np.float32),
        "state": rng.standard_normal((n, 2, 1, 8)).astype(np.float32),
        "gain": rng.uniform(0.5, 2, n).astype(np.float32),
    }


def _dims(values) -> dict[str, list]:
    return {
        v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in values
    }


def test_lifted_model_takes_and_returns_one_sample_on_a_new_axis():
    model = ir.from_proto(state_model())
    assert LiftSampleAxisPass(["state", "gain"])(model).modified
    proto = to_proto(model)
    assert _dims(proto.graph.input) == {"x": ["B", 8], "state": [1, 2, "B", 8], "gain": [1]}
    f = state_feeds(1)
    user = make_session(state_model()).run(
        None, {"x": f["x"], "state": f["state"][0], "gain": np.asarray(f["gain"][0])}
    )
    lifted = make_session(proto).run(None, {"x": f["x"], "state": f["state"], "gain": f["gain"]})
    for a, b in zip(user, lifted):
        assert b.shape == (1, *a.shape)
        np.testing.assert_array_equal(b[0], a)


def test_dropping_the_axis_gives_the_users_interface_back():
    model = ir.from_proto(state_model())
    LiftSampleAxisPass(["state", "gain"])(model)
    assert DropSampleAxisPass(["state", "gain"])(model).modified
    proto = to_proto(model)
    original = state_model()
    assert _dims(proto.graph.input) == _dims(original.graph.input)
    assert _dims(proto.graph.output) == _dims(original.graph.output)
    assert not any(
        n.op_type in ("Squeeze", "Unsqueeze") and "faaq" in n.name for n in proto.graph.node
    )
    assert not any(t.name.startswith("faaq_sample_axis") for t in proto.graph.initializer)


def test_a_reader_put_before_the_squeeze_still_gets_the_lifted_shape():
    """Where emission put something between the input and its Squeeze (here an Identity
    standing for a Q/DQ pair), the input is unsqueezed again for it."""
    model = ir.from_proto(state_model())
    LiftSampleAxisPass(["state"])(model)
    state = next(v for v in model.graph.inputs if v.name == "state")
    squeeze = next(u.node for u in state.uses())
    between = ir.Value(name="state_qdq", shape=state.shape, type=state.type)
    node = ir.node("Identity", [state], outputs=[between])
    model.graph.insert_before(squeeze, node)
    squeeze.replace_input_with(0, between)
    DropSampleAxisPass(["state"])(model)
    proto = to_proto(model)
    assert _dims(proto.graph.input)["state"] == [2, "B", 8]
    f = state_feeds(1, seed=2)
    feed = {"x": f["x"], "state": f["state"][0], "gain": np.asarray(f["gain"][0])}
    got = make_session(proto).run(None, feed)
    want = make_session(state_model()).run(None, feed)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_passes_naming_no_input_change_nothing_and_say_so():
    """Lift and Drop with no input of theirs (none named, or names the model lacks) report
    modified=False and leave the model as it was."""
    for names in ([], ["nope"]):
        for cls in (LiftSampleAxisPass, DropSampleAxisPass):
            model = ir.from_proto(state_model())
            assert not cls(names)(model).modified, (cls.__name__, names)
            proto = to_proto(model)
            original = state_model()
            assert _dims(proto.graph.input) == _dims(original.graph.input)
            assert _dims(proto.graph.output) == _dims(original.graph.output)
            assert [n.op_type for n in proto.graph.node] == [n.op_type for n in original.graph.node]
