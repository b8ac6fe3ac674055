"""Issue 2 accuracy table: uniform schemes x range setters on the real CIFAR-10 test sets.

Calibrates only on the shipped training images (cifar10_train5000.npz, a seeded
subset of --calib-size), evaluates on cifar10_test.npz (10,000 JPEG-decoded) and
cifar10_test_lossless1017.npz (original pixels).

    python benchmarks/bench_uniform_accuracy.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import cifar_model, data_dir, machine, write

from faaq_onnx.config import QuantConfig
from faaq_onnx.data import load_inputs, load_labeled
from faaq_onnx.evaluate import evaluate
from faaq_onnx.pipeline import quantize

TEST_SETS = {
    "test (JPEG, 10000)": "cifar10/cifar10_test.npz",
    "lossless (1017)": "cifar10/cifar10_test_lossless1017.npz",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="resnet20-cifar10,resnet56-cifar10")
    ap.add_argument("--schemes", default="w8a8,w6a6,w4a8,w4a4")
    ap.add_argument("--act-ranges", default="minmax,percentile,mse,entropy")
    ap.add_argument("--weight-ranges", default="minmax,mse")
    ap.add_argument("--calib-size", type=int, default=256)
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-bench-"))
    tests = {k: load_labeled(ddir / v) for k, v in TEST_SETS.items()}
    calib = load_inputs(
        ddir / "cifar10/cifar10_train5000.npz", ["input"], limit=args.calib_size, seed=0
    )
    rows = []
    for name in args.models.split(","):
        fp = cifar_model(name, ddir, work)
        row = {"model": name, "scheme": "float", "act_range": "-", "weight_range": "-"}
        for k, (x, y) in tests.items():
            row[k] = evaluate(fp, x, y)["top1"]
        rows.append(row)
        print(row, flush=True)
        for scheme in args.schemes.split(","):
            for wr in args.weight_ranges.split(","):
                for ar in args.act_ranges.split(","):
                    cfg = QuantConfig(
                        scheme=scheme,
                        act_range=ar,
                        weight_range=wr,
                        calib_size=args.calib_size,
                        progress=False,
                    )
                    t0 = time.perf_counter()
                    res = quantize(fp, calib, None, cfg)
                    dt = time.perf_counter() - t0
                    row = {
                        "model": name,
                        "scheme": scheme,
                        "act_range": ar,
                        "weight_range": wr,
                        "quantize_s": round(dt, 2),
                        "weight_bytes": res.report["verify"]["size"]["weight_stored_bytes"],
                        "sqnr_db": next(iter(res.report["verify"]["outputs"].values()))["sqnr_db"],
                    }
                    for k, (x, y) in tests.items():
                        row[k] = evaluate(res.model, x, y)["top1"]
                    rows.append(row)
                    print(row, flush=True)
    md = [
        "| model | scheme | weight range | act range | "
        + " | ".join(f"top-1 {k}" for k in TEST_SETS)
        + " | output SQNR (dB) | weight bytes |",
        "|" + "---|" * (6 + len(TEST_SETS) - 1),
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['scheme']} | {r['weight_range']} | {r['act_range']} | "
            + " | ".join(f"{100 * r[k]:.2f} %" for k in TEST_SETS)
            + f" | {r.get('sqnr_db', float('nan')):.1f} | {r.get('weight_bytes', '-')} |"
        )
    write(
        "uniform_accuracy",
        {"machine": machine(), "calib_size": args.calib_size, "rows": rows},
        "\n".join(md) + "\n",
    )


if __name__ == "__main__":
    main()
