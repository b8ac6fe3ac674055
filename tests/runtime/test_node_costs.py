"""Node costs: executed nodes mapped back to the input graph's, and the microseconds each
gets from the profile."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from faaq_onnx.runtime import node_costs
from faaq_onnx.runtime.node_costs import NodeCosts, map_executed_to_original, measure_node_costs


def _model(nodes):
    g = helper.make_graph(nodes, "g", [], [])
    return helper.make_model(g)


def test_executed_nodes_map_back_by_name_suffix_prefix_or_output():
    original = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            helper.make_node("MatMul", ["c", "w"], ["m"], name="mm"),
            helper.make_node("Relu", ["m"], ["r"], name="relu"),
            helper.make_node("Add", ["r", "r"], ["a"], name="add"),
            helper.make_node("Sigmoid", ["a"], ["s"], name=""),
        ]
    )
    optimized = _model(
        [
            helper.make_node("Relu", ["m"], ["r"], name="relu"),
            helper.make_node("QLinearConv", ["x"], ["c"], name="conv_token_7"),
            helper.make_node("Conv", ["x"], ["c2"], name="conv_nchwc"),
            helper.make_node("MatMul", ["c"], ["m2"], name="mm/MatMulAddFusion/x"),
            helper.make_node("Reorder", ["x"], ["z"], name="a_nchwc"),  # named after tensor 'a'
            helper.make_node("Add", ["r"], ["a"], name="fused_by_output"),
            helper.make_node("Transpose", ["x"], ["t"], name="unplaced"),
            helper.make_node("Sigmoid", ["a"], ["s"], name="sig_fused"),
        ]
    )
    assert map_executed_to_original(original, optimized) == {
        "relu": "relu",
        "conv_token_7": "conv",
        "conv_nchwc": "conv",
        "mm/MatMulAddFusion/x": "mm",
        "a_nchwc": "add",
        "fused_by_output": "add",
    }


def test_costs_are_the_profiles_per_run_times_in_microseconds(monkeypatch):
    """Each executed node's ms per run (from the profile) becomes microseconds of the input node
    it maps to; what maps to none is 'other'; the wall time is the median of the timed runs."""
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Neg", ["r"], ["y"], name="neg"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    trace = {"top_nodes": [
        {"node": "relu", "ms_per_run": 0.25},
        {"node": "neg_token_1", "ms_per_run": 0.125},
        {"node": "neg", "ms_per_run": 0.5},
        {"node": "mystery", "ms_per_run": 0.0625},
    ]}  # fmt: skip
    seen = {}

    def fake(events, skip_runs, top):
        seen.update(skip_runs=skip_runs, top=top)
        return trace

    monkeypatch.setattr(node_costs, "aggregate_trace", fake)
    ticks = iter([0.0, 0.002, 1.0, 1.004, 2.0, 2.003])  # runs of 2, 4 and 3 ms
    monkeypatch.setattr(node_costs.time, "perf_counter", lambda: float(next(ticks)))
    costs = measure_node_costs(model, {"x": np.ones((1, 4), np.float32)}, runs=3, warmup=2)
    assert costs.per_node_us == {"relu": 250.0, "neg": 500.0}
    assert costs.other_us == 125.0 + 62.5  # not nodes of the graph ORT ran
    assert costs.wall_ms == pytest.approx(3.0)
    assert seen == {"skip_runs": 2, "top": 10**9}
    assert NodeCosts.from_dict(costs.to_dict()) == costs
