"""faaq W8A8 vs ONNX Runtime's own quantize_static, side by side in one run.

Same float model, same 256 calibration images from cifar10_train5000.npz, same test
sets. ORT gets its recommended flow: quant_pre_process, then quantize_static with QDQ,
per-channel int8 weights, uint8 activations, MinMax calibration. Latency: the three
models' sessions live side by side and their timed runs are interleaved (round robin,
rotating the order each round), so load on the machine hits all three alike; median of
--runs runs after 10 warm-up runs, batch 1 and 8, on this machine's CPU.

    python benchmarks/bench_vs_ort.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cifar_model, data_dir, machine, ort_quantize_static, write

from faaq_onnx.config import QuantConfig
from faaq_onnx.data import load_inputs, load_labeled
from faaq_onnx.evaluate import evaluate
from faaq_onnx.pipeline import quantize
from faaq_onnx.runtime.session import make_session

TEST_SETS = {
    "test (JPEG, 10000)": "cifar10/cifar10_test.npz",
    "lossless (1017)": "cifar10/cifar10_test_lossless1017.npz",
}


def interleaved_latency(paths, batches, runs: int, warmup: int = 10) -> dict:
    """Median ms per (model file name, batch), runs interleaved across models."""
    out = {}
    rng = np.random.default_rng(0)
    for b in batches:
        sessions = [make_session(p) for p in paths]
        feeds = {"input": rng.standard_normal((b, 3, 32, 32)).astype(np.float32)}
        for s in sessions:
            for _ in range(warmup):
                s.run(None, feeds)
        times = [[] for _ in paths]
        for r in range(runs):
            order = list(range(len(paths)))
            order = order[r % len(order) :] + order[: r % len(order)]
            for i in order:
                t0 = time.perf_counter()
                sessions[i].run(None, feeds)
                times[i].append(1000 * (time.perf_counter() - t0))
        for p, t in zip(paths, times):
            out[(Path(p).name, b)] = float(np.median(t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="resnet20-cifar10,resnet56-cifar10")
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--act-range", default="mse")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-vs-ort-"))
    tests = {k: load_labeled(ddir / v) for k, v in TEST_SETS.items()}
    calib = load_inputs(
        ddir / "cifar10/cifar10_train5000.npz", ["input"], limit=args.calib_size, seed=0
    )
    rows, lat_all = [], {}
    for name in args.models.split(","):
        fp = cifar_model(name, ddir, work)
        faaq_path = work / f"{name}.faaq_w8a8.onnx"
        t0 = time.perf_counter()
        quantize(
            fp,
            calib,
            faaq_path,
            QuantConfig(
                scheme="w8a8", act_range=args.act_range, calib_size=args.calib_size, progress=False
            ),
        )
        faaq_s = time.perf_counter() - t0
        ort_path = work / f"{name}.ort_w8a8.onnx"
        ort_s = ort_quantize_static(fp, ort_path, calib)
        lat = interleaved_latency([fp, faaq_path, ort_path], (1, 8), args.runs)
        lat_all[name] = {f"{k[0]} bs={k[1]}": v for k, v in lat.items()}
        for label, path, qs in (
            ("float", fp, None),
            ("faaq W8A8", faaq_path, faaq_s),
            ("ORT quantize_static W8A8", ort_path, ort_s),
        ):
            row = {
                "model": name,
                "variant": label,
                "bytes": path.stat().st_size,
                "quantize_s": None if qs is None else round(qs, 2),
                "bs1_ms": lat[(path.name, 1)],
                "bs8_ms": lat[(path.name, 8)],
            }
            for k, (x, y) in tests.items():
                row[k] = evaluate(path, x, y)["top1"]
            rows.append(row)
            print(row, flush=True)
    md = [
        "| model | variant | "
        + " | ".join(f"top-1 {k}" for k in TEST_SETS)
        + " | model bytes | latency bs=1 (ms) | latency bs=8 (ms) | quantize time (s) |",
        "|" + "---|" * (7 + len(TEST_SETS) - 1),
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['variant']} | "
            + " | ".join(f"{100 * r[k]:.2f} %" for k in TEST_SETS)
            + f" | {r['bytes']:,} | {r['bs1_ms']:.3f} | {r['bs8_ms']:.3f} | {r['quantize_s'] or '-'} |"
        )
    by = {(r["model"], r["variant"]): r for r in rows}
    md.append("")
    for name in args.models.split(","):
        f, o = by[(name, "faaq W8A8")], by[(name, "ORT quantize_static W8A8")]
        md.append(
            f"- {name}: faaq/ORT latency ratio bs=1 {f['bs1_ms'] / o['bs1_ms']:.3f}, "
            f"bs=8 {f['bs8_ms'] / o['bs8_ms']:.3f}; top-1 faaq - ORT "
            + ", ".join(f"{k}: {100 * (f[k] - o[k]):+.2f} pt" for k in TEST_SETS)
        )
    load = os.getloadavg()
    md.append(
        f"\nLoad average at the end: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} cores."
    )
    write(
        "vs_ort",
        {"machine": machine(), "rows": rows, "latency": lat_all, "loadavg_end": load},
        "\n".join(md) + "\n",
    )


if __name__ == "__main__":
    main()
