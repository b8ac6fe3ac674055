"""faaq_onnx.weight_cache: round to nearest once per (weight, bits), learned results kept apart."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.groups import QuantizerGraph, WeightQuantizer
from faaq_onnx.weight_cache import WeightCache, quantize_weights

W = np.array([[0.5, -1.0, 0.3], [2.0, 0.1, -0.7]], np.float32)  # (2 outputs, 3 inputs)


def cache(reduce_range=False, granularity="per-channel"):
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(W * 3, "v")],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    qg = QuantizerGraph(
        weights={
            "w": WeightQuantizer("w", ["fc"], "Gemm", (2, 3), 0, 1, 6),
            "v": WeightQuantizer("v", ["fc"], "Gemm", (2, 3), 0, 1, 6),
        },
        activations={},
        groups={},
    )
    config = SimpleNamespace(
        weight_granularity=granularity,
        block_size=32,
        weight_symmetric=True,
        symmetric_weights=lambda bits: True,
        weight_range="minmax",
        weights_reduce_range=reduce_range,
    )
    return WeightCache(model, qg, config)


def test_nearest_rounding_per_channel_once_per_bits():
    c = cache()
    np.testing.assert_array_equal(c.float_weight("w"), W)
    np.testing.assert_array_equal(c.float_initializer("v"), W * 3)
    q4 = c.get("w", 4)
    # symmetric per output channel (axis 0) on [-8, 7]: the scale that fits both ends
    scale = np.maximum(W.max(1) / 7, -W.min(1) / 8)
    np.testing.assert_allclose(q4.scale.reshape(-1), scale, rtol=1e-6)
    np.testing.assert_array_equal(q4.q, np.round(W / scale[:, None]))
    assert q4.method == "nearest" and q4.fmt.bits == 4
    assert c.get("w", 4) is q4  # computed once
    assert c.get("w", 8) is not q4 and c.get("w", 8).fmt.bits == 8


def test_reduce_range_gives_8_bit_weights_7_bits_only():
    c = cache(reduce_range=True)
    assert (c.range_bits(8), c.range_bits(4), c.range_bits(16)) == (7, 4, 16)
    assert c.get("w", 8).fmt.bits == 7
    plain = cache()
    assert plain.range_bits(8) == 8 and plain.get("w", 8).fmt.bits == 8


def test_learned_entries_are_tracked_and_survive_forgetting():
    c = cache()
    near = c.get("w", 4)
    snap = c.snapshot()
    assert snap == {("w", 4): near} and c.changed_since(snap) == {}
    learned = replace(near, method="gptq")
    c.put("w", 4, learned)
    c.get("v", 4)  # a nearest entry computed after the snapshot is not a change
    assert c.changed_since(snap) == {("w", 4): learned}
    assert c.get("w", 4) is learned
    c.put("v", 2, replace(c.get("v", 2), method="adaround"))
    assert c.key() == "v@2:adaround,w@4:gptq"
    c.forget_nearest()
    assert set(c.snapshot()) == {("w", 4), ("v", 2)}
    c.restore(snap)
    assert c.get("w", 4) is near and set(c.snapshot()) == {("w", 4)}


def test_plan_weights_are_the_cached_ones():
    c = cache()

    class Plan:
        def weight_bits(self, qgraph, quantized_only=False):
            assert qgraph is c.qgraph and quantized_only
            return {"w": 4, "v": 8}

    got = quantize_weights(c, Plan())
    assert got == {"w": c.get("w", 4), "v": c.get("v", 8)}
