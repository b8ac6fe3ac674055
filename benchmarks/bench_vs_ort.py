"""faaq W8A8 vs ONNX Runtime's own quantize_static, side by side in one run.

Same float model, same 256 calibration images from cifar10_train5000.npz, same test
sets. ORT gets its recommended flow: quant_pre_process, then quantize_static with QDQ,
per-channel int8 weights, uint8 activations, MinMax calibration. Latency is the
median of --runs timed runs after warm-up, each model in its own process, batch 1
and 8, on this machine's CPU.

    python benchmarks/bench_vs_ort.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cifar_model, data_dir, machine, write

from faaq_onnx.config import QuantConfig
from faaq_onnx.data import load_inputs, load_labeled
from faaq_onnx.evaluate import evaluate
from faaq_onnx.pipeline import quantize
from faaq_onnx.runtime.profile import profile_models

TEST_SETS = {"test (JPEG, 10000)": "cifar10/cifar10_test.npz", "lossless (1017)": "cifar10/cifar10_test_lossless1017.npz"}


def ort_quantize_static(float_path: Path, out: Path, calib: np.ndarray) -> float:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="resnet20-cifar10,resnet56-cifar10")
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--act-range", default="mse")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-vs-ort-"))
    tests = {k: load_labeled(ddir / v) for k, v in TEST_SETS.items()}
    calib = load_inputs(ddir / "cifar10/cifar10_train5000.npz", ["input"], limit=args.calib_size, seed=0)
    rows, lat_all = [], {}
    for name in args.models.split(","):
        fp = cifar_model(name, ddir, work)
        faaq_path = work / f"{name}.faaq_w8a8.onnx"
        t0 = time.perf_counter()
        quantize(fp, calib, faaq_path, QuantConfig(scheme="w8a8", act_range=args.act_range,
                                                   calib_size=args.calib_size, progress=False))
        faaq_s = time.perf_counter() - t0
        ort_path = work / f"{name}.ort_w8a8.onnx"
        ort_s = ort_quantize_static(fp, ort_path, calib["input"])
        prof = profile_models([fp, faaq_path, ort_path], batches=(1, 8), warmup=10, runs=args.runs)
        lat = {(Path(r["model"]).name, r["batch"]): r["median_ms"] for r in prof["results"]}
        lat_all[name] = prof
        for label, path, qs in (("float", fp, None), ("faaq W8A8", faaq_path, faaq_s), ("ORT quantize_static W8A8", ort_path, ort_s)):
            row = {"model": name, "variant": label, "bytes": path.stat().st_size,
                   "quantize_s": None if qs is None else round(qs, 2),
                   "bs1_ms": lat[(path.name, 1)], "bs8_ms": lat[(path.name, 8)]}
            for k, (x, y) in tests.items():
                row[k] = evaluate(path, x, y)["top1"]
            rows.append(row)
            print(row, flush=True)
    md = ["| model | variant | " + " | ".join(f"top-1 {k}" for k in TEST_SETS)
          + " | model bytes | latency bs=1 (ms) | latency bs=8 (ms) | quantize time (s) |",
          "|" + "---|" * (7 + len(TEST_SETS) - 1)]
    for r in rows:
        md.append(f"| {r['model']} | {r['variant']} | " + " | ".join(f"{100 * r[k]:.2f} %" for k in TEST_SETS)
                  + f" | {r['bytes']:,} | {r['bs1_ms']:.3f} | {r['bs8_ms']:.3f} | {r['quantize_s'] or '-'} |")
    by = {(r["model"], r["variant"]): r for r in rows}
    md.append("")
    for name in args.models.split(","):
        f, o = by[(name, "faaq W8A8")], by[(name, "ORT quantize_static W8A8")]
        md.append(f"- {name}: faaq/ORT latency ratio bs=1 {f['bs1_ms'] / o['bs1_ms']:.3f}, "
                  f"bs=8 {f['bs8_ms'] / o['bs8_ms']:.3f}; top-1 faaq - ORT "
                  + ", ".join(f"{k}: {100 * (f[k] - o[k]):+.2f} pt" for k in TEST_SETS))
    write("vs_ort", {"machine": machine(), "rows": rows, "latency": lat_all}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
