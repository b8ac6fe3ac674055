"""In which model a weight width's rounding should be fit, for mixed precision over several
activation widths (seed 003 §3.5: phase 1 measures each candidate with optimized weights).

Mixed precision prepares one rounding per weight width, in one uniform model of that width
(optimize.rounding.rounding_plans). This rounds the W4 weights (the default --optimize auto:
GPTQ on the quantized model's layer inputs) in the W4A4, W4A6 and W4A8 models in turn, and
measures each rounding as uniform W4A8, W4A6 and W4A4 (output SQNR against the float model on
the sweep's samples, as phase 1 measures: no bias correction).

    python benchmarks/bench_rounding_context.py --data-dir ../shared/data --work /tmp/rc
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import cifar_model, data_dir, git_state, machine, write

CONTEXTS = ("w4a4", "w4a6", "w4a8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--work", default="/tmp/faaq-rounding-context")
    ap.add_argument("--model", default="resnet56-cifar10")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from faaq_onnx.analysis.candidates import parse_candidates
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import Compilation

    model = cifar_model(args.model, ddir, work)
    calib = str(ddir / "cifar10" / "cifar10_train5000.npz")
    rows: dict[str, dict[str, float]] = {}
    t0 = time.time()
    for ctx in CONTEXTS:
        config = QuantConfig(progress=False, calib_size=256, seed=0, optimize="auto")
        comp = Compilation(model, calib, config, target_opset=21)
        comp.optimize_rounding([comp.uniform(ctx)])
        comp.sensitivity(parse_candidates("w4a8,w8a8"))  # settles the sweep's samples
        rows[ctx] = {
            c: round(comp.measure(comp.uniform(c))["sqnr_db"], 2) for c in reversed(CONTEXTS)
        }
        rows[ctx]["samples"] = comp.table.meta.get("samples")
        print(ctx, rows[ctx], flush=True)
    meta = {**machine(), "git": git_state(), "wall_s": round(time.time() - t0, 1)}
    md = [
        f"# W4 rounding fit in which model: {args.model}",
        "",
        f"{meta['date']}, git {meta['git'].get('head', '?')}, {meta['wall_s']} s. GPTQ (the default "
        "`--optimize auto`) of the W4 weights in the uniform model named in the first column; "
        "each rounding then measured as three uniform plans: output SQNR (dB) against the "
        "float model on the sweep's samples (256 calibration images of cifar10_train5000, "
        "seed 0), no bias correction. `python benchmarks/bench_rounding_context.py --data-dir "
        f"../shared/data --model {args.model}`",
        "",
        "| rounded in | measured as W4A8 | as W4A6 | as W4A4 | sweep samples |",
        "|---|---|---|---|---|",
    ]
    for ctx, r in rows.items():
        md.append(f"| {ctx} | {r['w4a8']} | {r['w4a6']} | {r['w4a4']} | {r['samples']} |")
    write(
        "rounding_context", {"meta": meta, "model": args.model, "rows": rows}, "\n".join(md) + "\n"
    )


if __name__ == "__main__":
    main()
