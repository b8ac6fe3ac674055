"""Budgets are promises about the file written: met as measured, or refused with no file."""


import pytest

from faaq_onnx import quantize
from faaq_onnx.analysis.budget import Budget
from faaq_onnx.analysis.metrics import sqnr_db
from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.guarantees import meets
from tests.conftest import run_model


def _cfg(**kw):
    return QuantConfig(progress=False, **kw)


def test_reachable_floor_holds_on_the_written_file(tiny_cnn, cnn_calib, tmp_path):
    out = tmp_path / "q.onnx"
    res = quantize(tiny_cnn, cnn_calib, out, _cfg(verify_samples=16, calib_size=32), budget="sqnr-db=20",
                   candidates="w4a8,w8a8", cache_dir=False)
    b = res.report["budget"]
    assert b["met"] and b["measured"] >= 20 and b["budget"] == "sqnr-db=20"
    # re-measure the written file on the held-out inputs ourselves
    held = res.report["calibration"]
    assert held["verification_held_out"] and held["samples"] == 32
    x = {"input": cnn_calib["input"][32:48]}
    assert sqnr_db(run_model(tiny_cnn, x)[0], run_model(str(out), x)[0]) >= 20


def test_unreachable_floor_fails_and_writes_nothing(tiny_cnn, cnn_calib, tmp_path):
    out = tmp_path / "q.onnx"
    with pytest.raises(FaaqError, match=r"cannot be met.*best plan measures sqnr-db=.*nearest feasible budget: "
                                        r"sqnr-db=\d+(\.\d)?\. Nothing was written"):
        quantize(tiny_cnn, cnn_calib, out, _cfg(), budget="sqnr-db=90", candidates="w4a8,w8a8", cache_dir=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_cnn.onnx"]


def test_floor_just_above_the_best_plan_is_refused_not_rounded(tiny_cnn, cnn_calib, tmp_path):
    """The old repair loop wrote a model below the floor and printed a budget nobody gave."""
    best = quantize(tiny_cnn, cnn_calib, config=_cfg(scheme="w8a16")).report["verify"]["outputs"]["logits"]["sqnr_db"]
    out = tmp_path / "q.onnx"
    with pytest.raises(FaaqError, match="cannot be met"):
        quantize(tiny_cnn, cnn_calib, out, _cfg(), budget=f"sqnr-db={best + 0.3:.2f}", candidates="w4a8,w8a8,w8a16",
                 cache_dir=False)
    assert not out.exists()


def test_avg_bits_budget_holds_in_stored_bits(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=_cfg(), budget="avg-bits=5", candidates="w4a8,w6a8,w8a8",
                   cache_dir=False)
    ws = res.report["verify"]["size"]["per_weight"].values()
    stored = sum(w["container_bits"] * w["elements"] for w in ws) / sum(w["elements"] for w in ws)
    assert stored <= 5 and res.report["budget"]["measured"] == pytest.approx(stored)
    # a 6-bit weight costs as much as an 8-bit one on disk, so the allocator never picks it
    assert all(c != "w6a8" for c in res.report["plan"]["choices"].values())


def test_size_budget_holds_on_the_bytes_written(tiny_mlp, mlp_calib, tmp_path):
    out = tmp_path / "q.onnx"
    w8 = quantize(tiny_mlp, mlp_calib, config=_cfg()).model.ByteSize()
    limit = (w8 - 600) / 1e6
    res = quantize(tiny_mlp, mlp_calib, out, _cfg(), budget=f"size-mb={limit:.6f}", candidates="w4a8,w8a8",
                   cache_dir=False)
    assert out.stat().st_size <= limit * 1e6
    assert res.report["budget"]["met"]


@pytest.mark.parametrize("kind,value,measured,ok", [
    ("sqnr-db", 30, 30.0, True), ("sqnr-db", 30, 29.99, False), ("max-drop", 0.5, 0.5, True),
    ("max-drop", 0.5, 0.51, False), ("avg-bits", 4, 4.0, True), ("avg-bits", 4, 4.01, False),
])
def test_meets_direction(kind, value, measured, ok):
    assert meets(Budget(kind, value), measured) is ok


def test_latency_budget_is_measured_and_reported(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=_cfg(), budget="latency=1.5", candidates="w8a8,w8a16",
                   cache_dir=False)
    b = res.report["budget"]
    assert b["kind"] == "latency" and b["met"] and b["measured"] <= 1.5 * 1.05
    assert "interleaved" in b["how"]


class _FakeResult:
    def __init__(self, plan):
        self.plan, self.report = plan, {}


class _FakeComp:
    """Just enough of a Compilation for the repair loop: plans the allocator proposes in
    turn, and an emitted model per plan whose measured value the test decides."""

    def __init__(self, proposals, groups, cands, costs=None):
        from types import SimpleNamespace

        self.proposals, self.candidates, self._costs = list(proposals), cands, costs
        self.config = SimpleNamespace(latency_tolerance=0.05)
        self.qgraph = SimpleNamespace(groups=groups)
        self.asked, self.rerounded, self.emitted = [], [], []

    def reround(self, plan):
        self.rerounded.append(plan.choices["g"])

    def allocate(self, working, metric, allocator, labeled):
        from types import SimpleNamespace

        self.asked.append(working)
        return SimpleNamespace(plan=self.proposals.pop(0), objective=0.0)

    def emit(self, plan):
        assert plan.choices["g"] in self.rerounded  # rounded in its own context before it is emitted
        return _FakeResult(plan)

    def cost_model(self, budget):
        return self._costs


def _plan(tag):
    from faaq_onnx.plan import BitPlan

    return BitPlan({"g": tag}, {})


def test_repair_emits_the_reallocated_plan_and_records_every_try(monkeypatch):
    """sqnr-db=30: the first plan measures 29.5, the allocator (asked for a tighter floor)
    proposes another that measures 30.2: that one is returned, not the extreme plan."""
    import faaq_onnx.guarantees as gu

    measured = {"first": 29.5, "second": 30.2, "extreme": 40.0}
    monkeypatch.setattr(gu, "measure_emitted", lambda comp, res, *a: (measured[res.plan.choices["g"]], "probe"))
    monkeypatch.setattr(gu, "_extreme_plan", lambda comp, budget: _plan("extreme"))
    comp = _FakeComp([_plan("second")], {}, [])
    out = gu.enforce_budget(comp, _FakeResult(_plan("first")), Budget.parse("sqnr-db=30"), "sqnr", "knapsack")
    assert out.plan.choices["g"] == "second"
    assert out.report["budget"]["measured_per_try"] == [29.5, 30.2] and out.report["budget"]["met"]
    assert comp.asked[0].value == pytest.approx(30 + 0.5 + 0.25)  # aimed past the miss
    # an allocator that proposes the same plan again ends the repair: the extreme plan decides
    comp = _FakeComp([_plan("first")], {}, [])
    out = gu.enforce_budget(comp, _FakeResult(_plan("first")), Budget.parse("sqnr-db=30"), "sqnr", "knapsack")
    assert out.plan.choices["g"] == "extreme" and out.report["budget"]["measured_per_try"] == [29.5, 40.0]
    assert comp.rerounded == ["extreme"]


def test_extreme_plan_is_the_most_precise_for_floors_and_the_cheapest_for_costs():
    """For a cost budget the cheapest plan by the budget's own cost, which need not be the
    least precise candidate (here W8A8 runs faster than W8A16 and than float)."""
    from types import SimpleNamespace

    from faaq_onnx.config import Candidate
    from faaq_onnx.guarantees import _extreme_plan

    cands = [Candidate.parse(c) for c in ("w8a16", "w8a8", "float")]
    group = SimpleNamespace(name="g", kind="conv", weights=["w"], activations=["a"])
    speed = {"w8a16": 3.0, "w8a8": 1.0, str(Candidate.parse("float")): 2.0}
    costs = SimpleNamespace(group_cost=lambda g, c: speed[str(c)])
    comp = _FakeComp([], {"g": group}, cands, costs)
    assert str(_extreme_plan(comp, Budget.parse("latency=1.0")).choices["g"]) == "w8a8"
    assert _extreme_plan(comp, Budget.parse("sqnr-db=30")).choices["g"] == Candidate.parse("float")


def test_tightened_budget_aims_past_the_miss():
    from faaq_onnx.guarantees import _tightened

    assert _tightened(Budget.parse("sqnr-db=30"), Budget.parse("sqnr-db=30"), 29.0).value == pytest.approx(31.25)
    assert _tightened(Budget.parse("max-drop=1"), Budget.parse("max-drop=1"), 1.5).value == pytest.approx(0.4)
    b = _tightened(Budget.parse("avg-bits=4"), Budget.parse("avg-bits=4"), 4.2)
    assert b.value == pytest.approx(4 * (4 / 4.2) * 0.995) and b.kind == "avg-bits" and b.bits == "stored"


def test_max_drop_is_measured_in_points_on_the_emitted_model(monkeypatch, tiny_cnn, cnn_calib):
    """The drop is float top-1 minus the written model's, in percentage points."""
    import numpy as np

    import faaq_onnx.evaluate as ev
    import faaq_onnx.guarantees as gu
    from faaq_onnx.pipeline import Compilation

    comp = Compilation(tiny_cnn, cnn_calib, _cfg())
    res = comp.emit(comp.uniform("w8a8"))
    x, y = cnn_calib["input"][:8], np.zeros(8, np.int64)
    monkeypatch.setattr(gu, "_float_top1", lambda comp, x, y: 0.90)
    monkeypatch.setattr(ev, "top1", lambda model, x, y, batch: 0.85 if model is res.model else 0.0)
    value, how = gu.measure_emitted(comp, res, Budget.parse("max-drop=1"), labeled=(x, y))
    assert value == pytest.approx(5.0) and "8 labeled samples" in how


def test_cost_budgets_allow_their_tolerance_and_no_more():
    b = Budget.parse("latency=1.0")
    assert meets(b, 1.04, tolerance=0.05) and not meets(b, 1.06, tolerance=0.05)
    assert not meets(b, 1.01)
