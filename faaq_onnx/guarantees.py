"""A budget is a promise about the file written: check it there, repair, or refuse.

The allocator works on estimates (probe SQNR, additive costs, profiled kernel times);
the emitted model is what the user ships. Every budget is therefore measured on the
emitted model (plain ONNX Runtime, held-out inputs where data is involved). A miss
is repaired by re-allocating against a tightened budget; when no plan the candidates
allow meets it, `quantize` fails with the best value measured and the nearest budget
that can be met, and no file is written.

Floors are measured against the model the user gave (its file, not faaq's rewritten float
model), on samples the allocator never used: the verification inputs for sqnr-db (held out
of the calibration set when the source has none left over), one part of the labeled data
for max-drop (the allocator chooses with the other). A floor is a statement about data
not yet seen, so it is checked on a confidence bound (percentile bootstrap over the
held-out samples, 95 % unless the budget says `@0.9`), not on the point estimate; the
report gives the point, the bound, the confidence and the sample counts. Sizes are the
bytes of every file written, external data included.
"""

from __future__ import annotations

import math

import numpy as np

from faaq_onnx.analysis.allocate import _InfeasibleBudget
from faaq_onnx.analysis.budget import LATENCY, Budget
from faaq_onnx.analysis.verify import DEFAULT_CONFIDENCE, upper_bound
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError

REPAIR_TRIES = 4
UNITS = {  # bops: its budget's reference scheme (unit_of)
    "sqnr-db": "dB",
    "max-drop": "pt",
    "avg-bits": "bits",
    "size-mb": "MB",
    "latency": "x W8A8",
    "latency-ms": "ms",
}


def unit_of(budget: Budget) -> str:
    """What a measured value is counted in: a bops budget's own reference scheme (bops=0.5@w8a16
    is relative to W8A16, not W8A8)."""
    if budget.kind == "bops":
        return f"x {str(budget.reference).upper()}"
    return UNITS[budget.kind]


def confidence_of(budget: Budget | None) -> float:
    """The confidence a floor is checked at (`sqnr-db=30@0.9`), 0.95 by default (and without a budget)."""
    return getattr(budget, "confidence", None) or DEFAULT_CONFIDENCE


def measure_emitted(
    comp,
    result,
    budget: Budget,
    labeled=None,
    ep: str = "cpu",
    batch: int = 1,
    output=None,
    allocator_labels: int | None = None,
) -> tuple[float, str, dict]:
    """(value, how it was measured, details) of a budget's quantity on the emitted model.

    For floors the value is the confidence bound the floor is checked on; `labeled` is the
    labeled data the allocator did not choose with, and `allocator_labels` how many it chose
    with (None: it chose with these same labels). `output` names the file to be written
    (its name is in the external data file's name, so it counts in the bytes)."""
    rep = result.report["verify"]
    if budget.kind == "sqnr-db":
        conf = rep.get("confidence", DEFAULT_CONFIDENCE)
        name = min(rep["outputs"], key=lambda o: rep["outputs"][o]["sqnr_db_lower"])
        bound, point = rep["outputs"][name]["sqnr_db_lower"], rep["outputs"][name]["sqnr_db"]
        n = rep["samples"]
        details = {
            "point": point,
            "confidence": conf,
            "held_out_samples": n,
            "allocator_samples": int(len(next(iter(comp.inputs.values())))),
            "reference": rep.get("reference", "the float model"),
        }
        against = details["reference"].split(" (")[0]
        return (
            bound,
            (
                f"{100 * conf:g} % lower confidence bound of the output SQNR (point estimate {point:.4g} dB; "
                f"bootstrap over {n} samples the allocator did not use), plain ORT, against {against}"
            ),
            details,
        )
    if budget.kind == "max-drop":
        x, y = labeled
        conf = confidence_of(budget)
        ref = _reference_correct(comp, x, y)
        got = _correct(result.model, x, y, comp.config.batch_size)
        per_sample = 100.0 * (ref.astype(np.float64) - got)  # points each sample adds to the drop
        point, bound = float(per_sample.mean()), upper_bound(per_sample, conf)
        chose = allocator_labels
        details = {
            "point": point,
            "confidence": conf,
            "held_out_samples": int(len(y)),
            "allocator_samples": chose,
            "reference": "the model given",
        }
        where = (
            f"{len(y)} held-out labeled samples, the allocator chose with {chose} others"
            if chose is not None
            else f"{len(y)} labeled samples, the same the allocator chose with"
        )
        return (
            bound,
            (
                f"{100 * conf:g} % upper confidence bound of the top-1 drop (point estimate {point:.4g} pt; "
                f"bootstrap over {where}), plain ORT, against the model given"
            ),
            details,
        )
    if budget.kind == "avg-bits":
        ws = rep["size"]["per_weight"].values()
        key = "bits" if budget.bits == "effective" else "container_bits"
        n = sum(w["elements"] for w in ws)
        value = sum(w[key] * w["elements"] for w in ws) / n if n else 0.0
        return value, f"{budget.bits} bits of the emitted weights", {}
    if budget.kind == "size-mb":
        from pathlib import Path

        from faaq_onnx.analysis.verify import written_bytes

        name = Path(output).name if output is not None else "model.onnx"
        return (
            written_bytes(result.model, name) / 1e6,
            "bytes of every file written (external data included)",
            {},
        )
    if budget.kind == "bops":
        costs = comp.cost_model(budget)
        return (
            costs.in_budget_units(costs.plan_cost(result.plan.choices), budget),
            "bit operations of the plan",
            {},
        )
    if budget.kind in LATENCY:
        from faaq_onnx.runtime.timing import interleaved_median_ms

        ref_proto, _ = comp.build(comp.uniform(Candidate(8, 8)))
        feeds = _latency_feeds(comp, batch)
        got_ms, ref_ms = interleaved_median_ms([result.model, ref_proto], feeds, ep=ep, pairs=30)
        if budget.kind == "latency":
            return (
                got_ms / ref_ms,
                f"median latency vs the all-W8A8 model, interleaved, batch {batch}, {ep}",
                {},
            )
        return got_ms, f"median latency, batch {batch}, {ep}", {}
    raise KeyError(budget.kind)


def meets(budget: Budget, value: float, tolerance: float = 0.0) -> bool:
    if budget.kind == "sqnr-db":
        return value >= budget.value
    if budget.kind == "max-drop":
        return value <= budget.value + 1e-9
    return value <= budget.value * (1 + tolerance) + 1e-9


def enforce_budget(
    comp,
    result,
    budget: Budget,
    metric: str,
    allocator: str,
    labeled=None,
    ep: str = "cpu",
    batch: int = 1,
    check_labeled=None,
    output=None,
):
    """The result if its emitted model meets `budget`, a repaired one if not, else FaaqError.

    `labeled` is what the allocator chooses with, `check_labeled` what a max-drop floor is
    checked on (labels the allocator never saw; split_labeled makes the two)."""
    tol = comp.config.latency_tolerance if budget.kind in LATENCY else 0.0
    check = labeled if check_labeled is None else check_labeled
    chose = (
        int(len(labeled[1])) if budget.kind == "max-drop" and check_labeled is not None else None
    )
    stated = result.report.get("verify", {}).get("confidence", confidence_of(budget))
    if budget.kind == "sqnr-db" and stated != confidence_of(budget):
        comp.confidence = confidence_of(
            budget
        )  # verification states the bound at the floor's confidence
        result = comp.emit(result.plan)
    tries = []
    current, working = result, budget
    for _ in range(REPAIR_TRIES):
        value, how, details = measure_emitted(
            comp, current, budget, check, ep, batch, output, chose
        )
        tries.append(round(value, 4))
        if meets(budget, value, tol):
            return _record(
                current, budget, value, how, tries, met=True, tolerance=tol, details=details
            )
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
    value, how, details = measure_emitted(comp, extreme, budget, check, ep, batch, output, chose)
    tries.append(round(value, 4))
    if meets(budget, value, tol):
        return _record(extreme, budget, value, how, tries, met=True, tolerance=tol, details=details)
    nearest = _nearest(budget, value)
    raise FaaqError(
        f"budget {budget} cannot be met with candidates {', '.join(map(str, comp.candidates))}: "
        f"the best plan measures {budget.kind}={value:.4g} {unit_of(budget)} on the emitted model ({how}); "
        f"measured per try: {tries}; nearest feasible budget: {budget.kind}={nearest:g}."
        f"{_rewrite_note(comp, budget)} Nothing was written."
    )


def split_labeled(labeled, seed: int = 0):
    """(allocator's part, held-out part) of labeled data: a seeded shuffle cut in half, so a
    max-drop floor is checked on labels the allocator did not choose with (files sorted by
    class are split evenly, not by class)."""
    x, y = labeled
    n = len(y)
    if n < 4:
        raise FaaqError(
            f"a max-drop budget needs at least 4 labeled samples (half to choose the plan with, "
            f"half to check it on); got {n}"
        )
    order = np.random.default_rng(seed).permutation(n)
    cut = n // 2
    a, b = np.sort(order[:cut]), np.sort(order[cut:])
    return (x[a], y[a]), (x[b], y[b])


def hold_out_for_floor(inputs: dict, held: dict, notes: list[str], verify_samples: int):
    """(calibration inputs, held-out inputs, notes, warnings) where a floor is checked on samples
    the calibration and the allocator never see. A source with nothing left over gives
    verification the calibration's first samples: a part of the calibration set is held out
    instead (a quarter, at most `verify_samples`, at least 2)."""
    from faaq_onnx.inputs import reuses_calibration, split_off, without_reuse_note

    n = len(next(iter(inputs.values())))
    m = len(next(iter(held.values()))) if held else 0
    if not reuses_calibration(inputs, held):
        if m < 2:
            raise FaaqError(
                f"a floor budget is checked on a confidence bound over held-out samples: "
                f"verify_samples={verify_samples} gives {m}; give at least 2"
            )
        return inputs, held, notes, []
    split = split_off(inputs, verify_samples)
    if split is None:
        raise FaaqError(
            f"a floor budget is checked on held-out samples: with {n} calibration samples and "
            f"verify_samples={verify_samples} none can be held out (give at least 3 samples and "
            "verify_samples 2 or more)"
        )
    calib, held, k = split
    return (
        calib,
        held,
        without_reuse_note(notes),
        [
            f"the floor is checked on {k} of the {n} calibration samples, held out: "
            f"calibration and the allocator use the other {n - k}"
        ],
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
    choices = {
        g.name: group_candidates(g, comp.candidates)[pick] for g in comp.qgraph.groups.values()
    }
    if not budget.is_floor:
        costs = comp.cost_model(budget)
        choices = {
            g.name: min(
                group_candidates(g, comp.candidates),
                # mypy cannot infer a lambda with a default argument
                key=lambda c, g=g: (costs.group_cost(g, c), -c.w, -c.a),  # type: ignore[misc]
            )
            for g in comp.qgraph.groups.values()
        }
    return BitPlan(choices, {"allocator": "extreme", "budget": str(budget)})


def _nearest(budget: Budget, value: float) -> float:
    """The tightest round budget the measured value satisfies."""
    if budget.kind == "sqnr-db":
        return math.floor(value * 10) / 10
    return math.ceil(value * 1000) / 1000


def _record(
    result,
    budget: Budget,
    value: float,
    how: str,
    tries: list,
    met: bool,
    tolerance: float = 0.0,
    details: dict | None = None,
):
    result.report["budget"] = {
        "budget": str(budget),
        "kind": budget.kind,
        "asked": budget.value,
        "measured": value,
        "unit": unit_of(budget),
        "how": how,
        "met": met,
        "tolerance": tolerance,
        "measured_per_try": tries,
        **(details or {}),
    }
    return result


def _correct(model, x, y, batch_size: int) -> np.ndarray:
    """Per sample: does the model's top-1 match the label (plain ORT)."""
    from faaq_onnx import evaluate

    logits = evaluate.predict(model, x, batch_size)
    return logits.reshape(len(y), -1).argmax(1) == y


def _reference_correct(comp, x, y) -> np.ndarray:
    """_correct of the model the user gave (its file, read by ORT), once per labeled set."""
    key = (id(x), len(y))
    cache = comp.__dict__.setdefault("_reference_correct", {})
    if key not in cache:
        cache[key] = _correct(str(comp.model_path), x, y, comp.config.batch_size)
    return cache[key]


def _rewrite_note(comp, budget: Budget) -> str:
    """Where faaq's float rewrites (e.g. --cle-relu6 replace) change the function, the SQNR of
    the rewritten float model against the model given: a ceiling no plan can pass."""
    if budget.kind != "sqnr-db" or not hasattr(comp, "float_proto"):
        return ""
    try:
        from faaq_onnx.analysis.compared import compared_model
        from faaq_onnx.analysis.metrics import sqnr_db
        from faaq_onnx.runtime.runner import model_outputs

        outs = [
            model_outputs(
                compared_model(model, comp.compared), comp.verify_inputs, comp.config.batch_size
            )
            for model in (str(comp.model_path), comp.float_proto)
        ]
        ceiling = min(sqnr_db(r, f) for r, f in zip(*outs))
    except Exception:  # a note on a failure, never a second failure
        return ""
    if ceiling > budget.value + 10:
        return ""
    rewrites = ",".join(comp.config.optimize) + (
        " --cle-relu6 replace"
        if "cle" in comp.config.optimize and comp.config.cle_relu6 == "replace"
        else ""
    )
    return (
        f" The float model after faaq's rewrites (--optimize {rewrites or 'none'}) "
        f"itself measures {ceiling:.4g} dB against the model given: no plan exceeds that."
    )


def _latency_feeds(comp, batch: int) -> dict[str, np.ndarray]:
    from faaq_onnx.analysis.latency import _batch_feeds

    return _batch_feeds(comp.inputs, batch)
