"""How long phase 1 takes, and how much memory, next to ONNX Runtime's quantize_static.

Models: CIFAR-10 ResNet-56 (real checkpoint; 256 calibration images of
cifar10_train5000.npz, seed 0) and ImageNet ResNet-50 (zoo architecture, random init
seed 0: no pretrained ResNet-50 weights exist here; calibration = 64 real ILSVRC2012
validation images of imagenet/val1300, seed 0, ImageNet preprocessing). Timings do not
depend on the weights being trained.

Every measurement runs in a fresh child process (this script re-invoked with --child).
Wall time is time.perf_counter() around the measured call only. Memory is resident set
size from /proc/self/status: `rss_before_mb` right before the measured call, and
`peak_mb` = VmHWM after the call, with the high-water mark reset (echo 5 >
/proc/self/clear_refs) just before it, i.e. the peak RSS of the process during the
measured call (ORT's native allocations included, which tracemalloc would not see);
`maxrss_mb` is ru_maxrss of the whole child (setup included). os.getloadavg() is
recorded before every measurement: other jobs share this machine's cores.

Measurements:
- sensitivity sweep (Compilation.sensitivity, cache off): ResNet-56 with candidates
  'practical' (w4a8,w8a8,w8a16) and metric sqnr on all 256 images; ResNet-50 with
  metric sqnr on all 64 images unless the sweep is estimated (from one timed probe
  run) to exceed --max-sweep-s, then on config.sensitivity_samples=16 (the table
  says which); and metric fit (one torch forward/backward per sample, all groups at once)
  on all calibration samples;
- ORT quant_pre_process + quantize_static (QDQ, per-channel, MinMax, QInt8 weights,
  QUInt8 activations) on the same model and calibration data;
- the whole mixed-precision pipeline faaq_onnx.pipeline.quantize(budget=--budget,
  candidates='practical', metric=fit|sqnr, cache_dir=False): load to verify. The default
  budget is bops=0.55, not 0.5: with 'practical' the cheapest plan of these models costs
  bops=0.5001 (weightless Add/pool groups keep 8-bit activations, so every group at
  w4a8 is just above 0.5) and faaq rightly refuses bops=0.5 as infeasible.

    python benchmarks/bench_sensitivity_speed.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cifar_model, data_dir, git_state, machine, write

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- child side


def _status() -> dict:
    s = Path("/proc/self/status").read_text()
    return {k: int(re.search(k + r":\s+(\d+)", s).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def ort_quantize_static(float_path: Path, out: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def child(spec: dict) -> dict:
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import Compilation, quantize

    calib = {"input": np.load(spec["calib"])["input"]}
    out: dict = {}
    kind = spec["kind"]
    if kind == "sweep":
        cfg = QuantConfig(
            progress=False, calib_size=None, sensitivity_samples=spec.get("sensitivity_samples")
        )
        t0 = time.perf_counter()
        comp = Compilation(spec["model"], calib, cfg, target_opset=21)
        out["compile_s"] = time.perf_counter() - t0
        out["groups"] = len(comp.qgraph.groups)
        if spec["metric"] != "fit" and spec.get("max_sweep_s"):
            # estimate the full sweep from one probe run (that run is not in the timing)
            from faaq_onnx.analysis.candidates import group_candidates, parse_candidates

            cands = parse_candidates(spec["candidates"])
            jobs = [(g, c) for g in comp.qgraph.groups.values() for c in group_candidates(g, cands)]
            _ = comp.prober  # builds the session and the float reference
            g0, c0 = jobs[len(jobs) // 2]
            t0 = time.perf_counter()
            comp.prober.measure({g0.name: c0})
            one = time.perf_counter() - t0
            out["estimate"] = {
                "one_config_s": one,
                "configs": len(jobs),
                "estimated_sweep_s": one * len(jobs),
                "samples": int(len(calib["input"])),
            }
            if one * len(jobs) > spec["max_sweep_s"]:
                comp.config.sensitivity_samples = spec["fallback_samples"]
                comp._prober = None  # rebuilt on the reduced sample set (inside the timing)
                out["sensitivity_samples"] = spec["fallback_samples"]
            else:
                comp._prober = None  # rebuilt inside the timing, like a cold sweep
        out["loadavg_before"] = os.getloadavg()
        out["rss_before_mb"] = _status()["VmRSS"]
        out["peak_reset"] = _reset_peak()
        t0 = time.perf_counter()
        table = comp.sensitivity(
            spec["candidates"],
            metrics=(spec["metric"],),
            cache_dir=False,
            fit_samples=spec.get("fit_samples", 32),
        )
        out["wall_s"] = time.perf_counter() - t0
        out["configs"] = table.meta["configs"]
        out["samples"] = (
            table.meta["samples"]
            if spec["metric"] != "fit"
            else min(spec.get("fit_samples", 32), len(calib["input"]))
        )
        if "fit_unavailable" in table.meta:
            out["fit_unavailable"] = table.meta["fit_unavailable"]
    elif kind == "ort":
        out["loadavg_before"] = os.getloadavg()
        out["rss_before_mb"] = _status()["VmRSS"]
        out["peak_reset"] = _reset_peak()
        t0 = time.perf_counter()
        ort_quantize_static(Path(spec["model"]), Path(spec["out"]), calib["input"])
        out["wall_s"] = time.perf_counter() - t0
    elif kind == "pipeline":
        cfg = QuantConfig(
            progress=False, calib_size=None, sensitivity_samples=spec.get("sensitivity_samples")
        )
        out["loadavg_before"] = os.getloadavg()
        out["rss_before_mb"] = _status()["VmRSS"]
        out["peak_reset"] = _reset_peak()
        t0 = time.perf_counter()
        res = quantize(
            spec["model"],
            calib,
            None,
            cfg,
            budget=spec["budget"],
            candidates="practical",
            metric=spec["metric"],
            cache_dir=False,
        )
        out["wall_s"] = time.perf_counter() - t0
        out["stage_timings_s"] = res.timings
        out["output_sqnr_db"] = next(iter(res.report["verify"]["outputs"].values()))["sqnr_db"]
        out["budget_reached"] = res.plan.meta.get("budget_value_reached")
    else:
        raise ValueError(kind)
    out["peak_mb"] = _status()["VmHWM"]
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# -------------------------------------------------------------------------- parent side
def measure(spec: dict, work: Path) -> dict:
    spec_path = work / f"spec-{time.time_ns()}.json"
    res_path = spec_path.with_suffix(".out.json")
    spec_path.write_text(json.dumps({**spec, "result": str(res_path)}))
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        err = (proc.stderr or "").strip().splitlines()
        print("FAILED", spec["label"], "\n".join(err[-15:]), flush=True)
        return {
            **spec,
            "error": err[-1] if err else f"exit {proc.returncode}",
            "loadavg_parent": load,
        }
    res = json.loads(res_path.read_text())
    res.update(
        {
            "label": spec["label"],
            "model_name": spec["model_name"],
            "loadavg_parent": load,
            "child_process_s": elapsed,
        }
    )
    print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--models", default="resnet56-cifar10,resnet50-imagenet")
    ap.add_argument(
        "--max-sweep-s",
        type=float,
        default=900.0,
        help="if one full SQNR sweep is estimated above this, use --fallback-samples",
    )
    ap.add_argument("--fallback-samples", type=int, default=16)
    ap.add_argument("--budget", default="bops=0.55", help="budget of the full-pipeline runs")
    ap.add_argument(
        "--imagenet-random",
        action="store_true",
        help="calibrate ResNet-50 on random-normal images instead of val1300",
    )
    args = ap.parse_args()
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        res = child(spec)
        Path(spec["result"]).write_text(json.dumps(res))
        return

    from faaq_onnx import zoo
    from faaq_onnx.data import load_inputs

    ddir = data_dir(args.data_dir)
    git0 = git_state()  # at start: the library this run imported
    work = Path(tempfile.mkdtemp(prefix="faaq-sens-speed-"))
    rows: list[dict] = []
    setup: dict = {}
    t_all = time.perf_counter()
    for name in args.models.split(","):
        if name == "resnet50-imagenet":
            fp = zoo.export(name, work / f"{name}.onnx", seed=0)
            if args.imagenet_random:
                calib = (
                    np.random.default_rng(0).standard_normal((64, 3, 224, 224)).astype(np.float32)
                )
                src = "64 random-normal images"
            else:
                calib = load_inputs(
                    ddir / "imagenet/val1300", ["input"], preset="imagenet", limit=64, seed=0
                )["input"]
                src = "64 ILSVRC2012 val images (val1300, seed 0)"
            weights = "random init (seed 0)"
        else:
            fp = cifar_model(name, ddir, work)
            calib = load_inputs(
                ddir / "cifar10/cifar10_train5000.npz", ["input"], limit=256, seed=0
            )["input"]
            src = "256 images of cifar10_train5000 (seed 0)"
            weights = "real checkpoint"
        cpath = work / f"{name}.calib.npz"
        np.savez(cpath, input=calib)
        setup[name] = {
            "weights": weights,
            "calibration": src,
            "shape": list(calib.shape),
            "onnx_bytes": Path(fp).stat().st_size,
        }
        base = {"model": str(fp), "model_name": name, "calib": str(cpath)}
        n = len(calib)
        sweep_sqnr = measure(
            {
                **base,
                "label": "sensitivity sweep, sqnr",
                "kind": "sweep",
                "metric": "sqnr",
                "candidates": "practical",
                "max_sweep_s": args.max_sweep_s if name == "resnet50-imagenet" else None,
                "fallback_samples": args.fallback_samples,
            },
            work,
        )
        rows.append(sweep_sqnr)
        rows.append(
            measure(
                {
                    **base,
                    "label": "sensitivity sweep, fit",
                    "kind": "sweep",
                    "metric": "fit",
                    "candidates": "practical",
                    "fit_samples": n,
                },
                work,
            )
        )
        rows.append(
            measure(
                {
                    **base,
                    "label": "ORT quant_pre_process + quantize_static",
                    "kind": "ort",
                    "out": str(work / f"{name}.ort.onnx"),
                },
                work,
            )
        )
        sens_samples = sweep_sqnr.get("sensitivity_samples")
        for m in ("fit", "sqnr"):
            rows.append(
                measure(
                    {
                        **base,
                        "label": f"faaq quantize {args.budget} practical, metric {m}",
                        "kind": "pipeline",
                        "budget": args.budget,
                        "metric": m,
                        "sensitivity_samples": sens_samples if m == "sqnr" else None,
                    },
                    work,
                )
            )
    md = [
        "| model | measurement | samples | configs | wall s | vs quantize_static | peak RSS MB (during call) | "
        "RSS before MB | ru_maxrss MB (child) | load avg (1 min) before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['model_name']} | {r['label']} | | | FAILED: {r['error']} | | | | | |")
            continue
        ort = next(
            (
                x
                for x in rows
                if x["model_name"] == r["model_name"]
                and x["label"].startswith("ORT")
                and "wall_s" in x
            ),
            None,
        )
        ratio = f"{r['wall_s'] / ort['wall_s']:.1f}×" if ort else "-"
        samples = r.get("sensitivity_samples") or r.get("samples", "")
        md.append(
            f"| {r['model_name']} | {r['label']} | {samples} | {r.get('configs', '')} | {r['wall_s']:.1f} | "
            f"{ratio} | {r['peak_mb']:.0f} | {r['rss_before_mb']:.0f} | {r['maxrss_mb']:.0f} | "
            f"{r['loadavg_before'][0]:.2f} |"
        )
    md.append("")
    md.append(
        "The pipeline's FIT runs on 32 samples (Compilation.sensitivity's default fit_samples; quantize() has "
        "no option for it); its SQNR run measures sqnr and kl in one sweep, as quantize() does."
    )
    for name, s in setup.items():
        est = next(
            (
                r.get("estimate")
                for r in rows
                if r["model_name"] == name
                and r.get("label", "").endswith("sqnr")
                and "estimate" in r
            ),
            None,
        )
        line = f"- {name}: {s['weights']}, calibration {s['calibration']}"
        if est:
            line += (
                f"; full SQNR sweep estimated at {est['estimated_sweep_s']:.0f} s "
                f"({est['configs']} configs × {est['one_config_s']:.1f} s on {est['samples']} samples)"
            )
        sw = next(
            (
                r
                for r in rows
                if r["model_name"] == name and r.get("label") == "sensitivity sweep, sqnr"
            ),
            {},
        )
        if sw.get("sensitivity_samples"):
            line += f" → ran with config.sensitivity_samples={sw['sensitivity_samples']} (pipeline sqnr run too)"
        md.append(line)
        ort = next(
            (
                r
                for r in rows
                if r["model_name"] == name and r["label"].startswith("ORT") and "wall_s" in r
            ),
            None,
        )
        if ort:
            for m in ("fit", "sqnr"):
                p = next(
                    (
                        r
                        for r in rows
                        if r["model_name"] == name
                        and r["label"].endswith(f"metric {m}")
                        and "wall_s" in r
                    ),
                    None,
                )
                if p:
                    verdict = "within" if p["wall_s"] <= 5 * ort["wall_s"] else "over"
                    md.append(
                        f"  - pipeline with metric {m}: {p['wall_s']:.1f} s vs 5 × quantize_static = "
                        f"{5 * ort['wall_s']:.1f} s → {verdict}"
                    )
    md.append(
        f"Library: git {git0.get('head', '?')}"
        + (" + local changes to " + ", ".join(git0["modified"]) if git0.get("modified") else "")
    )
    write(
        "sensitivity_speed",
        {
            "machine": machine(),
            "git": git0,
            "setup": setup,
            "rows": rows,
            "wall_s": round(time.perf_counter() - t_all, 1),
        },
        "\n".join(md) + "\n",
    )


if __name__ == "__main__":
    main()
