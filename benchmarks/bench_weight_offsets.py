"""Asymmetric low-bit weights as offset codes: accuracy, bytes and speed against symmetric ones.

Since the offset form (passes/emit_weights.py), faaq writes weights of up to 6 bits on an
asymmetric grid by default, stored as packed signed codes plus an int8 offset per channel that
ORT folds at load, so the integer kernels see zero point 0 and take their fast path. This runs
the plain command (`faaq quantize MODEL -o OUT --calib CALIB --scheme S`) and the same with
`--weight-symmetric` (the default before), scores both against the float model on held-out
labeled images (`faaq eval`) and times float, symmetric and default interleaved (batch 1,
ORT CPU EP, 2 threads, sessions not spinning, three repeats, middle one reported).

    python benchmarks/bench_weight_offsets.py --data-dir ../shared/data \\
        --models efficientnet-lite0,resnet20,resnet56 --schemes w4a8

EfficientNet-Lite0: real weights, 256 val1300 images to calibrate, the other 1,044 to score;
ResNet-20/56: 256 of cifar10_train5000 (`--calib-size 256 --seed 0`), 10,000 test images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from bench_seed003_tables import prepare
from common import data_dir, faaq_cli, scores, write_table

from faaq_onnx.runtime.timing import interleaved_median_ms

FORMS = (("symmetric", ["--weight-symmetric"]), ("default", []))


def latency(models: list[Path]) -> list[float]:
    """Median ms of each model at batch 1 on one random input, interleaved, the middle of three
    repeats."""
    import onnx

    inp = onnx.load(str(models[0]), load_external_data=False).graph.input[0]
    shape = [1] + [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    feeds = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    reps = [
        interleaved_median_ms([str(m) for m in models], feeds, pairs=300, seed=r) for r in range(3)
    ]
    return [float(np.median([r[i] for r in reps])) for i in range(len(models))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="efficientnet-lite0,resnet20,resnet56")
    ap.add_argument("--schemes", default="w4a8")
    ap.add_argument("--work", help="folder for models and data (default: a new temporary one)")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--out", default="weight_offsets")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-offsets-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, loads = [], []
    for model in args.models.split(","):
        files = prepare(model, ddir, work)
        for scheme in args.schemes.split(","):
            written = []
            for form, flags in FORMS:
                out = work / f"{files['prefix']}_{scheme}_{form}.onnx"
                base = [str(files["float"]), "-o", str(out), "--calib", str(files["calib"])]
                wall = faaq_cli(
                    "quantize", *base, *files["extra"], "--scheme", scheme, *flags, "--no-cache"
                )
                written.append((form, out, wall))
                loads.append(os.getloadavg()[0])
            got = scores(files["float"], [w[1] for w in written], files["eval"], work)
            ms = [] if args.no_latency else latency([files["float"]] + [w[1] for w in written])
            loads.append(os.getloadavg()[0])
            for i, (form, out, wall) in enumerate(written):
                s = got[out.name]
                rows.append([
                    model, scheme, form, f"{s['top1']:.2f}", f"{s['kl']:.4f}", f"{s['agreement']:.2f}",
                    f"{s['logit_sqnr_db']:.1f}", f"{out.stat().st_size / 1024:.1f}",
                    f"{ms[i + 1] / ms[0]:.2f}" if ms else "", f"{wall:.0f}",
                ])  # fmt: skip
            print(rows[-2], rows[-1], flush=True)
    write_table(
        args.out,
        "Asymmetric low-bit weights as offset codes against symmetric weights",
        "python benchmarks/bench_weight_offsets.py --data-dir DATA "
        f"--models {args.models} --schemes {args.schemes}",
        loads,
        [
            "model",
            "scheme",
            "weights",
            "top-1 %",
            "KL to float",
            "agreement %",
            "logit SQNR dB",
            "file KB",
            "latency / float",
            "quantize s",
        ],
        rows,
        how="'default' is the plain command (asymmetric up to 6 "
        "bits, offset codes), 'symmetric' adds --weight-symmetric",
    )


if __name__ == "__main__":
    main()
