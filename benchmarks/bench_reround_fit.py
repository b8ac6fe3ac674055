"""A budget's allocated plan rounded again in its own context, fit to the float output (the
default since 2026-12-07), against shipping the candidates' weights stitched (--no-reround).

Each pair is the same `faaq quantize` command, with and without --no-reround, run one after
the other in fresh processes; wall time, top-1, agreement and KL to float on the held-out
images (EfficientNet-Lite0: 1,044 val1300 images; ResNets: the 10,000 JPEG CIFAR-10 test
images).

    python benchmarks/bench_reround_fit.py --data-dir ../shared/data [--work DIR]
        [--jobs eff4,eff45,effwide,r56w4,r56wide,r20w4] [--only default] [--out NAME]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_seed003_tables import prepare
from common import data_dir, md_table, meta_stamp, run_meta, scores, write

JOBS = {  # name: (model, budget arguments)
    "eff4": ("efficientnet-lite0", ["--budget", "avg-bits=4"]),
    "eff45": ("efficientnet-lite0", ["--budget", "avg-bits=4.5", "--candidates", "w4a8,w8a8"]),
    "effwide": (
        "efficientnet-lite0",
        ["--budget", "bops=0.25@w8a16", "--candidates", "wide", "--seed", "0"],
    ),
    "r56w4": ("resnet56", ["--budget", "avg-bits=4"]),
    "r56wide": ("resnet56", ["--budget", "bops=0.25@w8a16", "--candidates", "wide"]),
    "r20w4": ("resnet20", ["--budget", "avg-bits=4"]),
}


def run(d: dict, work: Path, name: str, args: list[str]) -> tuple[Path, float]:
    path = work / f"{name}.onnx"
    cmd = [sys.executable, "-m", "faaq_onnx", "quantize", str(d["float"]), "-o", str(path)]
    cmd += ["--calib", str(d["calib"]), *d["extra"], *args, "--no-cache", "-q"]
    t0 = time.perf_counter()
    # from the work folder: `python -m` puts the current folder first on sys.path
    subprocess.run(cmd, check=True, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path, time.perf_counter() - t0


def _cells(r: dict) -> list[str]:
    figures = (f"{r['top1']:.2f}", f"{r['agreement']:.2f}", f"{r['kl']:.4f}", f"{r['wall_s']:.0f}")
    return [r["job"], f"`{r['command']}`", r["rounding"], *figures]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--work")
    ap.add_argument("--jobs", default=",".join(JOBS))
    ap.add_argument("--only", choices=("default", "no-reround"), help="one side of each pair")
    ap.add_argument("--out", default="reround_fit")
    args = ap.parse_args()
    sides = [
        (t, e)
        for t, e in (("default", []), ("no-reround", ["--no-reround"]))
        if args.only in (None, t)
    ]
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-reround-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, loads = [], [os.getloadavg()[0]]
    for job in args.jobs.split(","):
        model, budget = JOBS[job]
        d = prepare(model, ddir, work)
        walls, paths = {}, []
        for tag, extra in sides:
            p, walls[p.name] = run(d, work, f"{job}_{tag}", [*budget, *extra])
            paths.append(p)
            loads.append(os.getloadavg()[0])
        got = scores(d["float"], paths, d["eval"], work)
        for p, (tag, extra) in zip(paths, sides):
            shown = " ".join(extra) or tag
            rows.append(
                {"job": job, "command": " ".join(budget), "rounding": shown, **got[p.name]}
                | {"wall_s": walls[p.name]}
            )
    meta = run_meta(loads)
    lines = [
        "A budget's plan re-rounded in its own context, fit to the float output (default), "
        f"against the candidates' weights stitched (`--no-reround`). {meta_stamp(meta)} "
        "`python benchmarks/bench_reround_fit.py --data-dir ../shared/data`",
        "",
        *md_table(
            ["job", "budget", "rounding", "top-1 %", "agreement %", "KL to float", "wall s"],
            [_cells(r) for r in rows],
        ),
    ]
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
