"""Out-of-domain calibration (seed 003 §4.2.3, issue 25): which part of faaq's mixed precision
does not transfer from calibration images unlike the deployment's, and which flags keep it.

EfficientNet-Lite0 (real weights), `--budget bops=0.25@w8a16 --candidates wide --seed 0`, one
`faaq quantize` process per row, calibrated on the 256 in-domain val1300 images
(bench_seed003_tables.prepare) or on 256 CIFAR-10 training images upscaled to 224 (draws 0, 1,
2 of bench_seed003_robustness.ood_calibration: disjoint), every model scored on the same 1,044
held-out val1300 images (top-1, agreement with float, KL to float).

--cross adds the split of the round-to-nearest gap: the plan chosen on one set (`--save-plan`)
applied with activation ranges calibrated on the other (`--plan`).

--folds N replaces the one split by N paired folds (the five disjoint 256-image subsets of
bench_seed003_robustness, seed 003 Fig. 2): fold k calibrates in-domain on subset k and out of
domain on CIFAR draw k, and scores both on the 1,044 images not in subset k. One split cannot
resolve half a point: two models that disagree on 6 % of 1,044 images differ by about ±0.8 pt
from draw to draw. Fold 0 is the one split above. The report pairs each --settings entry on
CIFAR with the first entry in-domain, fold by fold (common.paired_stats); `setting@in` or
`setting@cifar` runs a setting on one calibration only.

    python benchmarks/bench_ood_calibration.py --data-dir ../shared/data [--work DIR]
        [--settings none,none-minmax,none-percentile,default,other]
        [--sources in,cifar0,cifar1,cifar2]
        [--cross] [--folds 5 --settings default@in,other]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_seed003_robustness as robust
import numpy as np
from bench_seed003_robustness import ood_calibration
from bench_seed003_tables import prepare
from common import data_dir, md_table, meta_stamp, paired_stats, run_meta, scores, write

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


def cifar_calib(ddir: Path, work: Path, draw: int) -> Path:
    """CIFAR draw `draw` as a calibration .npz in work/ (written once)."""
    path = work / f"ood_calib_draw{draw}.npz"
    if not path.exists():
        np.savez(path, input=ood_calibration(ddir, work, draw))
    return path


def sources(d: dict, ddir: Path, work: Path, names: list[str]) -> dict[str, Path]:
    out = {}
    for name in names:
        if name == "in":
            out[name] = d["calib"]
            continue
        out[name] = cifar_calib(ddir, work, int(name.removeprefix("cifar")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--work")
    ap.add_argument("--settings", default="none,none-minmax,none-percentile,default")
    ap.add_argument("--sources", default="in,cifar0,cifar1,cifar2")
    ap.add_argument("--cross", action="store_true")
    ap.add_argument("--folds", type=int, default=0)
    ap.add_argument("--out", default="ood_calibration")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-ood-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.folds:
        return folds(args, ddir, work)
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


def fold_files(d: dict, ddir: Path, work: Path, k: int) -> dict[str, Path]:
    """Fold k's float model, in-domain calibration (subset k), CIFAR calibration (draw k) and
    labeled evaluation set (the images not in subset k), written once into work/; `d` is
    bench_seed003_robustness.prepare's."""
    files = {
        "float": d["float"],
        "in": work / f"fold{k}_calib.npz",
        "cifar": cifar_calib(ddir, work, k),
        "eval": work / f"fold{k}_eval.npz",
    }
    if not files["in"].exists():
        np.savez(files["in"], input=np.asarray(d["x"][d["subsets"][k]]))
    if not files["eval"].exists():
        rest = robust.held_out(d, k)
        np.savez(files["eval"], x=np.asarray(d["x"][rest]), y=d["y"][rest])
    return files


def folds(args, ddir: Path, work: Path) -> None:
    """--folds: each run of --settings on every fold, each fold scored on its own held-out
    images, and paired fold by fold with the first setting in-domain."""
    runs = []  # (setting, calibration): "setting@in" runs one, a bare setting both
    for entry in args.settings.split(","):
        setting, _, src = entry.partition("@")
        runs += [(setting, s) for s in ((src,) if src else ("in", "cifar"))]
    settings = list(dict.fromkeys(s for s, _ in runs))
    rows: list[dict] = []
    loads = [os.getloadavg()[0]]
    d = robust.prepare(ddir, work)
    for k in range(args.folds):
        f = fold_files(d, ddir, work, k)
        models = []
        for setting, src in runs:
            out = work / f"fold{k}_{setting}_{src}.onnx"
            wall = quantize(f["float"], f[src], out, [*BUDGET, *SETTINGS[setting]])
            loads.append(os.getloadavg()[0])
            models.append(out)
            rows.append({"fold": k, "setting": setting, "calibration": src, "wall_s": wall})
        got = scores(f["float"], models, f["eval"], work)
        for r, m in zip(rows[-len(models) :], models):
            r.update(got[m.name])
    base = settings[0]
    at = {(r["fold"], r["setting"], r["calibration"]): r for r in rows}
    pairs = {}
    for setting, src in runs:
        if (setting, src) != (base, "in"):
            diffs = [
                at[(k, setting, src)]["top1"] - at[(k, base, "in")]["top1"]
                for k in range(args.folds)
            ]
            pairs[f"{setting} on {src} - {base} on in"] = {
                "diffs": [round(x, 3) for x in diffs],
                **paired_stats(diffs),
            }
    meta = run_meta(loads)
    cells = [
        [
            r["fold"],
            r["setting"],
            r["calibration"],
            f"{r['float_top1']:.2f}",
            f"{r['top1']:.2f}",
            f"{r['top1'] - r['float_top1']:+.2f}",
            f"{r['agreement']:.2f}",
            f"{r['kl']:.4f}",
            f"{r['wall_s']:.0f}",
        ]
        for r in rows
    ]
    summary = [
        [
            name,
            " / ".join(f"{x:+.2f}" for x in p["diffs"]),
            f"{p['mean']:+.2f}",
            f"{p['sd']:.2f}",
            f"{p['pos']}+ {p['neg']}-",
        ]
        for name, p in pairs.items()
    ]
    kl = {
        (s, c): np.mean([r["kl"] for r in rows if (r["setting"], r["calibration"]) == (s, c)])
        for s, c in runs
    }
    lines = [
        "EfficientNet-Lite0 `faaq quantize ... " + " ".join(BUDGET) + " --no-cache [flags]`, "
        f"{args.folds} folds: fold k calibrates on the disjoint 256-image val1300 subset k "
        "(in) or on CIFAR-10 draw k (256 training images upscaled to 224, cifar), and scores "
        "both on the 1,044 val1300 images not in subset k. "
        f"{meta_stamp(meta)} `python benchmarks/bench_ood_calibration.py "
        + " ".join(sys.argv[1:])
        + "`",
        "",
        *md_table(
            [
                "fold",
                "setting",
                "calibration",
                "float %",
                "top-1 %",
                "vs float",
                "agreement %",
                "KL to float",
                "wall s",
            ],
            cells,
        ),
        "",
        f"Top-1 against `{base}` calibrated in-domain, fold by fold (points):",
        "",
        *md_table(["pair", "per fold", "mean", "sd", "signs"], summary),
        "",
        "Mean KL to float: " + "; ".join(f"{s} on {c} {v:.4f}" for (s, c), v in kl.items()),
    ]
    write(args.out, {"meta": meta, "rows": rows, "pairs": pairs}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
