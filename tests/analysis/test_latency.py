"""Latency tables: kernel classes, the plan estimate, which group each emitted node's time goes
to, the cache key and the batched feeds."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from faaq_onnx.analysis.latency import (
    LatencyTable,
    _batch_feeds,
    attribute_nodes,
    kernel_class,
    latency_key,
)
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup


@pytest.mark.parametrize(
    "cand, config, cls",
    [
        ("float", {}, "float"),
        ("w4", {}, "weight-only-w4"),
        ("w8a32", {}, "weight-only-w8"),
        ("w4a8", {}, "int8w/a8"),
        ("w8a8", {}, "int8w/a8"),
        ("w2a16", {}, "int8w/a16"),
        ("w8a6", {}, "int8w/a6-clip"),
        ("w8a7", {}, "int8w/a7-clip"),
        ("w4a8", {"weight_granularity": "block"}, "block-w4/a8"),
        ("w4a8", {"weight_storage": "dequant"}, "dq-w4/a8"),
        ("w3a16", {"weight_storage": "dequant"}, "dq-w3/a16"),
        ("w5a8", {"weight_storage": "dequant"}, "int8w/a8"),
        ("w4", {"weight_granularity": "block"}, "weight-only-w4"),
    ],
)
def test_kernel_class(cand, config, cls):
    """Cast-stored weights of any width run the int8 kernel; A16 is float between Q/DQ; activations
    below 8 bits carry a Clip; blocked and DQ-int4 weights have their own kernels."""
    assert kernel_class(Candidate.parse(cand), QuantConfig(**config)) == cls


def _table():
    return LatencyTable(
        group_us={
            "g1": {"int8w/a8": 100.0, "int8w/a16": 300.0},
            "g2": {"int8w/a8": 50.0, "int8w/a16": 80.0},
        },
        other_us={"int8w/a8": 20.0, "int8w/a16": 30.0},
        wall_ms={"int8w/a8": 0.2, "int8w/a16": 0.5},
        classes={"w8a8": "int8w/a8", "w4a8": "int8w/a8", "w8a16": "int8w/a16"},
        meta={"ep": "cpu"},
    )


def test_plan_estimate_is_the_reference_overhead_plus_the_chosen_group_costs():
    """W8A8 wall 200 us, its groups 150 us: 50 us overhead; g1 at A16 (300) + g2 at W4A8 (50)."""
    t = _table()
    w8a8, w4a8, w8a16 = Candidate(8, 8), Candidate(4, 8), Candidate(8, 16)
    assert t.cost("g1", w8a16) == 300.0 and t.cost("g2", w4a8) == 50.0
    assert t.plan_ms({"g1": w8a16, "g2": w4a8}, w8a8) == pytest.approx((50 + 300 + 50) / 1e3)
    assert t.plan_ms({"g1": w8a8, "g2": w8a8}, w8a8) == pytest.approx(0.2)
    # against the A16 model: 500 - 380 = 120 us of overhead
    assert t.plan_ms({"g1": w8a8, "g2": w8a8}, w8a16) == pytest.approx((120 + 150) / 1e3)


def test_table_round_trips_through_a_dict():
    t = _table()
    back = LatencyTable.from_dict(t.to_dict())
    assert back == t
    d = t.to_dict()
    del d["meta"]
    assert LatencyTable.from_dict(d).meta == {}


def _qgraph():
    def g(name, ops):
        return QuantizerGroup(name, "conv", ops, [], [], 0, 0)

    return QuantizerGraph({}, {}, {"g:a": g("g:a", ["conv_a"]), "g:b": g("g:b", ["conv_b", "add"])})


def test_each_emitted_node_goes_to_the_group_it_serves():
    """Q/DQ/Clip/Cast go to the first group downstream (through pass-through ops, six steps at
    most); a pass-through op (Relu, Reshape) goes to the op it follows back to; others to none."""
    n = helper.make_node
    nodes = [
        n("QuantizeLinear", ["x", "s"], ["xq"], name="q_in"),
        n("DequantizeLinear", ["xq", "s"], ["xd"], name="dq_in"),
        n("Cast", ["w"], ["wc"], name="cast_w"),
        n("DequantizeLinear", ["wc", "s"], ["wd"], name="dq_w"),
        n("Conv", ["xd", "wd"], ["a"], name="conv_a"),
        n("Relu", ["a"], ["ar"], name="relu_a"),
        n("QuantizeLinear", ["ar", "s"], ["aq"], name="q_a"),
        n("DequantizeLinear", ["aq", "s"], ["ad"], name="dq_a"),
        n("Reshape", ["ad", "shape"], ["r1"], name="reshape"),
        n("Conv", ["r1", "wd"], ["b"], name="conv_b"),
        n("Add", ["b", "b"], ["c"], name="add"),
        n("Softmax", ["c"], ["y"], name="softmax"),
        n("QuantizeLinear", ["y", "s"], ["yq"], name="q_out"),
    ]

    def chain(steps):  # a Q, `steps` Identity nodes, then a group's op
        out = [n("QuantizeLinear", ["x", "s"], ["k0"], name="q_far")]
        out += [n("Identity", [f"k{i}"], [f"k{i + 1}"], name=f"id{i}") for i in range(steps)]
        return [*out, n("Conv", [f"k{steps}", "wd"], ["z"], name="conv_b")]

    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    got = attribute_nodes(model, _qgraph())
    assert got == {
        "q_in": "g:a",
        "dq_in": "g:a",
        "cast_w": "g:a",  # its first reader is conv_a
        "dq_w": "g:a",
        "conv_a": "g:a",
        "relu_a": "g:a",
        "q_a": "g:b",  # through Reshape to conv_b
        "dq_a": "g:b",
        "reshape": "g:a",  # pass-through: the op it follows back to
        "conv_b": "g:b",
        "add": "g:b",
    }

    def q_far(steps):
        model = helper.make_model(helper.make_graph(chain(steps), "g", [], []))
        return attribute_nodes(model, _qgraph()).get("q_far")

    assert q_far(5) == "g:b" and q_far(6) is None  # six steps downstream at most


def test_batched_feeds_repeat_or_cut_the_samples():
    x = {"a": np.arange(3 * 2).reshape(3, 2), "b": np.arange(3)}
    out = _batch_feeds(x, 2)
    np.testing.assert_array_equal(out["a"], [[0, 1], [2, 3]])
    out = _batch_feeds(x, 7)
    np.testing.assert_array_equal(out["b"], [0, 1, 2, 0, 1, 2, 0])
    assert out["a"].shape == (7, 2) and out["a"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(_batch_feeds(x, 3)["b"], [0, 1, 2])
    np.testing.assert_array_equal(_batch_feeds({"b": np.arange(1)}, 3)["b"], [0, 0, 0])


def test_latency_key_follows_what_changes_the_kernels_only():
    proto = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )
    c = [Candidate(8, 8), Candidate(4, 8)]
    base = latency_key(proto, QuantConfig(), c, "cpu", 1, None)
    assert len(base) == 24
    same = [
        latency_key(proto, QuantConfig(progress=False, verify_samples=9), c, "cpu", 1, None),
        latency_key(proto, QuantConfig(scheme="w4a8", preset="cifar10"), c, "cpu", 1, None),
        latency_key(proto, QuantConfig(), c[::-1], "cpu", 1, None),
    ]
    assert same == [base] * 3
    other = [
        latency_key(proto, QuantConfig(weight_storage="dequant"), c, "cpu", 1, None),
        latency_key(proto, QuantConfig(), c[:1], "cpu", 1, None),
        latency_key(proto, QuantConfig(), c, "cuda", 1, None),
        latency_key(proto, QuantConfig(), c, "cpu", 2, None),
        latency_key(proto, QuantConfig(), c, "cpu", 1, 2),
    ]
    assert len({base, *other}) == 6
