"""HardSwish split into x · HardSigmoid(x): the same function, and an integer Mul once quantized."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.graph import to_proto
from faaq_onnx.passes.decompose_hardswish import DecomposeHardSwishPass
from tests.conftest import optimized_op_types, run_model


def hardswish_net(output_is_hardswish: bool = False) -> onnx.ModelProto:
    """Conv -> HardSwish -> Conv (or HardSwish as the graph output), opset 17."""
    rng = np.random.default_rng(0)
    w1 = nh.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = nh.from_array(rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        h.make_node("HardSwish", ["c1"], ["hs"], name="hswish"),
    ]
    out = "hs"
    if not output_is_hardswish:
        nodes.append(h.make_node("Conv", ["hs", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"))
        out = "y"
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [h.make_tensor_value_info(out, T.FLOAT, ["N", 4 if out == "y" else 8, 8, 8])],
        [w1, w2] if not output_is_hardswish else [w1],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_the_split_computes_hardswish_and_keeps_the_output_name():
    x = {"x": np.random.default_rng(1).normal(0, 4, (2, 3, 8, 8)).astype(np.float32)}
    for as_output in (False, True):
        model = ir.from_proto(hardswish_net(as_output))
        assert DecomposeHardSwishPass()(model).modified
        proto = to_proto(model)
        assert [n.op_type for n in proto.graph.node].count("HardSwish") == 0
        assert {"HardSigmoid", "Mul"} <= {n.op_type for n in proto.graph.node}
        assert [o.name for o in proto.graph.output] == ["hs" if as_output else "y"]
        np.testing.assert_allclose(
            run_model(proto, x)[0], run_model(hardswish_net(as_output), x)[0], atol=1e-5
        )


def test_quantized_hardswish_runs_as_an_integer_mul(tmp_path):
    """As in ORT's own quantized models: HardSigmoid in float, then QLinearMul, no float Mul."""
    src = tmp_path / "hs.onnx"
    onnx.save(hardswish_net(), src)
    calib = {"x": np.random.default_rng(2).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)}
    out = tmp_path / "q.onnx"
    quantize(str(src), calib, str(out), QuantConfig(scheme="w8a8", progress=False))
    ops = optimized_op_types(str(out))
    assert "QLinearMul" in ops and "Mul" not in ops and "HardSwish" not in ops, ops


def written_out_net(last: str = "Div", shared_add: bool = False) -> onnx.ModelProto:
    """Conv -> x * Clip(x + 3, 0, 6) / 6 -> Conv, as Paddle writes HardSwish (opset 13)."""
    rng = np.random.default_rng(0)
    c = {
        "w1": rng.normal(0, 0.4, (8, 3, 3, 3)),
        "w2": rng.normal(0, 0.3, (4, 8, 3, 3)),
        "three": np.array(3.0),
        "zero": np.array(0.0),
        "six": np.array(6.0),
        "sixth": np.array(1.0 / 6.0),
    }
    inits = [nh.from_array(np.asarray(v, np.float32), k) for k, v in c.items()]
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        h.make_node("Add", ["c1", "three"], ["a"], name="add3"),
        h.make_node("Clip", ["a", "zero", "six"], ["r6"], name="relu6"),
        h.make_node("Mul", ["r6", "c1"], ["m"], name="mul"),
        h.make_node(last, ["m", "six" if last == "Div" else "sixth"], ["hs"], name="scale"),
        h.make_node("Conv", ["hs", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    outputs = [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 8, 8])]
    if shared_add:  # the x + 3 is read elsewhere too: not a HardSwish's own value
        outputs.append(h.make_tensor_value_info("a", T.FLOAT, ["N", 8, 8, 8]))
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])], outputs, inits
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_written_out_hardswish_becomes_x_times_hardsigmoid():
    from faaq_onnx.passes.decompose_hardswish import WrittenOutHardSwishPass

    x = {"x": np.random.default_rng(1).normal(0, 4, (2, 3, 8, 8)).astype(np.float32)}
    for last in ("Div", "Mul"):
        model = ir.from_proto(written_out_net(last))
        assert WrittenOutHardSwishPass()(model).modified
        proto = to_proto(model)
        ops = [n.op_type for n in proto.graph.node]
        assert ops == ["Conv", "HardSigmoid", "Mul", "Conv"], ops
        mul = proto.graph.node[2]
        assert set(mul.input) == {"c1", proto.graph.node[1].output[0]}
        np.testing.assert_allclose(
            run_model(proto, x)[0], run_model(written_out_net(last), x)[0], atol=1e-4
        )
    shared = ir.from_proto(written_out_net(shared_add=True))
    assert not WrittenOutHardSwishPass()(shared).modified


def test_quantized_written_out_hardswish_runs_as_an_integer_mul(tmp_path):
    src = tmp_path / "hs.onnx"
    onnx.save(written_out_net(), src)
    calib = {"x": np.random.default_rng(2).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)}
    out = tmp_path / "q.onnx"
    quantize(str(src), calib, str(out), QuantConfig(scheme="w8a8", progress=False))
    ops = optimized_op_types(str(out))
    assert "QLinearMul" in ops and "Mul" not in ops and "Div" not in ops, ops
