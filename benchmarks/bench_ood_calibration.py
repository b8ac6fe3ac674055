"""Out-of-domain calibration (seed 003 §4.2.3, issue 25): which part of faaq's mixed precision
does not transfer from calibration images unlike the deployment's, and which flags keep it.

EfficientNet-Lite0 (real weights), `--budget bops=0.25@w8a16 --candidates wide --seed 0`, one
`faaq quantize` process per row, calibrated on the 256 in-domain val1300 images
(bench_seed003_tables.prepare) or on 256 CIFAR-10 training images upscaled to 224 (draws 0, 1,
2 of bench_seed003_robustness.ood_calibration: disjoint), every model scored on the same 1,044
held-out val1300 images (top-1, agreement with float, KL to float).

--cross adds the split of the round-to-nearest gap: the plan chosen on one set (`--save-plan`)
applied with activation ranges calibrated on the other (`--plan`).

    python benchmarks/bench_ood_calibration.py --data-dir ../shared/data [--work DIR]
        [--settings none,none-minmax,none-percentile,default,other]
        [--sources in,cifar0,cifar1,cifar2]
        [--cross]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_seed003_robustness import ood_calibration
from bench_seed003_tables import prepare
from common import data_dir, md_table, meta_stamp, run_meta, scores, write

BUDGET = ["--budget", "bops=0.25@w8a16", "--candidates", "wide", "--seed", "0"]
SETTINGS = {  # name: flags beside the budget
    "default": [],
    "other": ["--calib-domain", "other"],  # what it stands for: none-minmax
    "none": ["--optimize", "none"],
    "none-minmax": ["--optimize", "none", "--act-range", "minmax"],
    "none-percentile": ["--optimize", "none", "--act-range", "percentile"],
    "gptq-noreround": ["--optimize", "gptq", "--no-reround"],
    "minmax": ["--act-range", "minmax"],
    "percentile": ["--act-range", "percentile"],
}


def quantize(src: Path, calib: Path, out: Path, args: list[str]) -> float:
    cmd = [sys.executable, "-m", "faaq_onnx", "quantize", str(src), "-o", str(out)]
    cmd += ["--calib", str(calib), *args, "--no-cache", "-q"]
    t0 = time.perf_counter()
    # from the work folder: `python -m` puts the current folder first on sys.path
    subprocess.run(cmd, check=True, cwd=out.parent, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def sources(d: dict, ddir: Path, work: Path, names: list[str]) -> dict[str, Path]:
    out = {}
    for name in names:
        if name == "in":
            out[name] = d["calib"]
            continue
        draw = int(name.removeprefix("cifar"))
        path = work / f"ood_calib_draw{draw}.npz"
        if not path.exists():
            np.savez(path, input=ood_calibration(ddir, work, draw))
        out[name] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--work")
    ap.add_argument("--settings", default="none,none-minmax,none-percentile,default")
    ap.add_argument("--sources", default="in,cifar0,cifar1,cifar2")
    ap.add_argument("--cross", action="store_true")
    ap.add_argument("--out", default="ood_calibration")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-ood-"))
    work.mkdir(parents=True, exist_ok=True)
    d = prepare("efficientnet-lite0", ddir, work)
    calibs = sources(d, ddir, work, args.sources.split(","))
    runs: list[tuple[str, str, Path, float]] = []  # (setting, source, model, seconds)
    loads = [os.getloadavg()[0]]
    settings = args.settings.split(",")
    for setting in settings:
        for src, calib in calibs.items():
            out = work / f"{setting}_{src}.onnx"
            extra = ["--save-plan", str(work / f"{setting}_{src}.plan.json")]
            runs.append(
                (
                    setting,
                    src,
                    out,
                    quantize(d["float"], calib, out, [*BUDGET, *SETTINGS[setting], *extra]),
                )
            )
            loads.append(os.getloadavg()[0])
    if args.cross and "none" in settings and "in" in calibs and "cifar0" in calibs:
        for plan_from, ranges_on in (("cifar0", "in"), ("in", "cifar0")):
            out = work / f"cross_plan-{plan_from}_ranges-{ranges_on}.onnx"
            plan = ["--plan", str(work / f"none_{plan_from}.plan.json"), "--optimize", "none"]
            runs.append(
                (
                    f"plan of {plan_from}, none",
                    ranges_on,
                    out,
                    quantize(d["float"], calibs[ranges_on], out, plan),
                )
            )
            loads.append(os.getloadavg()[0])
    got = scores(d["float"], [r[2] for r in runs], d["eval"], work)
    rows = [
        {"setting": s, "calibration": c, "wall_s": round(w, 1), **got[p.name]}
        for s, c, p, w in runs
    ]
    meta = run_meta(loads)
    cells = [
        [
            r["setting"],
            " ".join(SETTINGS.get(r["setting"], [])) or "-",
            r["calibration"],
            f"{r['top1']:.2f}",
            f"{r['agreement']:.2f}",
            f"{r['kl']:.4f}",
            f"{r['wall_s']:.0f}",
        ]
        for r in rows
    ]
    lines = [
        "EfficientNet-Lite0 `faaq quantize ... " + " ".join(BUDGET) + " --no-cache [flags]`, "
        "calibrated in-domain (256 val1300 images) or on 256 upscaled CIFAR-10 images (draws "
        "0-2), scored on the 1,044 held-out val1300 images. "
        f"{meta_stamp(meta)} `python benchmarks/bench_ood_calibration.py "
        + " ".join(sys.argv[1:])
        + "`",
        "",
        *md_table(
            ["setting", "flags", "calibration", "top-1 %", "agreement %", "KL to float", "wall s"],
            cells,
        ),
    ]
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
