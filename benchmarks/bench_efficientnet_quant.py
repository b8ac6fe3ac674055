"""Issue 8: the real EfficientNet-Lite0 on ImageNet val1300.

Calibration: 256 images of val1300 (seed 0), preset imagenet-inception; evaluation: the
other 1,044 images (top-1, top-5), with the float model's score on the same images (and on
all 1,300: 82.46 %). Variants: ORT quantize_static W8A8 (reference); faaq W8A8; faaq W8A8
with cross-layer equalization + bias correction (EfficientNet-Lite has ReLU6: --cle-relu6
replace, as the DFQ recipe; the float model with that replacement is scored too); faaq
W4A8 with AdaRound; faaq mixed --budget avg-bits=4 (W4A8/W8A8) with AdaRound; mixed
avg-bits=4 over W2A8/W4A8/W8A8 (round to nearest, and with AdaRound); W8A8 with bias correction alone and with
CLE keeping the ReLU6 pairs as they are (the default) + bias correction. --skip leaves
variants out; rows of earlier runs are kept.

    python benchmarks/bench_efficientnet_quant.py --data-dir ../shared/data --iters 500
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import data_dir, machine, ort_quantize_static, previous, write

from faaq_onnx.config import QuantConfig
from faaq_onnx.evaluate import evaluate
from faaq_onnx.pipeline import Compilation, quantize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument(
        "--optimize-samples", type=int, default=256, help="images AdaRound reconstructs on"
    )
    ap.add_argument("--skip", default="", help="variants to leave out (comma-separated names)")
    ap.add_argument(
        "--fresh", action="store_true", help="forget the rows of earlier runs (kept by default)"
    )
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-effnet-"))
    from faaq_onnx import zoo
    from faaq_onnx.data import load_labeled

    fp = work / "effnet.onnx"
    zoo.export("efficientnet-lite0-imagenet", fp, weights="auto")
    x, y = load_labeled(
        ddir / "imagenet/val1300",
        preset="imagenet-inception",
        labels=ddir / "imagenet/val1300_labels.txt",
    )
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    cal, ev = np.sort(order[:256]), np.sort(order[256:])
    np.savez(work / "calib.npz", input=x[cal])
    xe, ye = x[ev], y[ev]
    # this run's rows; report() adds them to what earlier (or concurrent) runs wrote
    rows = {"float (all 1300)": evaluate(fp, x, y), "float": evaluate(fp, xe, ye)}
    print({k: v["top1"] for k, v in rows.items()}, flush=True)
    out = work / "ort.onnx"
    ort_s = ort_quantize_static(fp, out, {"input": x[cal]})
    rows["ORT W8A8"] = {**evaluate(out, xe, ye), "quantize_s": round(ort_s, 1)}
    # the float function after CLE's ReLU6 -> Relu replacement, for an honest baseline
    cle = Compilation(
        str(fp),
        str(work / "calib.npz"),
        QuantConfig(progress=False, optimize="cle", cle_relu6="replace"),
    )
    import onnx

    onnx.save(cle.float_proto, str(work / "effnet_cle.onnx"))
    rows["float after CLE (ReLU6 -> Relu)"] = evaluate(work / "effnet_cle.onnx", xe, ye)
    variants = {
        "faaq W8A8": dict(scheme="w8a8"),
        "faaq W8A8 + CLE + bias correction": dict(
            scheme="w8a8", optimize="cle,bias-correction", cle_relu6="replace"
        ),
        "faaq W4A8": dict(scheme="w4a8"),
        "faaq W4A8 + AdaRound": dict(
            scheme="w4a8",
            optimize="adaround",
            optimize_iters=args.iters,
            optimize_samples=args.optimize_samples,
        ),
        "faaq avg-bits=4 (W4A8/W8A8) + AdaRound": dict(
            budget="avg-bits=4",
            optimize="adaround",
            optimize_iters=args.iters,
            optimize_samples=args.optimize_samples,
        ),
        # candidates that let a 4-bit average buy 8-bit layers with 2-bit ones (as on CIFAR)
        "faaq avg-bits=4 (W2A8/W4A8/W8A8)": dict(budget="avg-bits=4", candidates="w2a8,w4a8,w8a8"),
        "faaq avg-bits=4 (W2A8/W4A8/W8A8) + AdaRound": dict(
            budget="avg-bits=4",
            candidates="w2a8,w4a8,w8a8",
            optimize="adaround",
            optimize_iters=args.iters,
            optimize_samples=args.optimize_samples,
        ),
        "faaq W8A8 + bias correction": dict(scheme="w8a8", optimize="bias-correction"),
        "faaq W8A8 + CLE (ReLU6 pairs kept) + bias correction": dict(
            scheme="w8a8", optimize="cle,bias-correction"
        ),
    }
    for name, kw in variants.items():
        if name in args.skip.split(","):
            continue
        if "adaround" in kw.get("optimize", ""):  # rows of different settings stand side by side
            name = f"{name} ({args.iters} it, {args.optimize_samples} images)"
        budget = kw.pop("budget", None)
        candidates = kw.pop("candidates", "w4a8,w8a8")
        t0 = time.perf_counter()
        res = quantize(
            str(fp),
            str(work / "calib.npz"),
            work / "q.onnx",
            QuantConfig(progress=False, calib_size=256, **kw),
            budget=budget,
            candidates=candidates if budget else None,
            cache_dir=False,
        )
        rows[name] = {
            **evaluate(work / "q.onnx", xe, ye),
            "quantize_s": round(time.perf_counter() - t0, 1),
            "adaround": f"{args.iters} it, {args.optimize_samples} images"
            if "adaround" in kw.get("optimize", "")
            else "-",
            "loadavg": os.getloadavg()[0],
            "plan": dict(Counter(res.report["plan"]["choices"].values())),
            "kernels": res.report["verify"]["kernels"]["summary"][0],
            "stored_bits": res.report["verify"]["size"]["stored_weight_bits"],
        }
        print(name, rows[name]["top1"], rows[name]["quantize_s"], flush=True)
        report(rows, args)


def report(rows: dict, args) -> None:
    """Written after every variant, so a long run leaves what it has measured. Rows another run
    wrote meanwhile are kept (two runs with different --skip may go side by side)."""
    rows = {**({} if args.fresh else previous("efficientnet_quant").get("rows", {})), **rows}
    md = [
        "EfficientNet-Lite0 (real weights); calibration 256 val1300 images, evaluation on the other 1,044; "
        "AdaRound iterations / images per row",
        "",
        "| model | top-1 | top-5 | quantize s | AdaRound | kernels |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in rows.items():
        md.append(
            f"| {k} | {100 * r['top1']:.2f} | {100 * r['top5']:.2f} | {r.get('quantize_s', '-')} | "
            f"{r.get('adaround', '-')} | {r.get('kernels', '-')} |"
        )
    write("efficientnet_quant", {"machine": machine(), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
