"""EfficientNet-Lite0 over calibration draws: one `faaq quantize` command, from one or more code
trees, calibrated on several 256-image draws of val1300 and scored on each draw's 1,044 others.

Top-1 on 1,044 images moves by about a point with changes at the level of rounding (one draw
cannot tell two such versions apart); the mean over draws of the drop from float, of KL to float
and of argmax agreement can. Draw k is a permutation of val1300 seeded with k (draw 0 is the
split of bench_seed003_tables.prepare, the one the README's EfficientNet-Lite0 rows use).

    python benchmarks/bench_effnet_draws.py --data-dir ../shared/data --draws 0,1,2,3,4 \\
        --tree before=/tmp/old --tree after=. --flags "--scheme w4a8" --out effnet_draws_NAME

`--tree TAG=PATH` (repeatable): a checkout whose faaq_onnx runs the command (default: this one).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_seed003_tables import imagenet_split, prepare
from common import data_dir, meta_stamp, run_meta, scores, timed_process, write

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd, env) -> dict:
    """One quantize process run to its end: its wall seconds and peak resident memory (GB)."""
    run = timed_process(cmd, cwd=cwd, env=env)
    return {"wall_s": round(run["wall_s"], 1), "peak_rss_gb": round(run["peak_rss_mb"] / 1024, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--draws", default="0,1,2,3,4")
    ap.add_argument("--tree", action="append", help="TAG=PATH of a checkout (repeatable)")
    ap.add_argument("--flags", default="--scheme w4a8", help="faaq quantize options")
    ap.add_argument("--work", help="where the model and the draws are kept (cached)")
    ap.add_argument("--out", default="effnet_draws")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-draws-"))
    work.mkdir(parents=True, exist_ok=True)
    files = prepare("efficientnet-lite0", ddir, work)  # the model, and draw 0's split
    fp, draw0 = files["float"], (files["calib"], files["eval"])
    trees = dict(t.split("=", 1) for t in (args.tree or [f"this={ROOT}"]))
    rows, loads = [], [os.getloadavg()[0]]
    for k in [int(d) for d in args.draws.split(",")]:
        cal, ev = draw0 if k == 0 else (work / f"calib{k}.npz", work / f"eval{k}.npz")
        if not ev.exists():
            imagenet_split(ddir, k, cal, ev)
        written, cost = {}, {}
        for tag, tree in trees.items():
            written[tag] = work / f"{tag}_{k}.onnx"
            cost[tag] = timed(
                [sys.executable, "-P", "-m", "faaq_onnx", "quantize", str(fp), "-o",
                 str(written[tag]), "--calib", str(cal), "--no-cache", "-q", *args.flags.split()],
                cwd=tree, env={**os.environ, "PYTHONPATH": str(Path(tree).resolve())},
            )  # fmt: skip
            loads.append(os.getloadavg()[0])
        got = scores(fp, list(written.values()), ev, work)  # faaq eval: top-1, KL, agreement
        for tag, q in written.items():
            rows.append({"draw": k, "tree": tag} | got[q.name] | cost[tag])
            print(json.dumps(rows[-1]), flush=True)
    meta = run_meta(loads)
    lines = [
        f"EfficientNet-Lite0 `faaq quantize {args.flags}` over calibration draws (256 val1300 "
        f"images each, scored on the 1,044 others). {meta_stamp(meta)} "
        f"`python benchmarks/bench_effnet_draws.py {shlex.join(sys.argv[1:])}`",
        "",
        "| tree | draw | top-1 % (float) | drop pt | KL to float | agreement % | wall s | peak GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tree']} | {r['draw']} | {r['top1']:.2f} ({r['float_top1']:.2f}) | "
            f"{r['top1'] - r['float_top1']:+.2f} | {r['kl']:.4f} | {r['agreement']:.2f} | "
            f"{r['wall_s']:.0f} | {r['peak_rss_gb']:.2f} |"
        )
    for tag in trees:
        mine = [r for r in rows if r["tree"] == tag]
        drop = np.mean([r["top1"] - r["float_top1"] for r in mine])
        kl, agree = np.mean([r["kl"] for r in mine]), np.mean([r["agreement"] for r in mine])
        lines.append(
            f"| **{tag}** | mean of {len(mine)} | | {drop:+.2f} | {kl:.4f} | {agree:.2f} | | |"
        )
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
