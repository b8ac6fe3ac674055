"""What seed 003's expanded candidate set (`--candidates wide`) can reach at a BOPs budget,
measured jointly, beside the allocator's additive estimate.

For one model and 256 calibration images, the way the default command prepares them (GPTQ
per candidate weight width, the default SQNR sweep): for every candidate of `wide`, and for
W4A8 (not in `wide`), the uniform plan's output SQNR measured jointly on the sweep's samples,
the allocator's estimate of it (10·log10 of the summed single-group noise-to-signal ratios)
and its BOPs relative to W8A16; then the plan the allocator chooses at `--budget` and its
joint SQNR. Where no plan of the set near the budget measures close to uniform W4A8, mixed
precision over `wide` cannot match W4A8 there whatever it allocates.

    python benchmarks/bench_candidate_interactions.py --data-dir ../shared/data --work /tmp/ci
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

from common import cifar_model, data_dir, git_state, machine, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--work", default="/tmp/faaq-candidate-interactions")
    ap.add_argument("--model", default="resnet56-cifar10")
    ap.add_argument("--budget", default="bops=0.25@w8a16")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from faaq_onnx.analysis.budget import Budget, CostModel
    from faaq_onnx.analysis.candidates import parse_candidates
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.optimize.rounding import rounding_plans
    from faaq_onnx.pipeline import Compilation
    from faaq_onnx.plan import BitPlan

    t0 = time.time()
    model = cifar_model(args.model, ddir, work)
    comp = Compilation(
        model,
        str(ddir / "cifar10" / "cifar10_train5000.npz"),
        QuantConfig(progress=False, calib_size=256, seed=0, optimize="auto"),
        target_opset=21,
    )
    wide = parse_candidates("wide")
    comp.optimize_rounding(rounding_plans(comp, None, wide))
    table = comp.sensitivity(wide)
    budget = Budget.parse(args.budget)
    bops = CostModel(comp.qgraph, "bops", reference=budget.reference)

    def ratio(choices) -> float:
        return round(bops.in_budget_units(bops.plan_cost(choices), budget), 4)

    rows = {}
    for cand in [*wide, *parse_candidates("w4a8")]:
        plan = BitPlan.uniform(comp.qgraph, cand)
        measured = all(str(c) in table.table[g] for g, c in plan.choices.items())
        if measured:
            noise = sum(table.damage(g, c, "sqnr") for g, c in plan.choices.items())
            estimate = round(-10 * math.log10(noise), 2)
        else:  # W4A8 is not in the set: the sweep did not measure it
            estimate = None
        rows[str(cand)] = {
            "bops": ratio(plan.choices),
            "joint_sqnr_db": round(comp.measure(plan)["sqnr_db"], 2),
            "estimate_db": estimate,
        }
        print(cand, rows[str(cand)], flush=True)
    alloc = comp.allocate(args.budget)
    mixed = {
        "plan": dict(Counter(str(c) for c in alloc.plan.choices.values())),
        "joint_sqnr_db": round(alloc.plan.meta["joint"]["sqnr_db"], 2),
        "estimate_db": round(-10 * math.log10(alloc.objective), 2),
        "bops": ratio(alloc.plan.choices),
    }
    samples = table.meta.get("samples")
    meta = {**machine(), "git": git_state(), "wall_s": round(time.time() - t0, 1)}
    payload = {"meta": meta, "model": args.model, "budget": args.budget, "uniform": rows}
    payload["mixed"] = mixed
    md = [
        f"# `wide` at {args.budget} on {args.model}: what the set can reach",
        "",
        f"{meta['date']}, git {meta['git'].get('head', '?')}, {meta['wall_s']} s. Calibration: 256 "
        f"of cifar10_train5000 (seed 0); SQNR on the {samples} sweep samples the default "
        "`--sensitivity-samples auto` chose; weights rounded as the default command rounds them "
        "(GPTQ + bias correction per weight width). `python benchmarks/bench_candidate_interactions.py "
        f"--data-dir ../shared/data --model {args.model} --budget {args.budget}`",
        "",
        "| plan | BOPs / W8A16 | joint output SQNR dB | allocator's estimate dB |",
        "|---|---|---|---|",
    ]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["bops"]):
        est = "–" if r["estimate_db"] is None else f"{r['estimate_db']:.2f}"
        md.append(f"| uniform {name} | {r['bops']:.4f} | {r['joint_sqnr_db']:.2f} | {est} |")
    plan = ", ".join(f"{k}×{v}" for k, v in sorted(mixed["plan"].items(), key=lambda kv: -kv[1]))
    md.append(
        f"| mixed over `wide` ({plan}) | {mixed['bops']:.4f} | {mixed['joint_sqnr_db']:.2f} | "
        f"{mixed['estimate_db']:.2f} |"
    )
    write(f"candidate_interactions_{args.model}", payload, "\n".join(md) + "\n")
    print("\n".join(md))
    print(json.dumps(mixed))


if __name__ == "__main__":
    main()
