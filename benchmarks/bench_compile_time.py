"""Issue 10: time to quantize against ONNX Runtime's own tool, memory against calibration size,
and the sensitivity sweep on Ray workers.

1. Uniform W8A8: faaq `quantize` vs ORT quant_pre_process + quantize_static (QDQ, per-channel,
   MinMax), alternated in one process (ORT, faaq, ORT, faaq, ...), --repeats each, medians and
   their ratio, on ResNet-20 (256 CIFAR images), ResNet-50 (64 val1300 images, random init)
   and all-MiniLM-L6-v2 (128 SST-2 sentences). Imports are paid before timing, for both.
2. Mixed precision on ResNet-50 (64 images): `--budget bops=0.55 --metric fit` vs the same ORT
   run; and MiniLM `--budget avg-bits=6 --candidates w4a8,w8a8` (SQNR sweep): wall time.
3. Peak RSS of `faaq quantize` on ResNet-20 with 256 vs 4,096 calibration images (separate
   processes under /usr/bin/time -v).
4. ResNet-20 sensitivity sweep (SQNR and KL, w2a8..w8a8) serial vs 2 local Ray workers: wall
   time and whether the tables are identical.

    python benchmarks/bench_compile_time.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    cifar_model,
    data_dir,
    machine,
    ort_quantize_static,
    previous,
    timed_process,
    write,
)
from minilm import minilm_onnx

from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation, quantize


def timed_faaq(fp, calib, out, **kw) -> float:
    budget, cands, metric = (
        kw.pop("budget", None),
        kw.pop("candidates", None),
        kw.pop("metric", "sqnr"),
    )
    t0 = time.perf_counter()
    quantize(
        str(fp),
        calib,
        str(out),
        QuantConfig(progress=False, **kw),
        budget=budget,
        candidates=cands,
        metric=metric,
        cache_dir=False,
    )
    return time.perf_counter() - t0


def alternate(ort_fn, faaq_fn, repeats: int) -> dict:
    ort_t, faaq_t = [], []
    for _ in range(repeats):
        ort_t.append(ort_fn())
        faaq_t.append(faaq_fn())
    o, f = float(np.median(ort_t)), float(np.median(faaq_t))
    return {
        "ort_s": round(o, 2),
        "faaq_s": round(f, 2),
        "ratio": round(f / o, 2),
        "ort_all": ort_t,
        "faaq_all": faaq_t,
    }


def peak_rss_mb(args: list[str]) -> tuple[int, float]:
    """(peak RSS MB, wall s) of one process; raises where it fails, so a failed run is never
    recorded as a memory figure."""
    run = timed_process(args)
    return int(run["peak_rss_mb"]), round(run["wall_s"], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--parts",
        default="ratios,minilm6,rss,ray",
        help="comma-separated: ratios (vs ORT), minilm6 (avg-bits=6 wall time), rss, ray, "
        "adaround18 (ResNet-18 W4A8 --optimize adaround wall time, a separate process)",
    )
    ap.add_argument("--adaround-iters", type=int, default=1000)
    ap.add_argument("--adaround-samples", type=int, default=64)
    ap.add_argument("--fresh", action="store_true", help="forget the rows of earlier runs")
    ap.add_argument(
        "--cases", default=None, help="ratios: only the cases whose name contains one of these"
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-compile-"))
    from faaq_onnx import zoo
    from faaq_onnx.data import load_inputs

    res = {} if args.fresh else previous("compile_time")  # parts run separately add to one table
    res.update(machine=machine(), loadavg_before=os.getloadavg())
    # models and data
    r20 = cifar_model("resnet20-cifar10", ddir, work)
    r20_pool = str(ddir / "cifar10/cifar10_train5000.npz")
    r20_arrays = {"input": np.asarray(load_inputs(r20_pool, ["input"], limit=256, seed=0)["input"])}
    r50 = work / "resnet50.onnx"
    zoo.export("resnet50-imagenet", r50)
    zoo.export("resnet18-imagenet", work / "resnet18.onnx")
    x = np.asarray(
        load_inputs(ddir / "imagenet/val1300", ["input"], preset="imagenet", limit=128, seed=0)[
            "input"
        ]
    )
    np.savez(work / "r50.npz", input=x)
    r50_arrays = {"input": x[:64]}
    cases = {
        "resnet20 W8A8": (r20, r20_arrays, r20_pool, dict(calib_size=256)),
        "resnet50 W8A8": (r50, r50_arrays, str(work / "r50.npz"), dict(calib_size=64)),
        "minilm W8A8": None,
        "resnet50 mixed bops=0.55 (fit)": (
            r50,
            r50_arrays,
            str(work / "r50.npz"),
            dict(calib_size=64, budget="bops=0.55", metric="fit"),
        ),
    }
    wanted = args.cases.split(",") if args.cases else None
    ratio_cases = [
        n for n in cases if "ratios" in parts and (wanted is None or any(c in n for c in wanted))
    ]
    if (
        "minilm6" in parts or "minilm W8A8" in ratio_cases
    ):  # MiniLM's package only where a part needs it
        mini, _, mini_calib = minilm_onnx(work, ddir)
        mini_arrays = {k: v[:128] for k, v in np.load(mini_calib).items()}
        cases["minilm W8A8"] = (mini, mini_arrays, str(mini_calib), dict(calib_size=128))

    def save() -> None:  # after every part, so a stopped run keeps what it measured
        res["loadavg_after"] = os.getloadavg()
        md = [
            f"Load average before/after: {res['loadavg_before'][0]:.2f} / {res['loadavg_after'][0]:.2f}; "
            f"medians of {args.repeats} alternated runs",
            "",
            "| job | ORT quant_pre_process + quantize_static s | faaq s | faaq / ORT | load |",
            "|---|---|---|---|---|",
        ]
        for name in cases:
            if name in res:
                r = res[name]
                md.append(
                    f"| {name} | {r['ort_s']} | {r['faaq_s']} | {r['ratio']} | {r['loadavg'][0]:.1f} |"
                )
        if "minilm avg-bits=6 wall s" in res:
            md.append(
                f"\n- MiniLM `--budget avg-bits=6 --candidates w4a8,w8a8`: {res['minilm avg-bits=6 wall s']} s"
            )
        if "resnet20 peak RSS MB, 4096 images" in res:
            md.append(
                f"- ResNet-20 peak RSS: {res['resnet20 peak RSS MB, 256 images']} MB (256 images), "
                f"{res['resnet20 peak RSS MB, 4096 images']} MB (4,096 images)"
            )
        for k in [k for k in res if k.startswith("resnet18 W4A8 adaround")]:
            md.append(
                f"- {k}: {res[k]['wall_s']} s, peak RSS {res[k]['peak_rss_mb']} MB, load {res[k]['loadavg'][0]:.1f}"
            )
        if "ray sweep" in res:
            r = res["ray sweep"]
            md.append(
                f"- ResNet-20 sweep (w2a8..w8a8, SQNR+KL): serial {r['serial_s']} s, 2 Ray workers "
                f"{r['two_workers_s']} s, identical tables: {r['identical']}"
            )
        write("compile_time", res, "\n".join(md) + "\n")

    for name in ratio_cases:
        fp, arrays, calib, kw = cases[name]
        ort_out, faaq_out = work / "ort.onnx", work / "faaq.onnx"
        res[name] = alternate(
            lambda fp=fp, a=arrays, o=ort_out: ort_quantize_static(fp, o, a),
            lambda fp=fp, c=calib, kw=kw, o=faaq_out: timed_faaq(fp, c, o, **dict(kw)),
            args.repeats,
        )
        res[name]["loadavg"] = os.getloadavg()
        print(name, {k: v for k, v in res[name].items() if not k.endswith("_all")}, flush=True)
        save()
    if "minilm6" in parts:
        res["minilm avg-bits=6 wall s"] = round(
            timed_faaq(
                mini,
                str(mini_calib),
                work / "m6.onnx",
                calib_size=128,
                budget="avg-bits=6",
                candidates="w4a8,w8a8",
            ),
            1,
        )
        print("minilm avg-bits=6", res["minilm avg-bits=6 wall s"], flush=True)
        save()
    if "rss" in parts:  # memory against calibration size
        for n in (256, 4096):
            res[f"resnet20 peak RSS MB, {n} images"], _ = peak_rss_mb(
                [
                    "faaq",
                    "quantize",
                    str(r20),
                    "-o",
                    str(work / f"r{n}.onnx"),
                    "--calib",
                    r20_pool,
                    "--calib-size",
                    str(n),
                    "-q",
                ]
            )
        print(
            "rss",
            res["resnet20 peak RSS MB, 256 images"],
            res["resnet20 peak RSS MB, 4096 images"],
            flush=True,
        )
        save()
    if "adaround18" in parts:  # learned rounding on an ImageNet-sized network, 2 cores
        key = f"resnet18 W4A8 adaround {args.adaround_iters} it, {args.adaround_samples} images"
        rss, wall = peak_rss_mb(
            [
                "faaq",
                "quantize",
                str(work / "resnet18.onnx"),
                "-o",
                str(work / "r18_ar.onnx"),
                "--calib",
                str(work / "r50.npz"),
                "--calib-size",
                "64",
                "--scheme",
                "w4a8",
                "--optimize",
                "adaround",
                "--optimize-iters",
                str(args.adaround_iters),
                "--optimize-samples",
                str(args.adaround_samples),
                "-q",
            ]
        )
        res[key] = {"wall_s": wall, "peak_rss_mb": rss, "loadavg": os.getloadavg()}
        print(key, res[key], flush=True)
        save()
    if "ray" in parts:  # the sweep on Ray
        tables, times = {}, {}
        for workers in (1, 2):
            comp = Compilation(
                str(r20), r20_pool, QuantConfig(progress=False, workers=workers), target_opset=21
            )
            t0 = time.perf_counter()
            tables[workers] = comp.sensitivity(
                "w2a8,w3a8,w4a8,w5a8,w6a8,w8a8", ("sqnr", "kl"), cache_dir=False
            ).table
            times[workers] = round(time.perf_counter() - t0, 1)
        res["ray sweep"] = {
            "serial_s": times[1],
            "two_workers_s": times[2],
            "identical": tables[1] == tables[2],
        }
        print("ray", res["ray sweep"], flush=True)
        save()


if __name__ == "__main__":
    main()
