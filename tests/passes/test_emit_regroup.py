"""RegroupConvPass: a grouped Conv with few channels per group is written with neighbouring
groups merged (zero weights between them), so ORT's int8 Conv takes a fast path; the written
model computes what it computed before; depthwise and wide groups, 16-bit activations and
shared weights are left as they are."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.passes import emit_regroup
from faaq_onnx.passes.emit_regroup import regroup_factor, regrouped_codes
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.weights import QuantizedWeight
from faaq_onnx.runtime.kernels import kernel_report


@pytest.mark.parametrize(
    "groups,per_in,per_out,k",
    [
        (32, 1, 2, 8),  # depthwise with a channel multiplier
        (16, 2, 2, 4),
        (8, 4, 4, 2),
        (2, 2, 2, 2),  # not enough groups to reach 8: all merged, a full Conv
        (32, 1, 1, None),  # depthwise: fast already
        (4, 8, 8, None),
        (1, 32, 32, None),
    ],
)
def test_how_many_groups_are_merged(groups, per_in, per_out, k):
    assert regroup_factor(groups, per_in, per_out) == k


def test_padded_codes_dequantize_to_zero_and_the_conv_is_the_same():
    """Asymmetric per-channel codes: each padded block holds its channel's zero point."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    cout, per_in, groups, k = 8, 2, 4, 2
    fmt = IntFormat(8, signed=False)
    q = rng.integers(0, 256, (cout, per_in, 3, 3)).astype(np.int64)
    zp = rng.integers(100, 150, cout).astype(np.int64)
    qw = QuantizedWeight(q, rng.uniform(0.01, 0.02, cout).astype(np.float32), zp, 0, None, fmt)
    wide = QuantizedWeight(regrouped_codes(qw, groups, k), qw.scale, zp, 0, None, fmt)

    def conv(w, g):
        node = helper.make_node("Conv", ["x", "w"], ["y"], group=g, pads=[1, 1, 1, 1])
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, groups * per_in, 5, 5])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w.astype(np.float32), "w")],
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    x = rng.standard_normal((1, groups * per_in, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(
        conv(wide.dequantized(), groups // k), conv(qw.dequantized(), groups), atol=1e-5
    )


def _multiplier_net(shared: bool = False) -> onnx.ModelProto:
    """Conv 1x1 -> Relu -> depthwise 3x3 with a channel multiplier of 2 -> Relu -> Conv 1x1."""
    rng = np.random.default_rng(1)
    c = 16
    inits = {
        "w0": rng.standard_normal((c, c, 1, 1)).astype(np.float32) * 0.3,
        "wd": rng.standard_normal((2 * c, 1, 3, 3)).astype(np.float32) * 0.3,
        "w2": rng.standard_normal((8, 2 * c, 1, 1)).astype(np.float32) * 0.3,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="pre"),
        helper.make_node("Relu", ["a"], ["r"], name="relu0"),
        helper.make_node("Conv", ["r", "wd"], ["d"], name="dw", group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["rd"], name="relu1"),
        helper.make_node("Conv", ["rd", "w2"], ["y"], name="post"),
    ]
    outs = ["y"]
    if shared:  # a second Conv reads the same depthwise weight
        nodes.append(helper.make_node("Conv", ["r", "wd"], ["d2"], name="dw2", group=c))
        outs.append("d2")
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 12, 12])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return onnx.shape_inference.infer_shapes(m)


def _groups(path) -> dict[str, int]:
    m = onnx.load(str(path))
    return {
        n.name: next((a.i for a in n.attribute if a.name == "group"), 1)
        for n in m.graph.node
        if n.op_type == "Conv"
    }


def _run_unoptimized(path, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_a_channel_multiplier_conv_is_written_regrouped_and_computes_the_same(
    tmp_path, monkeypatch, scheme
):
    src = tmp_path / "m.onnx"
    onnx.save(_multiplier_net(), src)
    calib = {"x": np.random.default_rng(2).standard_normal((16, 16, 12, 12)).astype(np.float32)}
    config = QuantConfig(scheme=scheme, progress=False, optimize="none")
    result = quantize(str(src), calib, str(tmp_path / "r.onnx"), config)
    assert result.report["regrouped_convs"] == {"dw": {"groups": 16, "merged": 8}}
    assert _groups(tmp_path / "r.onnx")["dw"] == 2
    runs = {
        q["node"]: q["runs_as"] for q in kernel_report(str(tmp_path / "r.onnx"))["quantized_nodes"]
    }
    assert runs["dw"] == "QLinearConv"

    monkeypatch.setattr(emit_regroup, "regroup_factor", lambda *a: None)
    quantize(str(src), calib, str(tmp_path / "p.onnx"), config)
    assert _groups(tmp_path / "p.onnx")["dw"] == 16
    feeds = {"x": calib["x"][:1]}
    got, want = (
        _run_unoptimized(tmp_path / "r.onnx", feeds),
        _run_unoptimized(tmp_path / "p.onnx", feeds),
    )
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


def test_16_bit_activations_and_shared_weights_are_left_as_they_are(tmp_path):
    src = tmp_path / "m.onnx"
    calib = {"x": np.random.default_rng(2).standard_normal((8, 16, 12, 12)).astype(np.float32)}
    onnx.save(_multiplier_net(), src)
    result = quantize(str(src), calib, None, QuantConfig(scheme="w8a16", progress=False))
    assert result.report["regrouped_convs"] == {}
    onnx.save(_multiplier_net(shared=True), src)
    result = quantize(str(src), calib, None, QuantConfig(scheme="w8a8", progress=False))
    assert result.report["regrouped_convs"] == {}
