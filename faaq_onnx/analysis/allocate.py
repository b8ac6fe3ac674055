"""Phase 2: give bits where they matter, under the user's budget.

Two allocators over the phase-1 table:
- greedy Pareto flipping (seed 003 §3.2): start with every group at its most precise
  candidate and repeatedly take the flip that adds the least damage per unit of cost
  saved, until the budget holds;
- an exact multiple-choice knapsack: minimize the summed damage subject to the cost
  limit, by dynamic programming over costs in units of their greatest common divisor
  (exact: bit counts are integers) or, when that would need more than MAX_STATES
  states, of limit/MAX_STATES rounded up, with one unit of slack per group whose plans are
  checked against their exact cost (so a budget equal to a plan's exact cost is feasible).
Damages are additive surrogates (noise-to-signal ratio for SQNR, KL, Fisher error);
the chosen plan is then measured jointly. Floors (sqnr-db, max-drop) search the
allocator's path with joint measurements, so the returned plan meets the floor as
measured, not as estimated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from faaq_onnx.analysis.budget import Budget, CostModel
from faaq_onnx.analysis.candidates import group_candidates
from faaq_onnx.analysis.sensitivity import SensitivityTable
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.plan import BitPlan

MAX_STATES = 200_000


@dataclass
class Allocation:
    plan: BitPlan
    cost: float
    objective: float  # summed damage of the chosen plan
    path: list[dict[str, Candidate]] = field(default_factory=list)


def _options(qgraph: QuantizerGraph, cands: list[Candidate]) -> dict[str, list[Candidate]]:
    return {g.name: group_candidates(g, cands) for g in qgraph.groups.values()}


def objective(table: SensitivityTable, choices: dict[str, Candidate], metric: str) -> float:
    return float(sum(table.damage(g, c, metric) for g, c in choices.items()))


def greedy_path(
    qgraph: QuantizerGraph,
    table: SensitivityTable,
    cands: list[Candidate],
    costs: CostModel,
    metric: str,
) -> list[dict[str, Candidate]]:
    """Every plan the Pareto flipping visits, from most precise to cheapest."""
    opts = _options(qgraph, cands)
    current = {g: o[0] for g, o in opts.items()}
    path = [dict(current)]
    while True:
        best = None
        for g, options in opts.items():
            grp = qgraph.groups[g]
            c0 = costs.group_cost(grp, current[g])
            d0 = table.damage(g, current[g], metric)
            for c in options:
                saved = c0 - costs.group_cost(grp, c)
                if saved <= 0:
                    continue
                ratio = (table.damage(g, c, metric) - d0) / saved
                key = (ratio, g, str(c))
                if best is None or key < best[0]:
                    best = (key, g, c)
        if best is None:
            return path
        current[best[1]] = best[2]
        path.append(dict(current))


def greedy(qgraph, table, cands, costs: CostModel, limit: float, metric: str) -> Allocation:
    path = greedy_path(qgraph, table, cands, costs, metric)
    for choices in path:
        if costs.plan_cost(choices) <= limit + 1e-9:
            return Allocation(
                BitPlan(choices, {"allocator": "greedy", "metric": metric}),
                costs.plan_cost(choices),
                objective(table, choices, metric),
                path,
            )
    raise _infeasible(costs, path[-1], limit)


def knapsack(qgraph, table, cands, costs: CostModel, limit: float, metric: str) -> Allocation:
    opts = _options(qgraph, cands)
    names = list(opts)
    if limit <= 0:
        raise _infeasible(costs, {g: o[-1] for g, o in opts.items()}, limit)
    unit = _unit(qgraph, opts, costs, limit)
    # costs are rounded up to whole units, so a plan whose exact cost meets the limit can
    # overshoot it by up to one unit per group: search that slack too, then check exactly
    base = int(np.floor(limit / unit + 1e-9))
    states = base + len(names)
    inf = np.inf
    dp = np.full(states + 1, inf)
    dp[0] = 0.0
    back = np.zeros((len(names), states + 1), np.int8)

    def units(g: str, c: Candidate) -> int:
        return int(np.ceil(costs.group_cost(qgraph.groups[g], c) / unit - 1e-9))

    for gi, g in enumerate(names):
        new = np.full_like(dp, inf)
        choice = np.zeros(states + 1, np.int8)
        for ci, c in enumerate(opts[g]):
            u = units(g, c)
            if u > states:
                continue
            cand = np.full_like(dp, inf)
            cand[u:] = dp[: states + 1 - u] + table.damage(g, c, metric)
            better = cand < new
            new = np.where(better, cand, new)
            choice = np.where(better, ci, choice)
        dp = new
        back[gi] = choice

    def plan_at(u: int) -> dict[str, Candidate]:
        choices: dict[str, Candidate] = {}
        for gi in range(len(names) - 1, -1, -1):
            g = names[gi]
            c = opts[g][back[gi, u]]
            choices[g] = c
            u -= units(g, c)
        return {g: choices[g] for g in names}

    choices = None
    for u in np.argsort(dp, kind="stable"):
        if not np.isfinite(dp[u]):
            break
        plan = plan_at(int(u))
        if u <= base or _within(costs.plan_cost(plan), limit):
            choices = plan
            break
    if choices is None:
        raise _infeasible(costs, {g: o[-1] for g, o in opts.items()}, limit)
    return Allocation(
        BitPlan(choices, {"allocator": "knapsack", "metric": metric}),
        costs.plan_cost(choices),
        objective(table, choices, metric),
    )


def _unit(qgraph, opts, costs: CostModel, limit: float) -> float:
    """Cost unit of the DP: exact (the gcd of integer costs) when the state count allows."""
    values = [costs.group_cost(qgraph.groups[g], c) for g, o in opts.items() for c in o]
    if all(float(v).is_integer() for v in values):
        g = 0
        for v in values:
            g = math.gcd(g, int(v))
        if g > 0 and limit / g <= MAX_STATES:
            return float(g)
    return limit / MAX_STATES


def _round_up(value: float, digits: int = 4) -> float:
    """`value` rounded up at `digits` significant digits: a suggested budget printed rounded
    down would itself be infeasible."""
    if value <= 0:
        return value
    step = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / step - 1e-9) * step


class _InfeasibleBudget(FaaqError):
    pass


def _infeasible(costs: CostModel, cheapest: dict[str, Candidate], limit: float) -> FaaqError:
    return _InfeasibleBudget(
        f"cheapest plan costs {costs.plan_cost(cheapest):.6g}, limit {limit:.6g}"
    )


def allocate(
    qgraph: QuantizerGraph,
    table: SensitivityTable,
    cands: list[Candidate],
    budget: Budget,
    metric: str = "sqnr",
    method: str = "knapsack",
    costs: CostModel | None = None,
    measure=None,
    accuracy=None,
    joint: bool = True,
    uniform_check: bool = True,
) -> Allocation:
    """Choose a BitPlan for a cost budget, or the cheapest plan meeting a measured floor.

    `measure(choices) -> {'sqnr_db': ...}` and `accuracy(choices) -> top-1` run the probe. A cost
    budget's plan, when measured (joint), is kept only if no uniform plan within the budget
    measures better (`uniform_check`; off for trade-off curves, which show uniform plans apart).
    """
    if method not in ("greedy", "knapsack"):
        raise FaaqError(f"unknown allocator {method!r}: choose greedy or knapsack")
    if not table.has(metric):
        why = table.meta.get("fit_unavailable", "not measured")
        raise FaaqError(f"metric {metric!r} is not available for this model ({why})")
    costs = costs or CostModel(
        qgraph,
        "bops" if budget.is_floor else budget.kind,
        reference=budget.reference,
        bits=budget.bits,
    )
    solve = greedy if method == "greedy" else knapsack
    if not budget.is_floor:
        limit = costs.limit(budget)
        try:
            alloc = solve(qgraph, table, cands, costs, limit, metric)
        except _InfeasibleBudget:
            opts = _options(qgraph, cands)
            cheapest = costs.in_budget_units(
                costs.plan_cost({g: o[-1] for g, o in opts.items()}), budget
            )
            nearest = dataclasses.replace(budget, value=_round_up(cheapest))
            raise FaaqError(
                f"budget {budget} is infeasible with candidates {', '.join(map(str, cands))}: "
                f"the cheapest plan needs {budget.kind}={cheapest:.6g} (nearest feasible "
                f"budget: {nearest})"
            ) from None
        alloc.plan.meta.update(
            {
                "budget": str(budget),
                "budget_value_reached": costs.in_budget_units(alloc.cost, budget),
            }
        )
        if (
            measure is not None and joint
        ):  # a cost budget needs no measurement: verification measures the model
            alloc.plan.meta["joint"] = measure(alloc.plan.choices)
            if uniform_check:
                alloc = no_worse_than_uniform(
                    qgraph, table, cands, costs, budget, metric, measure, alloc
                )
        return alloc
    return _floor(qgraph, table, cands, budget, metric, method, costs, measure, accuracy)


def _within(cost: float, limit: float) -> bool:
    """A plan's exact cost within the limit, up to float rounding of sums of large costs."""
    return cost <= limit * (1 + 1e-9) + 1e-9


def uniform_choices(
    qgraph: QuantizerGraph, cands: list[Candidate], c: Candidate
) -> dict[str, Candidate]:
    """Every group at `c`, or where `c` is not one of a group's options (weightless and attention
    groups) at the option nearest to it."""
    return {
        g: c if c in o else min(o, key=lambda x: (abs(x.w - c.w) + abs(x.a - c.a), -x.a, -x.w))
        for g, o in _options(qgraph, cands).items()
    }


def no_worse_than_uniform(
    qgraph, table, cands, costs: CostModel, budget: Budget, metric: str, measure, alloc: Allocation
) -> Allocation:
    """The allocated plan, or the uniform plan within the budget that measures better jointly.

    The allocator adds per-group damages, and where groups interact (low activation bits in a
    residual chain) that sum can rank a mixed plan above a uniform one it does not beat. Every
    uniform plan that fits is measured the way the allocated one was (one probe run each), and
    the better kept; plan.meta["uniform_checked"] records each one's measurement."""
    key = "kl" if metric == "kl" else "sqnr_db"

    def better(a: dict, b: dict) -> bool:
        return a[key] < b[key] if key == "kl" else a[key] > b[key]

    limit = costs.limit(budget)
    checked: dict[str, dict] = {}
    best = None
    for c in cands:
        choices = uniform_choices(qgraph, cands, c)
        if choices == alloc.plan.choices or not _within(costs.plan_cost(choices), limit):
            continue
        got = measure(choices)
        checked[str(c)] = got
        if key in got and (best is None or better(got, best[1])):
            best = (c, got, choices)
    meta = alloc.plan.meta
    meta["uniform_checked"] = checked
    if best is None or key not in meta["joint"] or not better(best[1], meta["joint"]):
        return alloc
    c, got, choices = best
    kept = dict(meta)
    kept.update({"joint": got, "uniform": str(c), "allocated_joint": meta["joint"]})
    kept["budget_value_reached"] = costs.in_budget_units(costs.plan_cost(choices), budget)
    return Allocation(
        BitPlan(choices, kept),
        costs.plan_cost(choices),
        objective(table, choices, metric),
        alloc.path,
    )


def _floor(qgraph, table, cands, budget, metric, method, costs, measure, accuracy) -> Allocation:
    """Cheapest plan (BOPs) whose jointly measured SQNR / accuracy drop meets the floor."""
    if budget.kind == "sqnr-db":
        if measure is None:
            raise FaaqError("an sqnr-db budget needs the probe to measure plans")

        def ok(ch):
            return measure(ch)["sqnr_db"] >= budget.value
    else:
        if accuracy is None:
            raise FaaqError(
                "a max-drop budget needs labeled data (--labels-data FILE with x and y)"
            )
        ref_acc = accuracy(None)

        def ok(ch):
            return 100 * (ref_acc - accuracy(ch)) <= budget.value

    opts = _options(qgraph, cands)
    top = {g: o[0] for g, o in opts.items()}
    if not ok(top):
        best = (
            measure(top)["sqnr_db"] if budget.kind == "sqnr-db" else 100 * (ref_acc - accuracy(top))
        )
        raise FaaqError(
            f"budget {budget} is infeasible: the most precise plan ({', '.join(map(str, cands))}) reaches "
            f"{budget.kind}={best:.3g} (nearest feasible budget)"
        )
    if method == "greedy":
        path = greedy_path(qgraph, table, cands, costs, metric)
        lo, hi = 0, len(path) - 1  # path[lo] meets the floor; find the last one that does
        if ok(path[hi]):
            lo = hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(path[mid]):
                lo = mid
            else:
                hi = mid
        choices = path[lo]
        alloc = Allocation(
            BitPlan(choices, {"allocator": "greedy", "metric": metric}),
            costs.plan_cost(choices),
            objective(table, choices, metric),
            path,
        )
    else:
        top_cost = costs.plan_cost(top)
        low_cost = costs.plan_cost({g: o[-1] for g, o in opts.items()})
        best = Allocation(
            BitPlan(top, {"allocator": "knapsack", "metric": metric}),
            top_cost,
            objective(table, top, metric),
        )
        lo, hi = low_cost, top_cost
        for _ in range(12):  # bisection on the cost limit, each step one knapsack + one joint run
            mid = (lo + hi) / 2
            try:
                cand = knapsack(qgraph, table, cands, costs, mid, metric)
            except _InfeasibleBudget:
                lo = mid
                continue
            if ok(cand.plan.choices):
                best, hi = cand, mid
            else:
                lo = mid
        alloc = best
    alloc.plan.meta.update({"budget": str(budget)})
    if measure is not None:
        alloc.plan.meta["joint"] = measure(alloc.plan.choices)
    if accuracy is not None:
        alloc.plan.meta["top1"] = accuracy(alloc.plan.choices)
    return alloc


def random_plan(
    qgraph: QuantizerGraph, cands: list[Candidate], costs: CostModel, limit: float, seed: int
) -> BitPlan:
    """A baseline: step random groups down to their next cheaper candidate until the budget holds."""
    rng = np.random.default_rng(seed)
    opts = _options(qgraph, cands)
    current = {g: o[0] for g, o in opts.items()}
    while costs.plan_cost(current) > limit + 1e-9:
        movable = [
            g
            for g, o in opts.items()
            if any(
                costs.group_cost(qgraph.groups[g], c)
                < costs.group_cost(qgraph.groups[g], current[g])
                for c in o
            )
        ]
        if not movable:
            raise FaaqError("random plan cannot meet the budget")
        g = movable[rng.integers(len(movable))]
        grp = qgraph.groups[g]
        cheaper = [
            c for c in opts[g] if costs.group_cost(grp, c) < costs.group_cost(grp, current[g])
        ]
        current[g] = max(cheaper, key=lambda c: (costs.group_cost(grp, c), c.w, c.a))
    return BitPlan(current, {"allocator": "random", "seed": seed})
