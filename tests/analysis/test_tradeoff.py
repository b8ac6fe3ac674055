"""analysis/tradeoff.py on a stand-in compilation with a known cost per bit: each point's numbers,
the sweep of BOPs budgets, and the figures' pixel sizes (figsize x dpi)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from faaq_onnx.analysis import tradeoff as tr
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup
from faaq_onnx.plan import BitPlan

W4A8, W8A8, W8A16 = Candidate(4, 8), Candidate(8, 8), Candidate(8, 16)
GROUPS = {
    "g:a": QuantizerGroup("g:a", "conv", ["a"], ["wa"], ["act:a"], 100, 10),
    "g:b": QuantizerGroup("g:b", "conv", ["b"], ["wb"], ["act:b"], 300, 30),
}


class Costs:
    """BOPs = Σ macs · w · a; bytes = Σ params · w / 8; other_bytes fixed."""

    def __init__(self, kind):
        self.kind, self.other_bytes = kind, 1000

    def plan_cost(self, choices):
        if self.kind == "bops":
            return sum(GROUPS[g].macs * c.w * c.a for g, c in choices.items())
        return sum(GROUPS[g].weight_params * c.w / 8 for g, c in choices.items())


class Comp:
    def __init__(self, latency=None, table="table"):
        self.qgraph = QuantizerGraph({}, {}, GROUPS)
        self.candidates = [W4A8, W8A8, W8A16]
        self.table, self.latency = table, latency
        self.allocated = []

    def cost_model(self, budget):
        return Costs(budget.kind)

    def uniform(self, cand):
        return BitPlan.uniform(self.qgraph, cand)

    def measure(self, plan):
        bits = sum(c.w for c in plan.choices.values())
        return {"sqnr_db": 2.5 * bits, "kl": 1.0 / bits}

    def allocate(self, budget, metric, method):
        self.allocated.append((budget.kind, budget.value, metric, method))
        return SimpleNamespace(plan=BitPlan({"g:a": W4A8, "g:b": W8A8}))


def test_plan_point_numbers():
    comp = Comp()
    plan = BitPlan({"g:a": W4A8, "g:b": W8A8})
    p = tr.plan_point(comp, plan, "mixed", accuracy=lambda ch: 0.5 if ch is plan.choices else 0)
    ref = 100 * 64 + 300 * 64
    cost = 100 * 32 + 300 * 64
    assert p["label"] == "mixed"
    assert p["model_bytes"] == 10 * 4 / 8 + 30 * 8 / 8 + 1000
    assert p["relative_bops"] == pytest.approx(cost / ref)
    assert p["relative_bops_w8a16"] == pytest.approx(cost / (2 * ref))
    assert p["top1"] == 0.5
    assert p["avg_weight_bits"] == pytest.approx((4 * 10 + 8 * 30) / 40)
    assert (p["sqnr_db"], p["kl"]) == (30.0, 1 / 12)
    assert p["plan"] == {"g:a": "w4a8", "g:b": "w8a8"}
    assert "latency_ms" not in p
    lat = SimpleNamespace(plan_ms=lambda choices, ref: 1.5 if ref == W8A8 else -1)
    q = tr.plan_point(Comp(latency=lat), plan, "x")
    assert q["latency_ms"] == 1.5 and "top1" not in q


def test_tradeoff_sweeps_bops_budgets_between_the_cheapest_and_dearest_plans():
    comp = Comp()
    seen = []

    def accuracy(choices):
        seen.append(choices)
        return 0.9 if choices is None else 0.8

    out = tr.tradeoff(comp, metric="kl", points=3, accuracy=accuracy)
    assert out["metric"] == "kl" and out["float_top1"] == 0.9 and seen[0] is None
    assert [p["label"] for p in out["uniform"]] == ["w4a8", "w8a8", "w8a16"]
    ref = 400 * 64
    lo, hi = (400 * 32) / ref, (400 * 128) / ref  # all w4a8 .. all w8a16
    budgets = [v for kind, v, _, m in comp.allocated if m == "greedy"]
    assert all(kind == "bops" for kind, *_ in comp.allocated)
    assert budgets == pytest.approx([r * 1.0000001 for r in (lo, (lo + hi) / 2, hi)], rel=1e-12)
    assert [m for *_, m in comp.allocated] == ["greedy", "knapsack"] * 3
    assert {metric for _, _, metric, _ in comp.allocated} == {"kl"}
    assert [p["label"] for p in out["knapsack"]] == [
        "knapsack bops<=0.500",
        "knapsack bops<=1.250",
        "knapsack bops<=2.000",
    ]
    assert len(out["greedy"]) == 3 and all(p["top1"] == 0.8 for p in out["greedy"])
    assert "float_top1" not in tr.tradeoff(Comp(), points=2)


def test_tradeoff_needs_the_sensitivity_table():
    with pytest.raises(FaaqError, match="run the sensitivity stage first"):
        tr.tradeoff(Comp(table=None))


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_tradeoff_figure_size_follows_its_panels(tmp_path):
    pytest.importorskip("matplotlib")
    comp = Comp()
    curve = tr.tradeoff(comp, points=2)
    tr.plot_tradeoff(curve, tmp_path / "a.png")
    assert png_size(tmp_path / "a.png") == (round(5.5 * 2 * 110), round(4.2 * 110))
    lat = SimpleNamespace(plan_ms=lambda choices, ref: 1.0)
    curve = tr.tradeoff(Comp(latency=lat), points=2, accuracy=lambda ch: 0.5)
    tr.plot_tradeoff(curve, tmp_path / "b.png")
    assert png_size(tmp_path / "b.png") == (round(5.5 * 3 * 110), round(4.2 * 2 * 110))


def test_sensitivity_figure_size_follows_the_groups(tmp_path):
    pytest.importorskip("matplotlib")
    few = SimpleNamespace(table={"g:a": {"w4a8": {"sqnr_db": 20.0}, "w8a8": {"sqnr_db": 40.0}}})
    tr.plot_sensitivity(few, tmp_path / "few.png")
    assert png_size(tmp_path / "few.png") == (8 * 110, 3 * 110)  # at least 3 inches high
    many = SimpleNamespace(
        table={f"g:{i}": {"w4a8": {"kl": 0.1 * i}} for i in range(20)}
    )  # 0.28 * 20 + 1 = 6.6 inches
    tr.plot_sensitivity(many, tmp_path / "many.png", metric_key="kl")
    assert png_size(tmp_path / "many.png") == (8 * 110, round(6.6 * 110))


def test_measured_latency_times_each_points_model_against_the_users_file(monkeypatch):
    """One interleaved pass: the user's file first, then the model of every uniform and
    knapsack point (built from that point's plan, without bias correction); ratios map back."""
    from faaq_onnx.runtime import timing

    comp = Comp()
    curve = tr.tradeoff(comp, points=2)
    built = []

    def build(plan, bias_corrected=True):
        built.append((dict(plan.choices), bias_corrected))
        return f"model{len(built)}", None

    comp.build, comp.model_path, comp.float_proto = build, "/user/model.onnx", "FLOAT"
    comp.verify_inputs = {"x": __import__("numpy").zeros((3, 2), "float32")}
    seen = {}

    def fake_timing(models, feeds, ep="cpu", pairs=30):
        seen.update(models=models, batch=len(feeds["x"]), ep=ep, pairs=pairs)
        return [10.0] + [float(i + 1) for i in range(len(models) - 1)]

    monkeypatch.setattr(timing, "interleaved_median_ms", fake_timing)
    tr.measure_latency(comp, curve, ep="cpu", batch=2)
    points = curve["uniform"] + curve["knapsack"]
    assert seen["models"] == ["/user/model.onnx"] + [f"model{i + 1}" for i in range(len(points))]
    assert seen["batch"] == 2
    assert [c for c, _ in built] == [
        {g: Candidate.parse(c) for g, c in p["plan"].items()} for p in points
    ]
    assert not any(corrected for _, corrected in built)
    assert [p["measured_latency_ratio"] for p in points] == [
        pytest.approx((i + 1) / 10) for i in range(len(points))
    ]
    assert curve["float_latency_ms"] == 10.0
    assert all("measured_latency_ratio" not in p for p in curve["greedy"])
