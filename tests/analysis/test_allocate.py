import itertools

import pytest

from faaq_onnx.analysis.allocate import (
    allocate,
    greedy,
    knapsack,
    objective,
    random_plan,
    uniform_choices,
)
from faaq_onnx.analysis.budget import Budget, CostModel
from faaq_onnx.analysis.candidates import parse_candidates
from faaq_onnx.analysis.sensitivity import SensitivityTable
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup, WeightQuantizer
from faaq_onnx.pipeline import Compilation


def _synthetic(n=5, seed=0):
    """Groups of different sizes and sensitivities, with a brute-forceable space."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights, groups, table = {}, {}, {}
    for i in range(n):
        params = int(rng.integers(100, 1000))
        w = f"w{i}"
        weights[w] = WeightQuantizer(w, [f"op{i}"], "Conv", (params,), 0, None, params * 10)
        groups[f"g{i}"] = QuantizerGroup(f"g{i}", "conv", [f"op{i}"], [w], [], params * 10, params)
        sens = rng.uniform(0.5, 5)
        table[f"g{i}"] = {f"w{b}a8": {"sqnr_db": 10 * np.log10(4.0**b / sens)} for b in (2, 4, 8)}
    return QuantizerGraph(weights, {}, groups), SensitivityTable(table)


def test_knapsack_is_exact_against_brute_force():
    qg, table = _synthetic()
    cands = parse_candidates("w2a8,w4a8,w8a8")
    costs = CostModel(qg, "avg-bits")
    limit = costs.limit(Budget.parse("avg-bits=4"))
    best = None
    names = list(qg.groups)
    for combo in itertools.product(cands, repeat=len(names)):
        ch = dict(zip(names, combo))
        if costs.plan_cost(ch) <= limit:
            v = objective(table, ch, "sqnr")
            best = v if best is None else min(best, v)
    ks = knapsack(qg, table, cands, costs, limit, "sqnr")
    assert ks.cost <= limit
    assert ks.objective == pytest.approx(best, rel=1e-3)
    gr = greedy(qg, table, cands, costs, limit, "sqnr")
    assert gr.cost <= limit
    # greedy returns the first plan of its flipping path within the budget
    within = [p for p in gr.path if costs.plan_cost(p) <= limit]
    assert gr.plan.choices == within[0]
    # every step of the path lowers one group to a cheaper candidate, and cost strictly falls
    for a, b in zip(gr.path, gr.path[1:]):
        changed = [g for g in a if a[g] != b[g]]
        assert len(changed) == 1 and costs.plan_cost(b) < costs.plan_cost(a)


def test_greedy_flips_least_sensitive_first():
    qg, table = _synthetic()
    cands = parse_candidates("w2a8,w4a8,w8a8")
    costs = CostModel(qg, "avg-bits")
    alloc = greedy(qg, table, cands, costs, costs.limit(Budget.parse("avg-bits=7")), "sqnr")
    flipped = [g for g, c in alloc.plan.choices.items() if c.w < 8]
    assert flipped  # some group had to give bits
    damage_per_bit = {
        g: (table.damage(g, Candidate(4, 8), "sqnr") - table.damage(g, Candidate(8, 8), "sqnr"))
        / (4 * qg.groups[g].weight_params)
        for g in qg.groups
    }
    assert min(damage_per_bit, key=damage_per_bit.get) in flipped


def test_infeasible_budget_names_nearest_feasible():
    qg, table = _synthetic()
    with pytest.raises(FaaqError, match=r"infeasible.*avg-bits=2 \(nearest feasible"):
        allocate(
            qg, table, parse_candidates("w2a8,w4a8,w8a8"), Budget.parse("avg-bits=1@effective")
        )
    # stored bits (the default): a 2-bit weight without int2 storage occupies an int4 container
    with pytest.raises(FaaqError, match=r"infeasible.*avg-bits=4 \(nearest feasible"):
        allocate(qg, table, parse_candidates("w2a8,w4a8,w8a8"), Budget.parse("avg-bits=1"))


def test_the_suggested_budget_keeps_its_reference_and_is_itself_feasible():
    """The nearest feasible budget is written in the budget's own reference (@w8a16) and rounded
    up, so following the suggestion works."""
    from faaq_onnx.analysis.budget import CostModel

    qg, table = _synthetic()
    cands = parse_candidates("w4a8,w8a8")
    with pytest.raises(FaaqError, match=r"nearest feasible budget: (bops=[0-9.]+@w8a16)") as err:
        allocate(qg, table, cands, Budget.parse("bops=0.01@w8a16"))
    suggested = Budget.parse(err.value.args[0].split("nearest feasible budget: ")[1].rstrip(")"))
    costs = CostModel(qg, "bops", reference=suggested.reference)
    cheapest = costs.in_budget_units(
        costs.plan_cost({g: Candidate(4, 8) for g in qg.groups}), suggested
    )
    assert suggested.value >= cheapest
    allocate(qg, table, cands, suggested)  # feasible


def test_stored_bits_count_containers_effective_bits_do_not():
    qg, _ = _synthetic()
    g = next(iter(qg.groups.values()))
    stored = CostModel(qg, "avg-bits")
    effective = CostModel(qg, "avg-bits", bits="effective")
    int2 = CostModel(qg, "avg-bits", min_container=2)
    p = g.weight_params
    assert [stored.group_cost(g, Candidate(b, 8)) / p for b in (2, 3, 4, 5, 6, 8)] == [
        4,
        4,
        4,
        8,
        8,
        8,
    ]
    assert [effective.group_cost(g, Candidate(b, 8)) / p for b in (2, 3, 5, 6)] == [2, 3, 5, 6]
    assert (
        int2.group_cost(g, Candidate(2, 8)) / p == 2
        and int2.group_cost(g, Candidate(3, 8)) / p == 4
    )


def test_avg_bits_budget_basis_parses():
    assert Budget.parse("avg-bits=4").bits == "stored"
    assert Budget.parse("avg-bits=4@effective").bits == "effective"
    assert str(Budget.parse("avg-bits=4@effective")) == "avg-bits=4@effective"
    with pytest.raises(FaaqError, match="@stored or @effective"):
        Budget.parse("avg-bits=4@w8a8")


def test_random_plan_meets_budget():
    qg, _ = _synthetic()
    cands = parse_candidates("w2a8,w4a8,w8a8")
    costs = CostModel(qg, "avg-bits")
    limit = costs.limit(Budget.parse("avg-bits=5"))
    plans = [random_plan(qg, cands, costs, limit, s) for s in range(3)]
    assert all(costs.plan_cost(p.choices) <= limit for p in plans)
    assert len({tuple(sorted((g, str(c)) for g, c in p.choices.items())) for p in plans}) > 1


def test_random_plan_keeps_a_plan_that_meets_the_limit_exactly_and_steps_down_one_unit_over():
    """The budget check's tolerance is a rounding guard (1e-9 of a bit), not a unit of cost:
    a limit equal to the top plan's cost keeps it; one half bit below forces a step down."""
    qg, _ = _synthetic()
    cands = parse_candidates("w2a8,w4a8,w8a8")
    costs = CostModel(qg, "avg-bits")
    top = {g: Candidate(8, 8) for g in qg.groups}
    top_cost = costs.plan_cost(top)
    for seed in range(3):
        assert random_plan(qg, cands, costs, top_cost, seed).choices == top
        plan = random_plan(qg, cands, costs, top_cost - 0.5, seed).choices
        assert costs.plan_cost(plan) <= top_cost - 0.5
        moved = {g: c for g, c in plan.items() if c != top[g]}
        assert list(moved.values()) == [Candidate(4, 8)]  # one group, one step (w8 -> w4)
    with pytest.raises(FaaqError, match="cannot meet the budget"):
        random_plan(
            qg, cands, costs, costs.plan_cost({g: Candidate(2, 8) for g in qg.groups}) - 1, 0
        )


@pytest.mark.parametrize(
    "text,kind,value",
    [
        ("avg-bits=4", "avg-bits", 4.0),
        ("bops=0.25@w8a16", "bops", 0.25),
        ("sqnr-db=30", "sqnr-db", 30.0),
        ("size-mb=1.5", "size-mb", 1.5),
    ],
)
def test_budget_parse(text, kind, value):
    b = Budget.parse(text)
    assert (b.kind, b.value) == (kind, value)


@pytest.mark.parametrize("text", ["avg-bits", "speed=3", "avg-bits=-1", "bops=abc"])
def test_budget_parse_errors(text):
    with pytest.raises(FaaqError):
        Budget.parse(text)


@pytest.fixture
def comp(tiny_cnn, cnn_calib):
    c = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)
    c.sensitivity("w2a8,w4a8,w8a8", cache_dir=False)
    return c


def test_avg_bits_budget_end_to_end(comp):
    alloc = comp.allocate("avg-bits=5")
    assert alloc.plan.avg_weight_bits(comp.qgraph) <= 5.0 + 1e-9
    assert "joint" in alloc.plan.meta
    res = comp.emit(alloc.plan)
    assert res.report["avg_weight_bits"] <= 5.0 + 1e-9


def test_sqnr_floor_is_met_as_measured(comp):
    for method in ("greedy", "knapsack"):
        alloc = comp.allocate("sqnr-db=20", allocator=method)
        assert comp.measure(alloc.plan)["sqnr_db"] >= 20
        assert alloc.plan.meta["joint"]["sqnr_db"] >= 20


def test_sqnr_floor_infeasible(comp):
    with pytest.raises(FaaqError, match=r"infeasible.*most precise plan"):
        comp.allocate("sqnr-db=200")


def test_bops_budget(comp):
    alloc = comp.allocate("bops=0.6")
    costs = comp.cost_model(Budget.parse("bops=0.6"))
    assert alloc.cost <= 0.6 * costs.plan_cost(comp.uniform("w8a8").choices) + 1e-6


def test_max_drop_needs_labels(comp):
    with pytest.raises(FaaqError, match="labeled data"):
        comp.allocate("max-drop=1")


def test_max_drop_with_labels(comp, cnn_calib):
    from tests.conftest import run_model

    x = cnn_calib["input"]
    y = run_model(comp.float_proto, {"input": x})[0].argmax(1)
    alloc = comp.allocate("max-drop=5", labeled=(x, y))
    assert alloc.plan.meta["top1"] >= 0.95 - 1e-9


def _joint(table):
    """A stand-in for the probe: the joint SQNR of a plan from the table's noise powers."""
    import numpy as np

    def measure(ch):
        return {"sqnr_db": float(-10 * np.log10(objective(table, ch, "sqnr")))}

    return measure


def test_allocate_dispatches_to_the_chosen_allocator_and_measures_once():
    qg, table = _synthetic(6, 0)  # a case where greedy and knapsack disagree
    cands = parse_candidates("w2a8,w4a8,w8a8")
    budget = Budget.parse("avg-bits=7")
    costs = CostModel(qg, "avg-bits")
    calls = []

    def measure(ch):
        calls.append(ch)
        return _joint(table)(ch)

    g = allocate(qg, table, cands, budget, method="greedy", measure=measure)
    k = allocate(qg, table, cands, budget, method="knapsack", measure=measure, joint=False)
    assert (
        g.plan.choices == greedy(qg, table, cands, costs, costs.limit(budget), "sqnr").plan.choices
    )
    assert (
        k.plan.choices
        == knapsack(qg, table, cands, costs, costs.limit(budget), "sqnr").plan.choices
    )
    assert g.plan.choices != k.plan.choices
    # measured when joint (the plan, then each uniform plan within the budget), not when joint=False
    uniform = [uniform_choices(qg, cands, c) for c in cands]
    fitting = [u for u in uniform if costs.plan_cost(u) <= costs.limit(budget)]
    assert calls == [g.plan.choices] + [u for u in fitting if u != g.plan.choices]
    assert g.plan.meta["joint"] == _joint(table)(g.plan.choices) and "joint" not in k.plan.meta
    assert "uniform" not in g.plan.meta  # the table's own sums: no uniform plan beats the allocator
    assert allocate(qg, table, cands, budget).plan.meta["budget_value_reached"] <= 7.0


@pytest.mark.parametrize("method", ["greedy", "knapsack"])
def test_sqnr_floor_allocation_is_the_cheapest_that_meets_it(method):
    """Against brute force: the floor holds on the plan chosen, and no plan on the
    allocator's own search is cheaper and still meets it. A floor only the most precise
    plan meets must return that plan."""
    qg, table = _synthetic(5, 1)
    cands = parse_candidates("w2a8,w4a8,w8a8")
    costs = CostModel(qg, "bops")
    measure = _joint(table)
    top = {g: Candidate(8, 8) for g in qg.groups}
    best = measure(top)["sqnr_db"]
    for floor in (best - 0.01, best - 15.0):
        alloc = allocate(
            qg, table, cands, Budget.parse(f"sqnr-db={floor}"), method=method, measure=measure
        )
        assert measure(alloc.plan.choices)["sqnr_db"] >= floor
        if floor == best - 0.01:
            assert alloc.plan.choices == top
        if method == "greedy":
            meeting = [p for p in alloc.path if measure(p)["sqnr_db"] >= floor]
            assert costs.plan_cost(alloc.plan.choices) == min(costs.plan_cost(p) for p in meeting)
        elif floor < best - 1:
            assert costs.plan_cost(alloc.plan.choices) < costs.plan_cost(top)


def test_infeasible_max_drop_reports_the_best_drop():
    qg, table = _synthetic(3, 0)
    acc = {None: 0.90}

    def accuracy(ch):
        return acc.get(ch is None and None, 0.85)  # every quantized plan: 5 points below float

    with pytest.raises(FaaqError, match=r"reaches max-drop=5 \(nearest feasible"):
        allocate(
            qg, table, parse_candidates("w4a8,w8a8"), Budget.parse("max-drop=1"), accuracy=accuracy
        )


def test_budget_values_zero_and_negative():
    assert Budget.parse("max-drop=0").value == 0.0  # "no drop at all" is a valid floor
    for bad in ("avg-bits=0", "size-mb=0", "sqnr-db=-3", "bops=-0.5", "latency=0", "latency-ms=0"):
        kind = bad.split("=")[0]
        with pytest.raises(
            FaaqError, match=f"--budget {kind} must be > 0, got {bad.split('=')[1]}"
        ):
            Budget.parse(bad)
    with pytest.raises(
        FaaqError, match=r"--budget max-drop must be >= 0 \(percentage points of top-1\), got -1"
    ):
        Budget.parse("max-drop=-1")
    for bad in ("avg-bits=1e999", "max-drop=1e400"):  # inf: a number float() reads, but no budget
        with pytest.raises(
            FaaqError, match=f"--budget {bad.split('=')[0]} must be a finite number"
        ):
            Budget.parse(bad)


class _FakeLatency:
    """Per-group microsecond costs plus a fixed overhead, as a measured table would give."""

    def __init__(self, qg):
        self.us = {g: 100.0 + 10 * i for i, g in enumerate(qg.groups)}

    def cost(self, group, cand):
        return self.us[group] * (1.0 if cand.w <= 8 and cand.a <= 8 else 2.0)

    def plan_ms(self, choices, reference):
        return (500.0 + sum(self.cost(g, c) for g, c in choices.items())) / 1e3


@pytest.mark.parametrize(
    "text",
    [
        "avg-bits=5",
        "avg-bits=5@effective",
        "size-mb=0.02",
        "bops=0.4",
        "bops=0.4@w8a16",
        "latency=1.2",
        "latency-ms=1.1",
    ],
)
def test_budget_units_round_trip(text):
    """limit() and in_budget_units() are inverses: what the report says is what was asked."""
    qg, _ = _synthetic()
    b = Budget.parse(text)
    costs = CostModel(
        qg, b.kind, other_bytes=1234, reference=b.reference, bits=b.bits, latency=_FakeLatency(qg)
    )
    assert costs.in_budget_units(costs.limit(b), b) == pytest.approx(b.value, rel=1e-9)
    w8 = {g: Candidate(8, 8) for g in qg.groups}
    expected = {
        "avg-bits": 8.0,
        "size-mb": None,
        "bops": 1.0 if b.reference == Candidate(8, 8) else 0.5,
        "latency": 1.0,
        "latency-ms": (500 + sum(_FakeLatency(qg).us.values())) / 1e3,
    }[b.kind]
    if expected is not None:
        assert costs.in_budget_units(costs.plan_cost(w8), b) == pytest.approx(expected)


def test_float_weights_cost_four_bytes_each():
    qg, _ = _synthetic()
    costs = CostModel(qg, "size-mb")
    w = next(iter(qg.weights.values()))
    assert costs.weight_bytes(w.name, 32) == 4 * w.size
    assert (
        costs.weight_bytes(w.name, 8) == w.size + 4 * w.shape[0]
    )  # int8 codes + a float scale per channel
    assert costs.weight_bytes(w.name, 4) == (w.size + 1) // 2 + 4 * w.shape[0]


def test_budget_text_round_trips():
    for text in (
        "bops=0.25@w8a16",
        "bops=0.25",
        "avg-bits=4",
        "avg-bits=4@effective",
        "sqnr-db=30",
    ):
        assert str(Budget.parse(text)) == text


def test_blocked_weights_pay_one_scale_per_block():
    qg, _ = _synthetic()
    w = next(iter(qg.weights.values()))
    from dataclasses import replace

    qg.weights[w.name] = replace(w, block_axis=0)
    costs = CostModel(qg, "size-mb", granularity="block", block_size=32)
    assert costs.weight_bytes(w.name, 4) == (w.size + 1) // 2 + 4 * -(-w.size // 32)
    # a weight that could be blocked pays one scale per channel when the grid is per channel
    per_channel = CostModel(qg, "size-mb", granularity="per-channel", block_size=32)
    assert per_channel.weight_bytes(w.name, 4) == (w.size + 1) // 2 + 4 * w.shape[w.channel_axis]


def test_max_drop_floor_is_in_percentage_points_exactly():
    """Each group lowered to W4 costs 2^-7 of top-1 (0.78125 points): a max-drop of exactly
    0.78125 allows one lowered group and not two."""
    qg, table = _synthetic(3, 0)
    cands = parse_candidates("w4a8,w8a8")

    def accuracy(ch):
        return 0.75 if ch is None else 0.75 - sum(c.w < 8 for c in ch.values()) / 128

    for method in ("greedy", "knapsack"):
        alloc = allocate(
            qg, table, cands, Budget.parse("max-drop=0.78125"), method=method, accuracy=accuracy
        )
        assert sum(c.w < 8 for c in alloc.plan.choices.values()) == 1


def test_knapsack_with_float_costs_meets_a_budget_equal_to_a_plans_exact_cost():
    """Latency costs are not integers: the DP rounds them up to units, and a budget of
    exactly the all-W8A8 latency (latency=1.0) must still find that plan, not call it
    infeasible."""
    qg, table = _synthetic(8, 3)
    lat = _FakeLatency(qg)
    lat.us = {g: 100.0 / 3 + 7.1 * i for i, g in enumerate(qg.groups)}  # awkward fractions
    costs = CostModel(qg, "latency", latency=lat)
    cands = parse_candidates("w4a8,w8a8")  # same kernel cost here: W8A8 wins on damage
    alloc = allocate(qg, table, cands, Budget.parse("latency=1.0"), costs=costs)
    assert all(c == Candidate(8, 8) for c in alloc.plan.choices.values())
    assert alloc.cost <= costs.limit(Budget.parse("latency=1.0")) * (1 + 1e-9)


def test_round_up_keeps_significant_digits_and_never_rounds_down():
    """A suggested budget is rounded up at 4 significant digits (2 when asked); exact values,
    zero and negatives stay as they are."""
    from faaq_onnx.analysis.allocate import _round_up

    assert _round_up(1234567.0) == pytest.approx(1235000.0)
    assert _round_up(0.012341) == pytest.approx(0.01235)
    assert _round_up(12345.0, 2) == pytest.approx(13000.0)
    assert _round_up(9.9991) == pytest.approx(10.0)
    assert _round_up(1.0) == 1.0 and _round_up(2500.0) == 2500.0
    assert _round_up(0.0) == 0.0 and _round_up(-3.21) == -3.21


def test_knapsack_rejects_a_plan_that_unit_rounding_lets_past_the_limit():
    """Float costs are rounded up to DP units, with one unit of slack per group searched; a plan
    found in that slack whose exact cost is over the limit (here by 3 parts in a million) is
    refused, and the next best that fits is taken."""
    qg, table = _synthetic(2)

    class Costs:
        def group_cost(self, group, c):
            return 0.5 * (1 + 3e-6) if c.w == 8 else 0.25

        def plan_cost(self, choices):
            return sum(self.group_cost(qg.groups[g], c) for g, c in choices.items())

    costs = Costs()
    alloc = knapsack(qg, table, parse_candidates("w4a8,w8a8"), costs, 1.0, "sqnr")
    assert costs.plan_cost(alloc.plan.choices) <= 1.0
    assert sorted(c.w for c in alloc.plan.choices.values()) == [4, 8]


def test_a_uniform_plan_within_the_budget_that_measures_better_replaces_the_allocated_one():
    """Where groups interact the table's sums mislead: the joint measurement has the last word
    between the allocated plan and every uniform plan that fits (and only those are measured)."""
    qg, table = _synthetic(5, 0)
    cands = parse_candidates("w2a8,w4a8,w8a8")
    budget = Budget.parse("avg-bits=5.5")
    costs = CostModel(qg, "avg-bits")
    additive = _joint(table)
    calls = []

    def measure(ch):  # uniform W4A8 measures 50 dB: better than anything the table predicts
        calls.append(ch)
        if set(ch.values()) == {Candidate(4, 8)}:
            return {"sqnr_db": 50.0}
        return additive(ch)

    alloc = allocate(qg, table, cands, budget, measure=measure)
    w4a8 = {g: Candidate(4, 8) for g in qg.groups}
    assert alloc.plan.choices == w4a8 and alloc.plan.meta["uniform"] == "w4a8"
    assert alloc.plan.meta["joint"] == {"sqnr_db": 50.0}
    allocated = knapsack(qg, table, cands, costs, costs.limit(budget), "sqnr").plan.choices
    assert alloc.plan.meta["allocated_joint"] == additive(allocated)
    assert alloc.cost == costs.plan_cost(w4a8) <= costs.limit(budget)
    assert alloc.plan.meta["budget_value_reached"] == pytest.approx(4.0)
    assert set(alloc.plan.meta["uniform_checked"]) == {"w2a8", "w4a8"}  # w8a8 does not fit
    assert calls[0] == allocated and len(calls) == 3
    unchecked = allocate(qg, table, cands, budget, measure=measure, uniform_check=False)
    assert unchecked.plan.choices == allocated and "uniform_checked" not in unchecked.plan.meta

    def worse(ch):  # every uniform plan measures below the allocated one: it stays
        return {"sqnr_db": -5.0} if len(set(ch.values())) == 1 else additive(ch)

    kept = allocate(qg, table, cands, budget, measure=worse)
    assert kept.plan.choices == allocated and "uniform" not in kept.plan.meta
    assert kept.plan.meta["uniform_checked"]["w4a8"] == {"sqnr_db": -5.0}
