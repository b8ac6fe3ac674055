"""A budget is a promise about the file written: check it there, repair, or refuse.

The allocator works on estimates (probe SQNR, additive costs, profiled kernel times);
the emitted model is what the user ships. Every budget is therefore measured on the
emitted model (plain ONNX Runtime, held-out inputs where data is involved). A miss
is repaired by re-allocating against a tightened budget; when no plan the candidates
allow meets it, `quantize` fails with the best value measured and the nearest budget
that can be met, and no file is written.
"""

from __future__ import annotations

import math

import numpy as np

from faaq_onnx.analysis.allocate import _InfeasibleBudget
from faaq_onnx.analysis.budget import LATENCY, Budget
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError

REPAIR_TRIES = 4
UNITS = {"sqnr-db": "dB", "max-drop": "pt", "avg-bits": "bits", "size-mb": "MB", "bops": "x W8A8",
         "latency": "x W8A8", "latency-ms": "ms"}


def measure_emitted(comp, result, budget: Budget, labeled=None, ep: str = "cpu", batch: int = 1) -> tuple[float, str]:
    """(value, how it was measured) of a budget's quantity on the emitted model."""
    rep = result.report["verify"]
    if budget.kind == "sqnr-db":
        return min(o["sqnr_db"] for o in rep["outputs"].values()), f"output SQNR, plain ORT, {rep['samples']} samples"
    if budget.kind == "max-drop":
        from faaq_onnx.evaluate import top1

        x, y = labeled
        ref = _float_top1(comp, x, y)
        return 100 * (ref - top1(result.model, x, y, comp.config.batch_size)), f"top-1 drop, plain ORT, {len(y)} labeled samples"
    if budget.kind == "avg-bits":
        ws = rep["size"]["per_weight"].values()
        key = "bits" if budget.bits == "effective" else "container_bits"
        n = sum(w["elements"] for w in ws)
        return (sum(w[key] * w["elements"] for w in ws) / n if n else 0.0), f"{budget.bits} bits of the emitted weights"
    if budget.kind == "size-mb":
        return result.model.ByteSize() / 1e6, "bytes of the emitted model"
    if budget.kind == "bops":
        costs = comp.cost_model(budget)
        return costs.in_budget_units(costs.plan_cost(result.plan.choices), budget), "bit operations of the plan"
    if budget.kind in LATENCY:
        from faaq_onnx.runtime.timing import interleaved_median_ms

        ref_proto, _ = comp.build(comp.uniform(Candidate(8, 8)))
        feeds = _latency_feeds(comp, batch)
        got, ref = interleaved_median_ms([result.model, ref_proto], feeds, ep=ep, pairs=30)
        if budget.kind == "latency":
            return got / ref, f"median latency vs the all-W8A8 model, interleaved, batch {batch}, {ep}"
        return got, f"median latency, batch {batch}, {ep}"
    raise KeyError(budget.kind)


def meets(budget: Budget, value: float, tolerance: float = 0.0) -> bool:
    if budget.kind == "sqnr-db":
        return value >= budget.value
    if budget.kind == "max-drop":
        return value <= budget.value + 1e-9
    return value <= budget.value * (1 + tolerance) + 1e-9


def enforce_budget(comp, result, budget: Budget, metric: str, allocator: str, labeled=None, ep: str = "cpu",
                   batch: int = 1):
    """The result if its emitted model meets `budget`, a repaired one if not, else FaaqError."""
    tol = comp.config.latency_tolerance if budget.kind in LATENCY else 0.0
    tries = []
    current, working = result, budget
    for _ in range(REPAIR_TRIES):
        value, how = measure_emitted(comp, current, budget, labeled, ep, batch)
        tries.append(round(value, 4))
        if meets(budget, value, tol):
            return _record(current, budget, value, how, tries, met=True, tolerance=tol)
        working = _tightened(working, budget, value)
        try:
            alloc = comp.allocate(working, metric, allocator, labeled)
        except (_InfeasibleBudget, FaaqError):
            break
        alloc.plan.meta.setdefault("objective", alloc.objective)
        if alloc.plan.choices == current.plan.choices:
            break
        comp.reround(alloc.plan)  # a repaired plan is rounded in its own context too
        current = comp.emit(alloc.plan)
    # no repaired plan met it: the extreme plan the candidates allow decides
    extreme_plan = _extreme_plan(comp, budget)
    comp.reround(extreme_plan)
    extreme = comp.emit(extreme_plan)
    value, how = measure_emitted(comp, extreme, budget, labeled, ep, batch)
    tries.append(round(value, 4))
    if meets(budget, value, tol):
        return _record(extreme, budget, value, how, tries, met=True, tolerance=tol)
    nearest = _nearest(budget, value)
    raise FaaqError(
        f"budget {budget} cannot be met with candidates {', '.join(map(str, comp.candidates))}: "
        f"the best plan measures {budget.kind}={value:.4g} {UNITS[budget.kind]} on the emitted model ({how}); "
        f"measured per try: {tries}; nearest feasible budget: {budget.kind}={nearest:g}. Nothing was written."
    )


def _tightened(working: Budget, asked: Budget, value: float) -> Budget:
    """A budget for the allocator that aims past the measured miss."""
    if asked.kind == "sqnr-db":
        return Budget("sqnr-db", working.value + (asked.value - value) + 0.25)
    if asked.kind == "max-drop":
        return Budget("max-drop", max(working.value - (value - asked.value) - 0.1, 0.0))
    ratio = asked.value / max(value, 1e-12)
    return Budget(asked.kind, working.value * ratio * 0.995, asked.reference, asked.bits)


def _extreme_plan(comp, budget: Budget):
    """The most precise plan for floors, the cheapest for cost budgets."""
    from faaq_onnx.analysis.candidates import group_candidates
    from faaq_onnx.plan import BitPlan

    pick = 0 if budget.is_floor else -1
    choices = {g.name: group_candidates(g, comp.candidates)[pick] for g in comp.qgraph.groups.values()}
    if not budget.is_floor:
        costs = comp.cost_model(budget)
        choices = {g.name: min(group_candidates(g, comp.candidates),
                               key=lambda c, g=g: (costs.group_cost(g, c), -c.w, -c.a))
                   for g in comp.qgraph.groups.values()}
    return BitPlan(choices, {"allocator": "extreme", "budget": str(budget)})


def _nearest(budget: Budget, value: float) -> float:
    """The tightest round budget the measured value satisfies."""
    if budget.kind == "sqnr-db":
        return math.floor(value * 10) / 10
    return math.ceil(value * 1000) / 1000


def _record(result, budget: Budget, value: float, how: str, tries: list, met: bool, tolerance: float = 0.0):
    result.report["budget"] = {"budget": str(budget), "kind": budget.kind, "asked": budget.value,
                               "measured": value, "unit": UNITS[budget.kind], "how": how, "met": met,
                               "tolerance": tolerance, "measured_per_try": tries}
    return result


def _float_top1(comp, x, y) -> float:
    from faaq_onnx.evaluate import top1

    if not hasattr(comp, "_float_top1"):
        comp._float_top1 = top1(comp.float_proto, x, y, comp.config.batch_size)
    return comp._float_top1


def _latency_feeds(comp, batch: int) -> dict[str, np.ndarray]:
    from faaq_onnx.analysis.latency import _batch_feeds

    return _batch_feeds(comp.inputs, batch)
