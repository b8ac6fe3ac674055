"""pipeline.py's request handling, without compiling anything: what is refused before any work,
the candidates a budget defaults to, the opset asked for, stage timings, and the allocation
step on a stand-in compilation."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

import faaq_onnx.pipeline as pl
from faaq_onnx.analysis.budget import Budget
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.plan import BitPlan


def test_default_candidates_follow_the_budget():
    assert pl.default_candidates(None) == "practical"
    assert pl.default_candidates(Budget.parse("avg-bits=4")) == "weights-a8"
    assert pl.default_candidates(Budget.parse("size-mb=1")) == "weights-a8"
    assert pl.default_candidates(Budget.parse("sqnr-db=30")) == "practical"
    assert pl.default_candidates(Budget.parse("bops=0.5")) == "practical"


def checked(tmp_path, output=None, plan=None, budget=None, labeled=None, **cfg):
    return pl._checked_request(
        tmp_path / "m.onnx", output, plan, budget, labeled, QuantConfig(progress=False, **cfg)
    )


def test_requests_that_do_not_hold_together_are_refused(tmp_path):
    with pytest.raises(FaaqError) as e:
        checked(tmp_path, output=tmp_path / "." / "m.onnx")
    assert str(e.value) == (
        "the output path is the input model: choose another -o, the input is never overwritten"
    )
    plan = BitPlan({"g": Candidate(8, 8)})
    with pytest.raises(FaaqError, match=r"^give either a plan or a budget, not both$"):
        checked(tmp_path, plan=plan, budget="avg-bits=4")
    first_last = Candidate(8, 8)
    for kw in ({"plan": plan}, {"budget": "avg-bits=4"}):
        with pytest.raises(FaaqError, match=r"^--first-last applies to a uniform --scheme"):
            checked(tmp_path, first_last=first_last, **kw)
    with pytest.raises(FaaqError, match=r"^a max-drop budget needs labeled data"):
        checked(tmp_path, budget="max-drop=1")


def test_requests_that_hold_together_pass(tmp_path):
    assert checked(tmp_path, output=tmp_path / "q.onnx") is None
    assert checked(tmp_path, plan=BitPlan({"g": Candidate(8, 8)})) is None
    assert checked(tmp_path, first_last=Candidate(8, 8)) is None
    b = checked(tmp_path, budget="avg-bits=4")
    assert (b.kind, b.value) == ("avg-bits", 4.0)
    given = Budget.parse("sqnr-db=30")
    assert checked(tmp_path, budget=given) is given
    assert checked(tmp_path, budget="max-drop=1", labeled=([], [])).kind == "max-drop"


def test_target_opset_covers_what_may_be_emitted():
    cfg = QuantConfig(progress=False, scheme=Candidate(8, 8), int2=False)
    assert pl._target_opset(None, None, cfg) == 13
    assert pl._target_opset(BitPlan({"g": Candidate(4, 8)}), None, cfg) == 21
    assert pl._target_opset(None, [Candidate(8, 8), Candidate(4, 8)], cfg) == 21
    assert pl._target_opset(None, [Candidate(8, 8), Candidate(8, 16)], cfg) == 21
    assert pl._target_opset(None, [Candidate(8, 8)], cfg) == 13
    # a plan given decides, whatever the scheme says
    w4 = QuantConfig(progress=False, scheme=Candidate(4, 8), int2=False)
    assert pl._target_opset(BitPlan({"g": Candidate(8, 8)}), None, w4) == 13


def test_quantize_leaves_the_callers_ep_and_batch_as_given(tmp_path):
    """ep= and latency_batch= are this request's: the caller's config is not rewritten."""
    cfg = QuantConfig(progress=False)
    before_ep, before_batch = cfg.ep, cfg.latency_batch
    m = tmp_path / "m.onnx"
    with pytest.raises(FaaqError, match="the output path is the input model"):
        pl.quantize(m, output=m, config=cfg, ep="cuda", latency_batch=4)
    assert (cfg.ep, cfg.latency_batch) == (before_ep, before_batch)


class Stop(Exception):
    pass


def test_a_dead_ray_address_is_checked_before_calibration_only_with_a_budget(tmp_path, monkeypatch):
    import faaq_onnx.runtime.workers as workers

    asked = []
    monkeypatch.setattr(workers, "check_ray_address", lambda a: asked.append(a))

    def compilation(*a, **k):
        raise Stop(k["target_opset"], k["floor"])

    monkeypatch.setattr(pl, "Compilation", compilation)
    cfg = QuantConfig(progress=False, ray_address="ray://nowhere:1")
    with pytest.raises(Stop) as e:
        pl.quantize(tmp_path / "m.onnx", "random", config=cfg, budget="avg-bits=4")
    assert asked == ["ray://nowhere:1"]
    # weights-a8 has w2a8: int2 containers, opset 25
    assert e.value.args[0] == 25 and e.value.args[1].kind == "avg-bits"
    with pytest.raises(Stop) as e:
        pl.quantize(tmp_path / "m.onnx", "random", config=cfg)
    assert asked == ["ray://nowhere:1"] and e.value.args == (13, None)


def test_stage_timings_accumulate_in_milliseconds():
    comp = pl.Compilation.__new__(pl.Compilation)
    comp.timings = {}
    with comp.stage("load"):
        time.sleep(0.012)
    first = comp.timings["load"]
    assert 0.012 <= first < 0.5 and first == round(first, 3)
    with pytest.raises(Stop), comp.stage("load"):
        time.sleep(0.012)
        raise Stop
    assert first + 0.012 <= comp.timings["load"] < first + 0.5  # timed even when it fails


class FakeComp:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail
        self.config = SimpleNamespace(ep="cpu", latency_batch=2)

    def sensitivity(self, cands, metrics, cache_dir):
        self.calls.append(("sensitivity", tuple(metrics), cache_dir))

    def latency_table(self, ep, batch, cache_dir):
        self.calls.append(("latency", ep, batch, cache_dir))

    def allocate(self, budget, metric, allocator, labeled):
        self.calls.append(("allocate", budget.kind, metric, allocator))
        if self.fail:
            raise FaaqError("no plan")
        return SimpleNamespace(plan=BitPlan({"g": Candidate(4, 8)}), objective=12.5)

    def reround(self, plan):
        self.calls.append(("reround", plan.choices["g"]))


def test_allocated_plan_runs_the_metrics_it_needs_then_rerounds():
    comp = FakeComp()
    cands = [Candidate(4, 8), Candidate(8, 8)]
    plan = pl._allocated_plan(comp, Budget.parse("avg-bits=5"), cands, "sqnr", "greedy", "c", None)
    assert comp.calls == [
        ("sensitivity", ("sqnr", "kl"), "c"),
        ("allocate", "avg-bits", "sqnr", "greedy"),
        ("reround", Candidate(4, 8)),
    ]
    assert plan.meta["objective"] == 12.5
    comp = FakeComp()
    pl._allocated_plan(comp, Budget.parse("latency=0.8"), cands, "fit", "knapsack", None, None)
    assert comp.calls[:2] == [("sensitivity", ("fit",), None), ("latency", "cpu", 2, None)]


def test_allocation_failure_falls_back_to_the_extreme_plan_for_floors_only(monkeypatch):
    import faaq_onnx.guarantees as gu

    extreme = BitPlan({"g": Candidate(8, 16)})
    monkeypatch.setattr(gu, "_extreme_plan", lambda comp, budget: extreme)
    comp = FakeComp(fail=True)
    cands = [Candidate(8, 16)]
    assert (
        pl._allocated_plan(comp, Budget.parse("sqnr-db=40"), cands, "sqnr", "k", None, None)
        is extreme
    )
    assert comp.calls[-1] == ("reround", Candidate(8, 16))
    with pytest.raises(FaaqError, match="no plan"):
        pl._allocated_plan(
            FakeComp(fail=True), Budget.parse("avg-bits=4"), cands, "sqnr", "k", None, None
        )


def test_stage_attributes_live_on_their_stage():
    class Holder:
        pass

    class Owner:
        named = pl._OnStage("part")
        renamed = pl._OnStage("part", "inner")

        def __init__(self):
            self.part = Holder()

    assert Owner.named.attr == "named" and Owner.renamed.attr == "inner"
    assert isinstance(Owner.__dict__["named"], pl._OnStage) and Owner.named.stage == "part"
    o = Owner()
    o.named, o.renamed = 1, 2
    assert (o.part.named, o.part.inner) == (1, 2) and (o.named, o.renamed) == (1, 2)
