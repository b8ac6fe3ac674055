"""interpreter/graph.py: what check_nodes refuses (each message), trainable initializers, taps,
hooks and optional outputs when the graph runs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from faaq_onnx.interpreter import TorchGraph, UnsupportedOp  # noqa: E402
from faaq_onnx.interpreter.graph import check_nodes  # noqa: E402


def refused(node):
    with pytest.raises(UnsupportedOp) as e:
        check_nodes([node])
    return str(e.value)


def test_check_nodes_messages():
    assert refused(helper.make_node("Foo", ["x"], ["y"], name="n1")) == (
        "op 'Foo' (node 'n1') has no torch equivalent here"
    )
    assert refused(helper.make_node("Relu", ["x"], ["y"], name="n2", domain="com.x")) == (
        "op 'Relu' (node 'n2') has no torch equivalent here"
    )
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_UPPER")
    assert refused(conv) == (
        "op 'Conv' (node 'c'): auto_pad=b'SAME_UPPER' is not supported by the torch interpreter"
    )
    pad = helper.make_node("Pad", ["x", "p"], ["y"], name="p", mode="mirror")
    assert refused(pad) == "op 'Pad' (node 'p'): Pad mode 'mirror'"
    cast = helper.make_node("Cast", ["x"], ["y"], name="k", to=TensorProto.STRING)
    assert refused(cast) == "op 'Cast' (node 'k'): Cast to type 8"
    extra = helper.make_node("Relu", ["x"], ["y", "z"], name="r")
    assert (
        refused(extra)
        == "op 'Relu' (node 'r'): its output 'z' (beyond the first) is not computed here"
    )
    # accepted: explicit NOTSET, every Pad mode it knows, the Cast types it knows, empty extra outputs
    check_nodes(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="NOTSET"),
            *[
                helper.make_node("Pad", ["x", "p"], ["y"], mode=m)
                for m in ("constant", "edge", "reflect", "wrap")
            ],
            helper.make_node("Pad", ["x", "p"], ["y"]),
            *[helper.make_node("Cast", ["x"], ["y"], to=t) for t in (1, 6, 7, 9, 10, 11)],
            helper.make_node("Relu", ["x"], ["y", ""]),
            helper.make_node("Relu", ["x"], ["y"], domain="ai.onnx"),
        ]
    )


def model():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Add", ["r", "b"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [
            numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2) - 2, "w"),
            numpy_helper.from_array(np.float32([0.5, -0.5]), "b"),
        ],
    )
    return helper.make_model(g)


def test_trainable_initializers_taps_and_hooks():
    tg = TorchGraph(model(), trainable={"w"})
    assert set(tg.params) == {"w"} and tg.params["w"].requires_grad
    assert not tg.consts["b"].requires_grad and tg.outputs == ["y"]
    x = torch.tensor([[1.0, -1.0, 2.0], [0.5, 0.5, 0.5]], requires_grad=True)
    (y,), tapped = tg.run({"x": x}, taps={"h", "x", "nothing"})
    w = np.arange(6, dtype=np.float32).reshape(3, 2) - 2
    want = np.maximum(x.detach().numpy() @ w, 0) + np.float32([0.5, -0.5])
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-6)
    assert set(tapped) == {"h", "x"} and tapped["x"] is x
    y.sum().backward()
    assert tapped["h"].grad is not None  # retained on the tapped intermediate
    assert tg.params["w"].grad is not None
    (y2,), _ = tg.run({"x": x.detach()}, hooks={"r": lambda t: t * 0})
    np.testing.assert_allclose(y2.detach().numpy(), [[0.5, -0.5], [0.5, -0.5]])
    # without gradients a tapped intermediate is not kept (nothing to retain)
    frozen = TorchGraph(model())
    _, tapped = frozen.run({"x": torch.ones(2, 3)}, taps={"h"})
    assert tapped == {}


def test_a_node_whose_input_comes_later_is_named():
    m = model()
    m.graph.node[0].input[0] = "late"
    with pytest.raises(UnsupportedOp) as e:
        TorchGraph(m).run({"x": torch.ones(2, 3)})
    assert str(e.value) == "op 'MatMul' (node ''): input 'late' is not computed before it"


def test_a_runtime_failure_is_one_line():
    m = model()
    with pytest.raises(UnsupportedOp) as e:
        TorchGraph(m).run({"x": torch.ones(2, 5)})  # 5 columns cannot multiply a 3-row weight
    text = str(e.value)
    assert text.startswith("op 'MatMul' (node '') failed in the torch interpreter: ")
    assert "\n" not in text
