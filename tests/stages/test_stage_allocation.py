"""stages/allocation.py on a stand-in compilation: the cost model it builds for each budget,
uniform plans with --first-last, the smallest weight container, and what allocation is fed."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import helper, numpy_helper

import faaq_onnx.analysis.latency as latency_mod
from faaq_onnx.analysis.budget import Budget
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup
from faaq_onnx.stages import allocation as al
from faaq_onnx.stages.allocation import AllocationStage

GROUPS = {
    "g:first": QuantizerGroup("g:first", "conv", ["c1"], ["w1"], ["act:x"], 10, 10),
    "g:mid": QuantizerGroup("g:mid", "conv", ["c2"], ["w2"], ["act:y"], 10, 10),
    "g:last": QuantizerGroup("g:last", "gemm", ["fc"], ["w3"], ["act:z"], 10, 10),
}


def comp(**cfg):
    stages = []

    @contextlib.contextmanager
    def stage(name):
        stages.append(name)
        yield

    inits = [
        numpy_helper.from_array(np.zeros(10, np.float32), "w1"),  # quantized: not "other"
        numpy_helper.from_array(np.zeros(6, np.float32), "bias"),  # raw data: 24 bytes
        helper.make_tensor("shape", 7, [2], [1, -1]),  # int64 data, no raw data: ByteSize
    ]
    nodes = [helper.make_node("Relu", ["a"], ["b"], name=n) for n in ("c1", "c2", "fc")]
    config = dict(
        weight_symmetric=True,
        weight_granularity="per-channel",
        block_size=32,
        weight_storage="cast",
        first_last=None,
        first_last_by_effort=False,
    )
    config.update(cfg)
    return SimpleNamespace(
        qgraph=QuantizerGraph({"w1": None, "w2": None, "w3": None}, {}, GROUPS),
        float_proto=SimpleNamespace(graph=SimpleNamespace(initializer=inits, node=nodes)),
        config=SimpleNamespace(**config),
        int2=True,
        candidates=None,
        table=None,
        stage=stage,
        stages=stages,
    )


@pytest.fixture
def cost_models(monkeypatch):
    made = []

    def fake(qgraph, kind, **kw):
        made.append((kind, kw))
        return "costs"

    monkeypatch.setattr(al, "CostModel", fake)
    return made


def test_cost_model_counts_the_other_initializers_bytes(cost_models):
    c = comp()
    stage = AllocationStage(c)
    stage.latency = "measured"
    assert stage.cost_model(Budget.parse("size-mb=2")) == "costs"
    kind, kw = cost_models[-1]
    shape_bytes = c.float_proto.graph.initializer[2].ByteSize()
    assert kind == "size-mb" and kw["other_bytes"] == 24 + shape_bytes
    assert kw["latency"] is None and kw["min_container"] == 2 and kw["block_size"] == 32
    assert kw["reference"] == Candidate(8, 8) and kw["bits"] == "stored"
    assert kw["symmetric_weights"] is True and kw["granularity"] == "per-channel"
    stage.cost_model(Budget.parse("sqnr-db=30"))
    assert cost_models[-1][0] == "bops"  # a floor is costed in BOPs
    stage.cost_model(Budget.parse("latency=0.8"))
    assert cost_models[-1][0] == "latency" and cost_models[-1][1]["latency"] == "measured"
    stage.cost_model(Budget.parse("bops=0.5@w8a16"))
    assert cost_models[-1][1]["reference"] == Candidate(8, 16)


@pytest.mark.parametrize(
    "int2,storage,granularity,want",
    [
        (True, "cast", "per-channel", 2),
        (False, "cast", "per-channel", 4),
        (True, "dequant", "per-channel", 4),
        (True, "cast", "block", 4),
    ],
)
def test_smallest_weight_container(int2, storage, granularity, want):
    c = comp(weight_storage=storage, weight_granularity=granularity)
    c.int2 = int2
    assert AllocationStage(c).weight_min_container == want


def test_uniform_plans_and_first_last():
    plan = AllocationStage(comp()).uniform("w4a8")
    assert set(plan.choices.values()) == {Candidate(4, 8)} and set(plan.choices) == set(GROUPS)
    assert "first_last" not in plan.meta
    c = comp(first_last=Candidate(8, 8))
    plan = AllocationStage(c).uniform(Candidate(4, 8))
    assert plan.choices == {
        "g:first": Candidate(8, 8),
        "g:mid": Candidate(4, 8),
        "g:last": Candidate(8, 8),
    }
    assert plan.meta["first_last"] == "w8a8" and "first_last_by" not in plan.meta
    by_best = AllocationStage(comp(first_last=Candidate(8, 8), first_last_by_effort=True))
    assert by_best.uniform("w4a8").meta["first_last_by"] == "--effort best"
    same = AllocationStage(c).uniform("w8a8")
    assert "first_last" not in same.meta and set(same.choices.values()) == {Candidate(8, 8)}


def test_latency_needs_candidates_first(monkeypatch):
    c = comp()
    with pytest.raises(FaaqError, match=r"choose candidates .* before measuring latency"):
        AllocationStage(c).latency_table()
    c.candidates = [Candidate(8, 8)]
    seen = []
    monkeypatch.setattr(
        latency_mod,
        "build_latency_table",
        lambda comp_, cands, ep, batch, cache_dir=None: seen.append((ep, batch, cache_dir)) or "t",
    )
    stage = AllocationStage(c)
    assert stage.latency_table("cuda", 4, "cache") == "t" and stage.latency == "t"
    assert seen == [("cuda", 4, "cache")] and c.stages == ["latency_profile"]
    stage.latency_table()  # by default: the CPU, one sample per run, the default cache
    assert seen[1:] == [("cpu", 1, None)]


def test_allocate_feeds_the_allocator(monkeypatch, cost_models):
    c = comp()
    with pytest.raises(FaaqError, match="run the sensitivity stage before allocating"):
        AllocationStage(c).allocate("avg-bits=4")
    c.table, c.candidates = "table", [Candidate(4, 8)]
    c.prober = SimpleNamespace(measure=lambda ch: ("measured", ch))
    calls = []

    def allocate(qgraph, table, cands, budget, metric, allocator, costs, **kw):
        calls.append((budget.kind, metric, allocator, costs, kw))
        return "alloc"

    monkeypatch.setattr(al, "allocate", allocate)
    stage = AllocationStage(c)
    assert stage.allocate("avg-bits=4", "fit", "greedy") == "alloc"
    kind, metric, allocator, costs, kw = calls[-1]
    assert (kind, metric, allocator, costs) == ("avg-bits", "fit", "greedy", "costs")
    # FIT with a cost budget
    assert kw == {"measure": None, "accuracy": None, "joint": False, "uniform_check": True}
    assert c.stages == ["allocate"]
    stage.allocate(Budget.parse("avg-bits=4"), "sqnr")
    kw = calls[-1][4]
    assert kw["joint"] is True and kw["measure"]({"g": 1}) == ("measured", {"g": 1})
    stage.allocate("sqnr-db=30", "fit")
    assert calls[-1][4]["joint"] is True  # a floor is always measured
    stage.allocate("avg-bits=4", "sqnr", "knapsack", None, False)  # trade-off curves: no check
    assert calls[-1][4]["uniform_check"] is False
    monkeypatch.setattr(stage, "labeled_accuracy", lambda labeled: ("accuracy of", labeled))
    stage.allocate("max-drop=1", "sqnr", labeled="xy")
    assert calls[-1][4]["accuracy"] == ("accuracy of", "xy")
