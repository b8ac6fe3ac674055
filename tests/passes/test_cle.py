"""Cross-layer equalization keeps the function and equalizes per-channel ranges."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.graph import to_proto
from faaq_onnx.passes.cle import CrossLayerEqualizationPass
from tests.conftest import run_model


def _chain(depthwise: bool, act: str = "Relu"):
    rng = np.random.default_rng(0)
    c = 6
    w1 = rng.normal(0, 1, (c, 3, 3, 3)) * rng.uniform(0.05, 5, (c, 1, 1, 1))  # unbalanced channels
    w2 = rng.normal(0, 1, (c, 1, 3, 3)) if depthwise else rng.normal(0, 1, (4, c, 1, 1))
    inits = [
        numpy_helper.from_array(w1.astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), "b1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1] * 4, name="c1")]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["h"], ["a"], name="act"))
    else:
        inits += [
            numpy_helper.from_array(np.array(0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6, np.float32), "hi"),
        ]
        nodes.append(helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act"))
    nodes.append(
        helper.make_node(
            "Conv",
            ["a", "w2"],
            ["y"],
            pads=[1] * 4 if depthwise else [0] * 4,
            group=c if depthwise else 1,
            name="c2",
        )
    )
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("depthwise", [False, True])
def test_function_kept_and_ranges_equalized(depthwise):
    proto = _chain(depthwise)
    model = ir.from_proto(proto)
    p = CrossLayerEqualizationPass()
    assert p(model).modified and p.pairs == 1
    out = to_proto(model)
    x = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(run_model(out, x)[0], run_model(proto, x)[0], rtol=1e-4, atol=1e-4)
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    r1 = np.abs(inits["w1"]).reshape(6, -1).max(1)
    w2 = inits["w2"]
    r2 = np.abs(w2).reshape(6, -1).max(1) if depthwise else np.abs(w2).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-4)
    before = np.abs(numpy_helper.to_array(proto.graph.initializer[0])).reshape(6, -1).max(1)
    assert r1.max() / r1.min() < before.max() / before.min()


def test_relu6_pairs_are_kept_unless_replacement_is_asked():
    proto = _chain(False, act="Clip")
    model = ir.from_proto(proto)
    assert CrossLayerEqualizationPass()(model).modified is False
    replace = CrossLayerEqualizationPass(relu6="replace")
    assert replace(model).modified and replace.replaced_clips == ["act"] and replace.pairs == 1
    assert "Relu" in [n.op_type for n in model.graph]
