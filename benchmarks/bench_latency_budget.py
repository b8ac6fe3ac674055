"""Issue 7: latency budgets from measured kernel costs, and the MatMul kernel choice on MiniLM.

1. `--budget latency=1.0` (no slower than the all-W8A8 model, candidates W4A8/W8A8/W8A16) on
   ResNet-18 (random init, 64 val1300 images) and the real all-MiniLM-L6-v2 (SST-2
   sentences): the plan, and its latency as faaq measured it on the emitted model
   (interleaved with the W8A8 model) next to the budget.
2. MiniLM W4A8 with --matmul-kernel int8 (QLinearMatMul/MatMulInteger, cast storage), nbits
   (weight-only MatMulNBits) and auto (per group, by measured latency): latencies at batch 1
   and 8 (interleaved round-robin), the per-group measurements behind `auto`, and embedding
   cosine to float on 256 SST-2 dev sentences.

    python benchmarks/bench_latency_budget.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from bench_int8_kernels import interleaved
from common import data_dir, machine, write
from minilm import embed, minilm_onnx, read_sst2, tokenize

from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import quantize


def budget_row(fp, calib, out, metric, **cfg) -> dict:
    res = quantize(
        str(fp),
        calib,
        str(out),
        QuantConfig(progress=False, **cfg),
        budget="latency=1.0",
        candidates="w4a8,w8a8,w8a16",
        metric=metric,
        cache_dir=False,
    )
    b = res.report["budget"]
    return {
        "plan": dict(Counter(res.report["plan"]["choices"].values())),
        "budget": b["budget"],
        "measured": b["measured"],
        "how": b["how"],
        "met": b["met"],
        "tries": b["measured_per_try"],
        "estimated": res.report["plan"]["meta"].get("budget_value_reached"),
        "kernels": res.report["verify"]["kernels"]["summary"][0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-latency-budget-"))
    out = {"machine": machine(), "loadavg_before": os.getloadavg()}
    from faaq_onnx import zoo
    from faaq_onnx.data import load_inputs

    r18 = work / "resnet18.onnx"
    zoo.export("resnet18-imagenet", r18)
    x = load_inputs(ddir / "imagenet/val1300", ["input"], preset="imagenet", limit=128, seed=0)
    np.savez(work / "r18_calib.npz", input=np.asarray(x["input"]))
    out["resnet18"] = budget_row(
        r18, str(work / "r18_calib.npz"), work / "r18_lat.onnx", "fit", calib_size=64
    )
    print("resnet18", out["resnet18"], flush=True)

    fp, tok, calib = minilm_onnx(work, ddir)
    out["minilm_budget"] = budget_row(
        fp, str(calib), work / "minilm_lat.onnx", "sqnr", calib_size=128
    )
    print("minilm", out["minilm_budget"], flush=True)
    dev_x, _ = read_sst2(ddir / "sst2" / "dev.tsv")
    dev = tokenize(tok, dev_x[:256])
    ref = embed(fp, dev)
    paths, kernels = {"float": fp}, {}
    for kernel in ("int8", "nbits", "auto"):
        p = work / f"minilm_w4a8_{kernel}.onnx"
        res = quantize(
            str(fp),
            str(calib),
            str(p),
            QuantConfig(scheme="w4a8", matmul_kernel=kernel, progress=False, calib_size=128),
        )
        e = embed(p, dev)
        kernels[kernel] = {
            "cosine": float(np.mean(np.sum(e * ref, 1))),
            "matmulnbits": len(res.report["matmulnbits"]),
            "measured_choice": res.report["matmul_kernel"].get("measured"),
        }
        paths[kernel] = p
    feeds1 = {k: v[:1] for k, v in dev.items()}
    feeds8 = {k: v[:8] for k, v in dev.items()}
    lat = {
        "1": interleaved(paths, feeds1, args.rounds),
        "8": interleaved(paths, feeds8, args.rounds),
    }
    out["minilm_matmul_kernel"] = {"latency_ms": lat, "variants": kernels}
    out["loadavg_after"] = os.getloadavg()
    md = [
        f"Load average before/after: {out['loadavg_before'][0]:.2f} / {out['loadavg_after'][0]:.2f}",
        "",
        "| model | budget | plan | estimated (x W8A8) | measured on the emitted model | met |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("resnet18", "minilm_budget"):
        r = out[key]
        md.append(
            f"| {key} | {r['budget']} | {r['plan']} | {r['estimated']:.3f} | {r['measured']:.3f} ({r['how']}) "
            f"| {r['met']} |"
        )
    md += [
        "",
        "MiniLM W4A8, MatMul weights: ms (batch 1 / 8), cosine to float",
        "",
        "| kernel | bs1 ms | bs8 ms | MatMulNBits nodes | cosine |",
        "|---|---|---|---|---|",
    ]
    md.append(f"| float | {lat['1']['float']:.3f} | {lat['8']['float']:.3f} | - | 1.0000 |")
    for k, v in kernels.items():
        md.append(
            f"| {k} | {lat['1'][k]:.3f} | {lat['8'][k]:.3f} | {v['matmulnbits']} | {v['cosine']:.4f} |"
        )
    write("latency_budget", out, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
