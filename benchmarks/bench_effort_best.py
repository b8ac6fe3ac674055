"""`--effort best` with its default patience against learning every layer (`--optimize-patience 0`).

For each model and scheme: `faaq quantize model.onnx -o q.onnx --calib ... --scheme wNa8
--effort best --no-cache`, scored by `faaq eval` against the float model (top-1, agreement,
KL), its wall time and peak RSS, whether learning stopped early and after how many units, and
which model `best` kept. Where learning stopped early the same command with
`--optimize-patience 0` (every layer learned, as before patience) runs too, so the accuracy
and time the stop traded are side by side; where it did not stop, the two commands are the
same run. Models: ResNet-20/56 (real CIFAR-10 weights; 256 images of cifar10_train5000 with
--seed 0, the 10,000 JPEG test images) and EfficientNet-Lite0 (real weights; 256 val1300
calibration / 1,044 evaluation images, bench_seed003_tables.prepare); `--timing-only` models
(ResNet-18/50, random weights, 256 val1300 images) get wall time and memory only.

    python benchmarks/bench_effort_best.py --data-dir ../shared/data
    python benchmarks/bench_effort_best.py --data-dir ../shared/data --plain \
        --models resnet18-imagenet,resnet50-imagenet --out effort_best_r18_r50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_seed003_tables import prepare, quantize_args
from common import data_dir, meta_stamp, run_meta, scores, timed_process, write

ROWS = {
    "resnet20": ("w4a8", "w3a8", "w2a8"),
    "resnet56": ("w4a8", "w3a8", "w2a8"),
    "efficientnet-lite0": ("w4a8",),
}
TIMING_ONLY = {"resnet18-imagenet": "w4a8", "resnet50-imagenet": "w4a8"}


def quantize(args: list[str], report: Path) -> dict:
    """Wall seconds and peak RSS (MB) of one `faaq quantize` process (common.timed_process), and
    what its JSON report says the rounding and the effort did."""
    run = timed_process(
        [sys.executable, "-m", "faaq_onnx", "quantize", *args, "--json", str(report), "-q"]
    )
    rep = json.loads(report.read_text())
    passes = (rep.get("optimization") or {}).get("rounding") or {}
    learned = next(iter(passes.values()), {})
    units = learned.get("units") or []
    effort = rep.get("effort") or {}
    return {
        **run,  # wall_s, peak_rss_mb
        "stopped_after": sum(u.get("tried", True) for u in units)
        if learned.get("stopped")
        else None,
        # where the default's model was kept, its rounding pass is GPTQ's: the effort record says
        # what the learned run did ("... (learning stopped after 3 of 50 units)")
        "learned_rounding": (effort.get("learned") or {}).get("rounding"),
        "units": len(units),
        "learned_units": sum(u.get("kept") == "learned" for u in units),
        "kept": effort.get("kept"),
        "sqnr_learned_db": (effort.get("learned") or {}).get("output_sqnr_db"),
        "sqnr_default_db": (effort.get("default") or {}).get("output_sqnr_db"),
    }


def random_weight_model(name: str, ddir: Path, work: Path) -> tuple[Path, Path]:
    from faaq_onnx import zoo
    from faaq_onnx.data import load_inputs

    fp, calib = work / f"{name}.onnx", work / "imagenet_calib256.npz"
    if not fp.exists():
        zoo.export(name, fp)
    if not calib.exists():
        x = load_inputs(ddir / "imagenet/val1300", ["input"], preset="imagenet", limit=256, seed=0)
        np.savez(calib, input=np.asarray(x["input"]))
    return fp, calib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default=",".join([*ROWS, *TIMING_ONLY]))
    ap.add_argument("--work", help="where the float models and data are kept (cached)")
    ap.add_argument("--out", default="effort_best")
    ap.add_argument(
        "--baseline-models",
        default="resnet20,resnet56",
        help="models whose stopped runs also run with --optimize-patience 0 (each such run "
        "learns every layer: 20 min for EfficientNet-Lite0, 45+ for ResNet-50)",
    )
    ap.add_argument(
        "--plain", action="store_true", help="also time the plain command (no --effort) first"
    )
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-best-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, loads = [], [os.getloadavg()[0]]
    for model in args.models.split(","):
        if model in TIMING_ONLY:
            fp, calib = random_weight_model(model, ddir, work)
            files = {"float": fp, "calib": calib, "extra": [], "eval": None, "prefix": model}
            schemes: tuple[str, ...] = (TIMING_ONLY[model],)
        else:
            files = prepare(model, ddir, work)
            schemes = ROWS[model]
        for scheme in schemes:
            best = ["--effort", "best"]
            variants = [("best", best), ("patience 0", [*best, "--optimize-patience", "0"])]
            if args.plain:
                variants.insert(0, ("plain", []))
            for name, flags in variants:
                if name == "patience 0" and (
                    rows[-1]["stopped_after"] is None or model not in args.baseline_models
                ):
                    break  # learning did not stop early: patience 0 is the same run
                q = work / f"{files['prefix']}_{scheme}_{name.replace(' ', '')}.onnx"
                run = quantize(
                    [*quantize_args(files, q, scheme), "--no-cache", *flags],
                    work / "report.json",
                )
                loads.append(os.getloadavg()[0])
                if files["eval"] is not None:
                    run |= scores(files["float"], [q], files["eval"], work)[q.name]
                rows.append({"model": model, "scheme": scheme, "variant": name} | run)
                print(rows[-1], flush=True)
    meta = run_meta(loads)
    lines = [
        "`--effort best` (learning stops after 3 layers in a row keep GPTQ's rounding) and, where "
        "it stopped, `--optimize-patience 0` (every layer learned). "
        f"{meta_stamp(meta)} "
        f"`python benchmarks/bench_effort_best.py {' '.join(sys.argv[1:])}`",
        "",
        "| model | scheme | variant | top-1 % | agreement % | KL | learned layers kept | "
        "stopped after | best kept (learned / default dB) | wall s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = (
            f"{r['top1']:.2f} | {r['agreement']:.2f} | {r['kl']:.4f}"
            if "top1" in r
            else "– | – | –"
        )
        sq = (
            f"{r['kept']} ({r['sqnr_learned_db']:.1f} / {r['sqnr_default_db']:.1f})"
            if r["kept"]
            else "–"
        )
        peak = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "–"
        lines.append(
            f"| {r['model']} | {r['scheme']} | {r['variant']} | {acc} | "
            f"{r['learned_units']} of {r['units']} | {r['stopped_after'] or '–'} | {sq} | "
            f"{r['wall_s']:.0f} | {peak} |"
        )
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
