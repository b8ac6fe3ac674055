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
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import data_dir, meta_stamp, run_meta, write

ROOT = Path(__file__).resolve().parents[1]


def draw(k: int, ddir: Path, work: Path) -> tuple[Path, Path]:
    cal, ev = work / f"calib{k}.npz", work / f"eval{k}.npz"
    if not ev.exists():
        from faaq_onnx.data import load_labeled

        x, y = load_labeled(
            ddir / "imagenet/val1300",
            preset="imagenet-inception",
            labels=ddir / "imagenet/val1300_labels.txt",
        )
        order = np.random.default_rng(k).permutation(len(y))
        ci, ei = np.sort(order[:256]), np.sort(order[256:])
        np.savez(cal, input=x[ci])
        np.savez(ev, x=x[ei], y=y[ei])
    return cal, ev


def logits(model: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = [s.run(None, {name: x[i : i + 64]})[0] for i in range(0, len(x), 64)]
    return np.concatenate(out).astype(np.float64)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


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
    fp = work / "effnet_float.onnx"
    if not fp.exists():
        from faaq_onnx import zoo

        zoo.export("efficientnet-lite0-imagenet", fp, weights="auto")
    trees = dict(t.split("=", 1) for t in (args.tree or [f"this={ROOT}"]))
    rows, loads = [], [os.getloadavg()[0]]
    for k in [int(d) for d in args.draws.split(",")]:
        cal, ev = draw(k, ddir, work)
        data = np.load(ev)
        x, y = data["x"], data["y"]
        ref = logits(fp, x)
        for tag, tree in trees.items():
            q = work / f"{tag}_{k}.onnx"
            subprocess.run(
                [sys.executable, "-P", "-m", "faaq_onnx", "quantize", str(fp), "-o", str(q),
                 "--calib", str(cal), "--no-cache", "-q", *args.flags.split()],
                check=True, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(Path(tree).resolve())},
            )  # fmt: skip
            loads.append(os.getloadavg()[0])
            got = logits(q, x)
            lf, lq = log_softmax(ref), log_softmax(got)
            rows.append(
                {
                    "draw": k,
                    "tree": tag,
                    "top1": 100 * float(np.mean(got.argmax(1) == y)),
                    "float_top1": 100 * float(np.mean(ref.argmax(1) == y)),
                    "kl": float(np.mean(np.sum(np.exp(lf) * (lf - lq), 1))),
                    "agreement": 100 * float(np.mean(got.argmax(1) == ref.argmax(1))),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    meta = run_meta(loads)
    lines = [
        f"EfficientNet-Lite0 `faaq quantize {args.flags}` over calibration draws (256 val1300 "
        f"images each, scored on the 1,044 others). {meta_stamp(meta)} "
        f"`python benchmarks/bench_effnet_draws.py {' '.join(sys.argv[1:])}`",
        "",
        "| tree | draw | top-1 % (float) | drop pt | KL to float | agreement % |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tree']} | {r['draw']} | {r['top1']:.2f} ({r['float_top1']:.2f}) | "
            f"{r['top1'] - r['float_top1']:+.2f} | {r['kl']:.4f} | {r['agreement']:.2f} |"
        )
    for tag in trees:
        mine = [r for r in rows if r["tree"] == tag]
        drop = np.mean([r["top1"] - r["float_top1"] for r in mine])
        kl, agree = np.mean([r["kl"] for r in mine]), np.mean([r["agreement"] for r in mine])
        lines.append(
            f"| **{tag}** | mean of {len(mine)} | | {drop:+.2f} | {kl:.4f} | {agree:.2f} |"
        )
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
