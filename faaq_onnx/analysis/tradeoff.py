"""The accuracy/size/BOPs trade-off: plans across budgets, measured jointly.

Used by `faaq analyze`: for a sweep of BOPs budgets, the greedy and knapsack plans
are measured in the probe session (output SQNR, KL; top-1 where labeled data is given), and
each uniform candidate is a reference point. Sizes are bytes as stored (packed containers),
BOPs relative to W8A8 (and to W8A16, seed 003's convention, in the JSON).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faaq_onnx.analysis.budget import Budget
from faaq_onnx.analysis.candidates import group_candidates
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.plan import BitPlan


def plan_point(comp, plan: BitPlan, label: str, accuracy=None) -> dict:
    """One point of the curve; `accuracy(choices)` (labeled data) adds the plan's top-1."""
    size = comp.cost_model(Budget("size-mb", 1.0))
    bops = comp.cost_model(Budget("bops", 1.0))
    ref = bops.plan_cost(comp.uniform(Candidate(8, 8)).choices)
    ref16 = bops.plan_cost(comp.uniform(Candidate(8, 16)).choices)
    m = comp.measure(plan)
    cost = bops.plan_cost(plan.choices)
    return {
        "label": label,
        "model_bytes": size.plan_cost(plan.choices) + size.other_bytes,
        "relative_bops": cost / ref if ref else float("nan"),
        "relative_bops_w8a16": cost / ref16 if ref16 else float("nan"),
        **({"top1": accuracy(plan.choices)} if accuracy is not None else {}),
        "avg_weight_bits": plan.avg_weight_bits(comp.qgraph),
        "sqnr_db": m["sqnr_db"],
        "kl": m["kl"],
        "plan": plan.to_dict()["choices"],
        **(
            {"latency_ms": comp.latency.plan_ms(plan.choices, Candidate(8, 8))}
            if comp.latency is not None
            else {}
        ),
    }


def tradeoff(comp, metric: str = "sqnr", points: int = 8, accuracy=None) -> dict:
    """Greedy and knapsack plans over a sweep of BOPs budgets, plus uniform candidates;
    `accuracy(choices or None)` (comp.labeled_accuracy) adds top-1, and the float model's."""
    if comp.table is None:
        raise FaaqError("run the sensitivity stage first")
    cands = comp.candidates
    bops = comp.cost_model(Budget("bops", 1.0))
    ref = bops.plan_cost(comp.uniform(Candidate(8, 8)).choices)
    opts = {g.name: group_candidates(g, cands) for g in comp.qgraph.groups.values()}
    lo = bops.plan_cost({g: o[-1] for g, o in opts.items()}) / ref
    hi = bops.plan_cost({g: o[0] for g, o in opts.items()}) / ref
    out: dict[str, Any] = {"metric": metric, "uniform": [], "greedy": [], "knapsack": []}
    if accuracy is not None:
        out["float_top1"] = accuracy(None)
    for c in cands:
        out["uniform"].append(plan_point(comp, comp.uniform(c), str(c), accuracy))
    for r in np.linspace(lo, hi, points):
        budget = Budget("bops", float(r) * 1.0000001)
        for method in ("greedy", "knapsack"):
            alloc = comp.allocate(budget, metric, method, uniform_check=False)
            out[method].append(plan_point(comp, alloc.plan, f"{method} bops<={r:.3f}", accuracy))
    return out


def measure_latency(comp, curve: dict, ep: str = "cpu", batch: int = 1, pairs: int = 30) -> None:
    """Time the model each uniform and knapsack point would write against the float model the
    user gave, all interleaved in one shuffled pass (one load for every ratio); adds
    `measured_latency_ms` and `measured_latency_ratio` (x float) to those points, in place.
    The models are built without bias correction: it changes no op, so no timing."""
    from faaq_onnx.analysis.latency import _batch_feeds
    from faaq_onnx.analysis.verify import against_reference
    from faaq_onnx.runtime.timing import interleaved_median_ms

    points = curve["uniform"] + curve["knapsack"]
    models = [
        comp.build(
            BitPlan({g: Candidate.parse(c) for g, c in p["plan"].items()}), bias_corrected=False
        )[0]
        for p in points
    ]
    feeds = _batch_feeds(comp.verify_inputs, batch)
    ms = against_reference(
        str(comp.model_path),
        comp.float_proto,
        lambda ref: interleaved_median_ms([ref, *models], feeds, ep=ep, pairs=pairs),
    )
    curve["float_latency_ms"] = ms[0]
    curve["latency_how"] = (
        f"{ep}, batch {batch}: median of {pairs} interleaved rounds (one run of every model "
        "per round, order shuffled, threads not spinning), emitted models against the float one"
    )
    for p, t in zip(points, ms[1:]):
        p["measured_latency_ms"] = t
        p["measured_latency_ratio"] = t / ms[0]


def plot_tradeoff(curve: dict, path) -> None:
    import matplotlib

    from faaq_onnx.outputs import savefig_atomic

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("model_bytes", "model size (MB, as stored)"),
        ("relative_bops", "BOPs relative to W8A8"),
    ]
    if curve["uniform"] and "latency_ms" in curve["uniform"][0]:
        panels.append(("latency_ms", "latency (ms, from measured kernel costs)"))
    if curve["uniform"] and "measured_latency_ratio" in curve["uniform"][0]:
        panels.append(("measured_latency_ratio", "latency x float (the emitted models, timed)"))
    rows = [("sqnr_db", "output SQNR (dB, measured jointly)", 1.0)]
    if "float_top1" in curve:
        rows.append(("top1", "top-1 % on the labeled data", 100.0))
    fig, grid = plt.subplots(
        len(rows), len(panels), figsize=(5.5 * len(panels), 4.2 * len(rows)), squeeze=False
    )
    for axes, (ykey, ylabel, yscale) in zip(grid, rows):
        for ax, (key, xlabel) in zip(axes, panels):
            _panel(ax, curve, key, ykey, yscale)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        axes[0].legend(loc="lower right")
    fig.suptitle("faaq trade-off: mixed-precision plans vs uniform schemes (stars)")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)


def _panel(ax, curve: dict, key: str, ykey: str, yscale: float) -> None:
    """One metric against one cost: greedy and knapsack curves, uniform schemes as stars."""
    scale = 1e-6 if key == "model_bytes" else 1.0
    for method, style in (("greedy", "o-"), ("knapsack", "s--")):
        pts = sorted((p for p in curve[method] if key in p), key=lambda p: p[key])
        if not pts:  # greedy plans are not timed
            continue
        ax.plot(
            [p[key] * scale for p in pts],
            [p[ykey] * yscale for p in pts],
            style,
            label=f"{method} ({curve['metric']})",
        )
    for p in curve["uniform"]:
        ax.plot(p[key] * scale, p[ykey] * yscale, "k*", markersize=10)
        ax.annotate(
            p["label"],
            (p[key] * scale, p[ykey] * yscale),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=8,
        )
    if ykey == "top1":
        ax.axhline(curve["float_top1"] * yscale, color="gray", linestyle=":", label="float")
    ax.grid(alpha=0.3)


def plot_sensitivity(table, path, metric_key: str = "sqnr_db") -> None:
    import matplotlib

    from faaq_onnx.outputs import savefig_atomic

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(table.table)
    cands = sorted(
        {c for row in table.table.values() for c in row},
        key=lambda c: (Candidate.parse(c).w, Candidate.parse(c).a),
    )
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(groups) + 1)))
    height = 0.8 / max(1, len(cands))
    y = np.arange(len(groups))
    for i, c in enumerate(cands):
        vals = [table.table[g].get(c, {}).get(metric_key, np.nan) for g in groups]
        ax.barh(y + i * height, vals, height=height, label=c)
    ax.set_yticks(y + 0.4 - height / 2)
    ax.set_yticklabels([g.replace("g:", "")[-40:] for g in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(
        {
            "sqnr_db": "output SQNR (dB) with this group alone quantized — lower = more sensitive",
            "kl": "output KL divergence — higher = more sensitive",
            "fit": "Fisher-weighted error — higher = more sensitive",
        }[metric_key]
    )
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)
