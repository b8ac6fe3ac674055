"""Issue 7: packed low-bit weights on int8 kernels, timed interleaved against float and ORT.

For each model: float; ONNX Runtime quant_pre_process + quantize_static W8A8 (QInt8
per-channel weights, QUInt8 activations, MinMax) and the same with QInt4 weights; faaq W8A8,
W4A8 (cast storage, the default), W4A8 with --weight-storage dequant (the old form), and
mixed plans --budget avg-bits=4 and avg-bits=3 (candidates w2a8..w8a8, bits as stored).
All sessions of a model are alive at once, one run of each per round in an order shuffled
every round, the sessions not spinning between runs, so load from other processes hits all
of them alike; medians of --rounds rounds after a warm-up, at batch 1 and 8. Also: session
start-up time (median of 5), file bytes, the kernels ORT chose (ops left in float), and on
CIFAR the top-1 of the cast form vs the DQ(int4) form.

    python benchmarks/bench_int8_kernels.py --data-dir ../shared/data
    python benchmarks/bench_int8_kernels.py --data-dir ../shared/data --models resnet20-cifar10 --rounds 10
    # quantize while the machine is busy, time later when it is quiet:
    python benchmarks/bench_int8_kernels.py --data-dir ../shared/data --work /tmp/k --phase build
    python benchmarks/bench_int8_kernels.py --data-dir ../shared/data --work /tmp/k --phase time --rounds 40
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cifar_model, data_dir, machine, ort_quantize_static, previous, write

MODELS = [
    "resnet20-cifar10",
    "resnet56-cifar10",
    "resnet18-imagenet",
    "resnet50-imagenet",
    "mobilenetv2-imagenet",
    "efficientnet-lite0-imagenet",
]


def model_and_calib(name: str, ddir: Path, work: Path):
    """(float model, calibration source usable by faaq, calibration arrays for ORT)."""
    from faaq_onnx import zoo
    from faaq_onnx.data import load_inputs

    if name.endswith("cifar10"):
        fp = cifar_model(name, ddir, work)
        calib = str(ddir / "cifar10/cifar10_train5000.npz")
        arrays = load_inputs(calib, ["input"], limit=256, seed=0)
    else:
        weights = "auto" if name.startswith("efficientnet") else None
        fp = work / f"{name}.onnx"
        if not fp.exists():
            zoo.export(name, fp, weights=weights)
        preset = zoo.ZOO[name].preset
        arrays = load_inputs(
            ddir / "imagenet/val1300", ["input"], preset=preset, limit=64 + 64, seed=0
        )
        calib = work / f"{name}.calib.npz"
        np.savez(calib, input=np.asarray(arrays["input"]))
        calib = str(calib)
        arrays = {"input": np.asarray(arrays["input"])[:64]}
    return fp, calib, {k: np.asarray(v) for k, v in arrays.items()}


def ort_int4(src: Path, dst: Path, calib: dict) -> float:
    """ORT's quantize_static with QInt4 weights (QDQ; ORT runs DQ(int4) -> Conv in float)."""
    return ort_quantize_static(src, dst, calib, weight_type="QInt4")


def faaq(src: Path, dst: Path, calib, scheme="w8a8", budget=None, **cfg) -> dict:
    from collections import Counter

    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import quantize

    t0 = time.perf_counter()
    res = quantize(
        str(src),
        calib,
        str(dst),
        QuantConfig(scheme=scheme, progress=False, calib_size=cfg.pop("calib_size", 256), **cfg),
        budget=budget,
        candidates="w2a8,w3a8,w4a8,w5a8,w6a8,w8a8" if budget else None,
        metric="fit" if budget and "imagenet" in str(src) else "sqnr",
        cache_dir=False,
    )
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "plan": dict(Counter(res.report["plan"]["choices"].values())),
        "stored_bits": res.report["verify"]["size"]["stored_weight_bits"],
    }


def interleaved(paths: dict[str, Path], x, rounds: int, warmup: int = 10) -> dict[str, float]:
    """Median ms per model, one run of each per round in a shuffled order, sessions not spinning
    (faaq's own interleaved timer); x is the input array or a feed dict."""
    from faaq_onnx.runtime.timing import interleaved_median_ms

    feeds = x if isinstance(x, dict) else {"input": x}
    ms = interleaved_median_ms([str(p) for p in paths.values()], feeds, pairs=rounds, warmup=warmup)
    return {k: round(v, 4) for k, v in zip(paths, ms)}


def startup(path: Path, n: int = 5) -> float:
    from faaq_onnx.runtime.session import make_session

    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        make_session(str(path))
        ts.append(time.perf_counter() - t0)
    return round(float(np.median(ts)) * 1e3, 1)


def float_ops(path: Path) -> int:
    from faaq_onnx.runtime.kernels import kernel_report

    rep = kernel_report(str(path))
    return sum(not q["integer_kernel"] for q in rep["quantized_nodes"])


def accuracy(paths: dict[str, Path], ddir: Path) -> dict:
    from faaq_onnx.data import load_labeled
    from faaq_onnx.evaluate import evaluate

    out = {}
    for k, p in paths.items():
        out[k] = {
            t: evaluate(p, *load_labeled(ddir / f"cifar10/{f}"))["top1"]
            for t, f in (
                ("test", "cifar10_test.npz"),
                ("lossless", "cifar10_test_lossless1017.npz"),
            )
        }
    return out


def build(name: str, ddir: Path, work: Path) -> dict:
    """Every variant of one model, written to work/ with what we know of it (cached as JSON):
    quantizing is not timed against anything here, so it may run on a busy machine."""
    import json

    info_path = work / f"{name}.info.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    fp, calib, arrays = model_and_calib(name, ddir, work)
    v = {"float": fp}
    info = {"quantize_s": {}}
    v["ort_w8a8"] = work / f"{name}.ort_w8a8.onnx"
    info["quantize_s"]["ort_w8a8"] = round(ort_quantize_static(fp, v["ort_w8a8"], arrays), 1)
    v["ort_qint4"] = work / f"{name}.ort_qint4.onnx"
    info["quantize_s"]["ort_qint4"] = round(ort_int4(fp, v["ort_qint4"], arrays), 1)
    jobs = {
        "faaq_w8a8": dict(scheme="w8a8"),
        "faaq_w4a8": dict(scheme="w4a8"),
        "faaq_w4a8_dequant": dict(scheme="w4a8", weight_storage="dequant"),
        "faaq_avg4": dict(budget="avg-bits=4"),
        "faaq_avg3": dict(budget="avg-bits=3"),
    }
    for key, kw in jobs.items():
        v[key] = work / f"{name}.{key}.onnx"
        info[key] = faaq(fp, v[key], calib, **kw)
        info["quantize_s"][key] = info[key]["seconds"]
    info["bytes"] = {
        k: sum(q.stat().st_size for q in p.parent.glob(p.name + "*")) for k, p in v.items()
    }
    info["ops_left_float"] = {k: float_ops(p) for k, p in v.items() if k != "float"}
    if name.endswith("cifar10"):
        info["top1"] = accuracy(
            {k: v[k] for k in ("float", "faaq_w4a8", "faaq_w4a8_dequant")}, ddir
        )
    info["paths"] = {k: str(p) for k, p in v.items()}
    np.save(work / f"{name}.x.npy", arrays["input"][:8])
    info_path.write_text(json.dumps(info, indent=1))
    return info


def time_model(name: str, info: dict, work: Path, rounds: int) -> dict:
    """Start-up and interleaved latency of every variant: run this on a quiet machine."""
    v = {k: Path(p) for k, p in info["paths"].items()}
    x = np.load(work / f"{name}.x.npy")
    info["startup_ms"] = {k: startup(p) for k, p in v.items()}
    load = os.getloadavg()[0]
    info["latency_ms"] = {
        "1": interleaved(v, x[:1], rounds),
        "8": interleaved(v, np.concatenate([x] * 8)[:8], rounds),
    }
    info["loadavg_timing"] = [load, os.getloadavg()[0]]
    info["rounds"], info["timed_at"] = rounds, time.strftime("%Y-%m-%d %H:%M")
    info["loadavg_after"] = os.getloadavg()
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument(
        "--work", default=None, help="keep the built models here (re-used by a later run)"
    )
    ap.add_argument(
        "--phase",
        default="all",
        choices=["all", "build", "time"],
        help="build the variants (any machine), time them (a quiet one), or both",
    )
    ap.add_argument(
        "--keep-others",
        action="store_true",
        help="--phase time: keep the other models' rows of the last run",
    )
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="faaq-int8-kernels-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(),
        "rounds": args.rounds,
        "loadavg_before": os.getloadavg(),
        "models": {},
    }
    if args.phase == "time" and args.keep_others:  # re-time some models, keep the rest
        result["models"] = previous("int8_kernels").get("models", {})
    for name in args.models.split(","):
        info = build(name, ddir, work)
        print(name, "built", info["bytes"], flush=True)
        if args.phase == "build":
            continue
        result["models"][name] = time_model(name, info, work, args.rounds)
        print(name, result["models"][name]["latency_ms"], flush=True)
    if args.phase != "build":
        write("int8_kernels", result, markdown(result))


def markdown(result: dict) -> str:
    cols = [
        "float",
        "ort_w8a8",
        "ort_qint4",
        "faaq_w8a8",
        "faaq_w4a8",
        "faaq_w4a8_dequant",
        "faaq_avg4",
        "faaq_avg3",
    ]
    md = ["Medians of interleaved rounds; ms (speed-up over float)", ""]
    for name, info in result["models"].items():
        md += [
            f"**{name}** (load average while timing {info['loadavg_timing'][0]:.2f} -> "
            f"{info['loadavg_timing'][1]:.2f}; {info.get('rounds', result['rounds'])} rounds, "
            f"{info.get('timed_at', '')})",
            "",
            "| variant | bs1 ms | bs8 ms | file bytes | ops left float | start-up ms |",
            "|---|---|---|---|---|---|",
        ]
        for c in cols:
            l1, l8 = info["latency_ms"]["1"][c], info["latency_ms"]["8"][c]
            f1, f8 = info["latency_ms"]["1"]["float"], info["latency_ms"]["8"]["float"]
            md.append(
                f"| {c} | {l1:.3f} ({f1 / l1:.2f}x) | {l8:.3f} ({f8 / l8:.2f}x) | {info['bytes'][c]} | "
                f"{info['ops_left_float'].get(c, '-')} | {info['startup_ms'][c]} |"
            )
        lat = info["latency_ms"]
        checks = {
            "sub-8-bit plans <= 1.05 x faaq W8A8 (bs1 / bs8)": all(
                lat[b][k] <= 1.05 * lat[b]["faaq_w8a8"]
                for b in ("1", "8")
                for k in ("faaq_w4a8", "faaq_avg4", "faaq_avg3")
            ),
            "faaq W4A8 >= 3 x faster than ORT QInt4": all(
                lat[b]["ort_qint4"] >= 3 * lat[b]["faaq_w4a8"] for b in ("1", "8")
            ),
            "faaq W8A8 <= 1.02 x ORT W8A8": all(
                lat[b]["faaq_w8a8"] <= 1.02 * lat[b]["ort_w8a8"] for b in ("1", "8")
            ),
            "W4A8 bytes / W8A8 bytes": round(
                info["bytes"]["faaq_w4a8"] / info["bytes"]["faaq_w8a8"], 3
            ),
        }
        md += [""] + [f"- {k}: {v}" for k, v in checks.items()]
        if "top1" in info:
            t = info["top1"]
            md.append(
                f"- top-1 test/lossless: cast {100 * t['faaq_w4a8']['test']:.2f}/{100 * t['faaq_w4a8']['lossless']:.2f}"
                f", DQ(int4) {100 * t['faaq_w4a8_dequant']['test']:.2f}/"
                f"{100 * t['faaq_w4a8_dequant']['lossless']:.2f}"
            )
        md.append(
            f"- plans: avg-bits=4 {info['faaq_avg4']['plan']}, avg-bits=3 {info['faaq_avg3']['plan']}"
        )
        md.append("")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
