"""Mixed precision vs uniform vs random on the real CIFAR-10 ResNets (seed 003 claims).

Per model: one phase-1 sweep (candidates w3a8,w4a8,w5a8,w6a8,w8a8; metrics SQNR, KL,
FIT) on 256 calibration images (cifar10_train5000.npz, seed 0). Then, for average
weight bits 3, 4, 5, 6:
- the knapsack plan for each metric, the greedy (Pareto flipping) plan for each metric,
  uniform W3A8/W4A8/W5A8/W6A8, and 5 random plans under the same budget;
- every plan is emitted as a real QDQ model and evaluated with ONNX Runtime on
  cifar10_test.npz (10,000, JPEG) and cifar10_test_lossless1017.npz; its output SQNR
  and KL are also measured jointly with the probe on the 256 calibration images.
Finally the seed 003 §4.2.2 check: Kendall tau between the per-group sensitivity order
from the 256 calibration images (one group at W4A8 alone, the rest float) and the
"ground truth" order from the top-1 drop on the full 10,000-image test set with that one
group alone at W4A8 (fake-quant probe, `Compilation.labeled_accuracy`). Weightless
groups (Add, pooling) only have activation choices; for them "at W4A8" means their
8-bit activation quantizer, on both sides of the comparison.

    python benchmarks/bench_mixed_precision.py --data-dir ../shared/data

(--models resnet20-cifar10 for one model; --kendall-samples 0 skips the slow ground
truth; --resume reuses per-model results already in benchmarks/out/ from the same
settings.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import OUT, cifar_model, data_dir, git_state, machine, write
from scipy.stats import kendalltau

from faaq_onnx.analysis.allocate import random_plan
from faaq_onnx.analysis.budget import Budget
from faaq_onnx.analysis.candidates import group_candidates
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.data import load_inputs, load_labeled
from faaq_onnx.evaluate import evaluate
from faaq_onnx.pipeline import Compilation

TEST_SETS = {
    "test": "cifar10/cifar10_test.npz",
    "lossless": "cifar10/cifar10_test_lossless1017.npz",
}
CALIB = "cifar10/cifar10_train5000.npz"
METRICS = ("sqnr", "kl", "fit")


def plan_key(plan) -> str:
    return json.dumps({g: str(c) for g, c in sorted(plan.choices.items())})


class Evaluator:
    """Emit + evaluate each distinct plan once (identical plans share one measurement)."""

    def __init__(self, comp: Compilation, tests: dict) -> None:
        self.comp, self.tests, self.memo = comp, tests, {}

    def __call__(self, plan) -> dict:
        key = plan_key(plan)
        if key not in self.memo:
            t0 = time.perf_counter()
            res = self.comp.emit(plan)
            joint = self.comp.measure(plan)
            row = {
                "avg_bits": plan.avg_weight_bits(self.comp.qgraph),
                "joint_sqnr_db": joint["sqnr_db"],
                "joint_kl": joint["kl"],
                "emitted_sqnr_db": next(iter(res.report["verify"]["outputs"].values()))["sqnr_db"],
                "weight_bytes": res.report["verify"]["size"]["weight_stored_bytes"],
            }
            for k, (x, y) in self.tests.items():
                row[k] = evaluate(res.model, x, y)["top1"]
            row["eval_s"] = round(time.perf_counter() - t0, 1)
            self.memo[key] = row
            print(
                "   ",
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
                flush=True,
            )
        return dict(self.memo[key])


def run_model(
    name: str, args, ddir: Path, work: Path, tests: dict, calib: dict, calib_y: np.ndarray
) -> dict:
    out: dict = {"model": name, "timings_s": {}}
    t_model = time.perf_counter()
    fp = cifar_model(name, ddir, work)
    out["float"] = {k: evaluate(fp, x, y)["top1"] for k, (x, y) in tests.items()}
    print(name, "float", out["float"], flush=True)

    cfg = QuantConfig(progress=False, calib_size=args.calib_size, sensitivity_samples=None)
    t0 = time.perf_counter()
    comp = Compilation(fp, calib, cfg, target_opset=21)
    out["timings_s"]["compile"] = round(time.perf_counter() - t0, 1)
    out["groups"] = len(comp.qgraph.groups)
    out["weighted_groups"] = sum(1 for g in comp.qgraph.groups.values() if g.weights)
    t0 = time.perf_counter()
    table = comp.sensitivity(
        args.candidates, metrics=METRICS, cache_dir=False, fit_samples=args.fit_samples
    )
    out["timings_s"]["sensitivity"] = round(time.perf_counter() - t0, 1)
    out["sensitivity"] = table.to_dict()
    print(
        name, f"{out['groups']} groups, sensitivity {out['timings_s']['sensitivity']} s", flush=True
    )

    ev = Evaluator(comp, tests)
    t0 = time.perf_counter()
    out["uniform"] = {}
    for s in args.uniform.split(","):
        print(name, "uniform", s, flush=True)
        out["uniform"][s] = ev(comp.uniform(s))

    out["budgets"] = {}
    for b in args.budgets.split(","):
        budget = f"avg-bits={b}"
        entry: dict = {"knapsack": {}, "greedy": {}, "random": []}
        for alloc_name in ("knapsack", "greedy"):
            for m in METRICS:
                print(name, budget, alloc_name, m, flush=True)
                alloc = comp.allocate(budget, metric=m, allocator=alloc_name)
                row = ev(alloc.plan)
                row["objective"] = alloc.objective
                # the summed damage of the plan under the other metrics too, for comparison
                row["objective_all"] = {
                    mm: float(sum(table.damage(g, c, mm) for g, c in alloc.plan.choices.items()))
                    for mm in METRICS
                }
                row["plan"] = alloc.plan.to_dict()["choices"]
                entry[alloc_name][m] = row
        costs = comp.cost_model(Budget.parse(budget))
        limit = costs.limit(Budget.parse(budget))
        for seed in range(args.random_seeds):
            print(name, budget, "random seed", seed, flush=True)
            plan = random_plan(comp.qgraph, comp.candidates, costs, limit, seed)
            row = ev(plan)
            row["objective_all"] = {
                mm: float(sum(table.damage(g, c, mm) for g, c in plan.choices.items()))
                for mm in METRICS
            }
            entry["random"].append(row)
        out["budgets"][b] = entry
    out["timings_s"]["plans"] = round(time.perf_counter() - t0, 1)
    out["distinct_plans_evaluated"] = len(ev.memo)

    # Kendall tau (seed 003 §4.2.2) ------------------------------------------------------
    if args.kendall_samples:
        t0 = time.perf_counter()
        w4a8 = Candidate(4, 8)
        probe_cand = {}
        for g in comp.qgraph.groups.values():
            opts = group_candidates(g, comp.candidates)
            probe_cand[g.name] = w4a8 if w4a8 in opts else min(opts, key=lambda c: (c.w, c.a))
        x, y = tests["test"]
        n = min(args.kendall_samples, len(y))
        acc_test = comp.labeled_accuracy((x[:n], y[:n]))
        acc_cal = comp.labeled_accuracy((calib["input"], calib_y))
        base_test, base_cal = acc_test(None), acc_cal(None)
        per_group = {}
        for i, (g, c) in enumerate(probe_cand.items()):
            ch = {g: c}
            per_group[g] = {
                "candidate": str(c),
                "test_drop_pp": 100 * (base_test - acc_test(ch)),
                "calib256_drop_pp": 100 * (base_cal - acc_cal(ch)),
                **{m: table.damage(g, c, m) for m in METRICS},
            }
            print(name, "kendall", i + 1, len(probe_cand), g, per_group[g], flush=True)
        truth = np.array([per_group[g]["test_drop_pp"] for g in probe_cand])
        taus = {}
        for m in (*METRICS, "calib256_drop_pp"):
            est = np.array([per_group[g][m] for g in probe_cand])
            tau, p = kendalltau(est, truth)
            taus[m] = {"tau": float(tau), "p": float(p)}
            weighted = [k for k, g in enumerate(probe_cand) if comp.qgraph.groups[g].weights]
            tau_w, p_w = kendalltau(est[weighted], truth[weighted])
            taus[m].update({"tau_weighted_only": float(tau_w), "p_weighted_only": float(p_w)})
        out["kendall"] = {
            "samples": n,
            "float_top1_test": base_test,
            "float_top1_calib256": base_cal,
            "per_group": per_group,
            "tau": taus,
            "ground_truth_ties": int(len(truth) - len(np.unique(truth))),
        }
        out["timings_s"]["kendall"] = round(time.perf_counter() - t0, 1)
    out["timings_s"]["total"] = round(time.perf_counter() - t_model, 1)
    return out


def pct(v) -> str:
    return f"{100 * v:.2f}"


def markdown(results: list[dict], args) -> str:
    md = [
        f"Calibration: {args.calib_size} images of cifar10_train5000.npz (seed 0); FIT on {args.fit_samples} of them. "
        "Top-1 in % of the emitted QDQ models through ONNX Runtime (CPU EP): test = cifar10_test.npz (10,000, "
        "JPEG), lossless = cifar10_test_lossless1017.npz. Joint SQNR = output SQNR of the whole plan, probe, "
        "256 calibration images. Random = mean ± std over "
        f"{args.random_seeds} seeds of `random_plan` at the same budget.",
        "",
    ]
    for r in results:
        md += [
            f"### {r['model']} ({r['groups']} groups, {r['weighted_groups']} with weights)",
            "",
            f"float: test {pct(r['float']['test'])} %, lossless {pct(r['float']['lossless'])} %; "
            f"sensitivity sweep {r['timings_s']['sensitivity']} s; library git {(r.get('git') or {}).get('head', '?')}"
            f"{' + local changes' if (r.get('git') or {}).get('modified') else ''}",
            "",
            "| budget (avg w bits) | plan | avg bits | joint SQNR dB | top-1 test | top-1 lossless |",
            "|---|---|---|---|---|---|",
        ]
        for s, row in r["uniform"].items():
            md.append(
                f"| {Candidate.parse(s).w} | uniform {s.upper()} | {row['avg_bits']:.2f} | "
                f"{row['joint_sqnr_db']:.2f} | {pct(row['test'])} | {pct(row['lossless'])} |"
            )
        for b, e in r["budgets"].items():
            for al in ("knapsack", "greedy"):
                for m, row in e[al].items():
                    md.append(
                        f"| {b} | {al} {m} | {row['avg_bits']:.2f} | {row['joint_sqnr_db']:.2f} | "
                        f"{pct(row['test'])} | {pct(row['lossless'])} |"
                    )
            rs = e["random"]

            def ms(k, scale=1.0, rs=rs):
                v = np.array([x[k] for x in rs]) * scale
                return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}"

            md.append(
                f"| {b} | random (n={len(rs)}) | {ms('avg_bits')} | {ms('joint_sqnr_db')} | "
                f"{ms('test', 100)} | {ms('lossless', 100)} |"
            )
        md += [
            "",
            "Greedy vs knapsack at equal budgets (objective = summed per-group damage under the "
            "allocation metric: noise-to-signal ratio for sqnr, KL, FIT; lower is better):",
            "",
            "| budget | metric | objective greedy | objective knapsack | joint SQNR greedy / knapsack dB | "
            "top-1 test greedy / knapsack | avg bits greedy / knapsack |",
            "|---|---|---|---|---|---|---|",
        ]
        for b, e in r["budgets"].items():
            for m in METRICS:
                g, k = e["greedy"][m], e["knapsack"][m]
                md.append(
                    f"| {b} | {m} | {g['objective']:.4g} | {k['objective']:.4g} | "
                    f"{g['joint_sqnr_db']:.2f} / {k['joint_sqnr_db']:.2f} | {pct(g['test'])} / {pct(k['test'])} | "
                    f"{g['avg_bits']:.3f} / {k['avg_bits']:.3f} |"
                )
        if "kendall" in r:
            kd = r["kendall"]
            md += [
                "",
                f"Kendall tau (tau-b) vs the ground-truth order (top-1 drop on {kd['samples']} test images, "
                f"one group at W4A8 alone; {kd['ground_truth_ties']} tied values in the ground truth):",
                "",
                "| sensitivity from 256 calib images | tau (all groups) | p | tau (weighted groups only) | p |",
                "|---|---|---|---|---|",
            ]
            for m, t in kd["tau"].items():
                label = "top-1 drop on the 256 calib images" if m == "calib256_drop_pp" else m
                md.append(
                    f"| {label} | {t['tau']:.3f} | {t['p']:.2g} | {t['tau_weighted_only']:.3f} | "
                    f"{t['p_weighted_only']:.2g} |"
                )
        md.append("")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="resnet20-cifar10,resnet56-cifar10")
    ap.add_argument("--candidates", default="w3a8,w4a8,w5a8,w6a8,w8a8")
    ap.add_argument("--budgets", default="3,4,5,6", help="average weight bits")
    ap.add_argument("--uniform", default="w3a8,w4a8,w5a8,w6a8")
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--fit-samples", type=int, default=256)
    ap.add_argument(
        "--kendall-samples", type=int, default=10000, help="0 skips the Kendall tau ground truth"
    )
    ap.add_argument(
        "--resume", action="store_true", help="reuse per-model results from benchmarks/out/"
    )
    args = ap.parse_args()
    git0 = git_state()  # at start: the library this run imported
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-bench-mp-"))
    tests = {k: load_labeled(ddir / v) for k, v in TEST_SETS.items()}
    calib = load_inputs(ddir / CALIB, ["input"], limit=args.calib_size, seed=0)
    xc, calib_y = load_labeled(
        ddir / CALIB, limit=args.calib_size, seed=0
    )  # same seeded subset, for labels
    assert np.array_equal(xc, calib["input"]), "calibration subset and its labels disagree"
    settings = {k: v for k, v in vars(args).items() if k not in ("data_dir", "models", "resume")}
    results = []
    t_all = time.perf_counter()
    for name in args.models.split(","):
        tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        cache = (
            OUT / f"mixed_precision.{name}.{tag}.json"
        )  # one file per settings: other runs do not clobber it
        if args.resume and cache.exists():
            saved = json.loads(cache.read_text())
            if saved.get("settings") == settings:
                print(name, "reusing", cache, flush=True)
                results.append({**saved["result"], "git": saved.get("git")})
                continue
        load = os.getloadavg()
        r = run_model(name, args, ddir, work, tests, calib, calib_y)
        r["loadavg_before"] = load
        r["git"] = git0
        OUT.mkdir(parents=True, exist_ok=True)
        cache.write_text(
            json.dumps(
                {"settings": settings, "machine": machine(), "git": git0, "result": r},
                indent=1,
                default=str,
            )
        )
        results.append(r)
    payload = {
        "machine": machine(),
        "git": git0,
        "settings": settings,
        "wall_s": round(time.perf_counter() - t_all, 1),
        "results": results,
    }
    write("mixed_precision", payload, markdown(results, args))


if __name__ == "__main__":
    main()
