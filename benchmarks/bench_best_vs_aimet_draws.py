"""ResNet-56 W4A8 over ten calibration draws: faaq's plain and `--effort best` commands against
AIMET-ONNX's AdaRound (1000 iterations) on the same 256 images of each draw; `--commands` also
takes round to nearest and mixed precision at W4A8's bit operations (`wide`, `wide-rtn`).

Draw N is faaq's `--calib-size 256 --seed N` of cifar10_train5000 and the AIMET script's
CALIB_SEED=N (the same images; benchmarks/peers/aimet_cifar.py checks it). AIMET's figures are
read from its stored runs (benchmarks/out/aimet_cifar.json for draw 0, aimet_cifar_seedN.json
for the others), not run again. Top-1 on the 10,000 JPEG test images and the 1,017 lossless ones.

    python benchmarks/bench_best_vs_aimet_draws.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cifar_model, data_dir, meta_stamp, paired_stats, run_meta, scores, write

OUT = Path(__file__).parent / "out"
W4A8 = ["--scheme", "w4a8"]
WIDE = ["--budget", "bops=0.25@w8a16", "--candidates", "wide"]  # issue 25: W4A8's compute
COMMANDS = {
    "plain": W4A8,
    "best": [*W4A8, "--effort", "best"],
    "plain-symmetric": [*W4A8, "--weight-symmetric"],  # the default grids before ed610d1
    "rtn": [*W4A8, "--optimize", "none"],  # round to nearest
    "wide": WIDE,  # mixed precision at the bit operations of W4A8
    "wide-rtn": [*WIDE, "--optimize", "none"],
}


def aimet_row(draw: int) -> dict | None:
    """AIMET's W4A8 AdaRound row for ResNet-56 on this draw, from its stored run."""
    path = OUT / ("aimet_cifar.json" if draw == 0 else f"aimet_cifar_seed{draw}.json")
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["rows"]
    got = [r for r in rows if r["model"] == "resnet56" and r["variant"] == "w4a8_adaround"]
    return got[0] if got else None


def top1(model: Path, data: Path, work: Path) -> float:
    out = work / "eval.json"
    cmd = [sys.executable, "-m", "faaq_onnx", "eval", str(model), "--data", str(data)]
    subprocess.run([*cmd, "--json", str(out)], check=True, capture_output=True)
    return 100 * json.loads(out.read_text())["models"][str(model)]["top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--draws", default="0-9")
    ap.add_argument("--work")
    ap.add_argument("--commands", default="plain,best", help=f"among {', '.join(COMMANDS)}")
    ap.add_argument("--out", default="best_vs_aimet_draws")
    args = ap.parse_args()
    commands = {name: COMMANDS[name] for name in args.commands.split(",")}
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-draws-"))
    work.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(x) for x in args.draws.split("-"))
    fp = cifar_model("resnet56-cifar10", ddir, work)
    calib = ddir / "cifar10" / "cifar10_train5000.npz"
    test, lossless = (
        ddir / "cifar10" / "cifar10_test.npz",
        ddir / "cifar10" / "cifar10_test_lossless1017.npz",
    )
    rows, loads = [], [os.getloadavg()[0]]
    for draw in range(lo, hi + 1):
        row: dict = {"draw": draw}
        for name, flags in commands.items():
            q = work / f"r56_w4a8_{name}_{draw}.onnx"
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "faaq_onnx", "quantize", str(fp), "-o", str(q)]
            draw_of = ["--calib", str(calib), "--calib-size", "256", "--seed", str(draw)]
            subprocess.run(
                [*cmd, *draw_of, "--no-cache", "-q", *flags],
                check=True,
                capture_output=True,
            )
            wall = time.perf_counter() - t0
            near = scores(fp, [q], test, work)[q.name]  # top-1 and closeness to float
            row[name] = {
                "wall_s": wall,
                "test": near["top1"],
                "lossless": top1(q, lossless, work),
                "kl": near["kl"],
                "agreement": near["agreement"],
            }
            loads.append(os.getloadavg()[0])
        a = aimet_row(draw)
        if a is not None:
            row["aimet"] = {"wall_s": a["aimet_wall_s"], "test": 100 * a["test"]}
            row["aimet"]["lossless"] = 100 * a["lossless"]
        rows.append(row)
        print(row, flush=True)
    meta = run_meta(loads)
    lines = [
        "ResNet-56 W4A8 over calibration draws: faaq's commands ("
        + "; ".join(f"{n}: `{' '.join(COMMANDS[n])}`" for n in commands)
        + ") against "
        "AIMET-ONNX AdaRound 1000 it (stored runs) on the same 256 images. "
        f"{meta_stamp(meta)} "
        "`python benchmarks/bench_best_vs_aimet_draws.py --data-dir ../shared/data "
        f"--commands {args.commands} --out {args.out}`",
        "",
        "| draw | "
        + " | ".join(f"faaq {n}: test / lossless (wall s)" for n in commands)
        + " | AIMET AdaRound 1000 it |",
        "|---|" + "---|" * (len(commands) + 1),
    ]

    def cell(r: dict | None) -> str:
        return f"{r['test']:.2f} / {r['lossless']:.2f} ({r['wall_s']:.0f} s)" if r else "–"

    for r in rows:
        cells = " | ".join(cell(r[n]) for n in commands)
        lines.append(f"| {r['draw']} | {cells} | {cell(r.get('aimet'))} |")
    paired = [r for r in rows if "aimet" in r]
    for name in commands:
        mean = {
            k: float(np.mean([r[name][k] for r in rows])) for k in ("test", "lossless", "wall_s")
        }
        line = (
            f"\nfaaq {name}: mean {mean['test']:.2f} / {mean['lossless']:.2f}, "
            f"{mean['wall_s']:.0f} s over {len(rows)} draws"
        )
        closeness = [r[name] for r in rows if "kl" in r[name]]
        if closeness:  # on the test set, against the float model (runs before 2026-12-07 lack it)
            kl = float(np.mean([c["kl"] for c in closeness]))
            agree = float(np.mean([c["agreement"] for c in closeness]))
            line += f"; KL to float {kl:.4f}, agreement {agree:.2f} % (test)"
        if paired:
            d = paired_stats([r[name]["test"] - r["aimet"]["test"] for r in paired])
            line += (
                f"; minus AIMET, draw by draw (test): {d['mean']:+.2f} ± {d['sd']:.2f} pt, "
                f"t = {d['t']:+.2f}, ahead/tied/behind {d['pos']}/{d['zero']}/{d['neg']}"
            )
        lines.append(line)
    for mixed, uniform in (("wide", "plain"), ("wide-rtn", "rtn")):  # issue 25: MP >= uniform
        if mixed in commands and uniform in commands:
            d = paired_stats([r[mixed]["test"] - r[uniform]["test"] for r in rows])
            lines.append(
                f"\n{mixed} minus {uniform}, draw by draw (test): {d['mean']:+.2f} ± {d['sd']:.2f} "
                f"pt, ahead/tied/behind {d['pos']}/{d['zero']}/{d['neg']}"
                + _closer(rows, mixed, uniform)
            )
    if paired:
        am = np.mean([r["aimet"]["test"] for r in paired])
        aw = np.mean([r["aimet"]["wall_s"] for r in paired])
        lines.append(f"\nAIMET: mean {am:.2f} test, {aw:.0f} s over {len(paired)} draws")
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


def _closer(rows: list[dict], mixed: str, uniform: str) -> str:
    """'; KL to float lower on 9 of 10 draws' where the rows have KL."""
    both = [r for r in rows if "kl" in r[mixed] and "kl" in r[uniform]]
    if not both:
        return ""
    lower = sum(r[mixed]["kl"] < r[uniform]["kl"] for r in both)
    return f"; KL to float lower on {lower} of {len(both)} draws"


if __name__ == "__main__":
    main()
