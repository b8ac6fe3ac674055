"""The foreign corpus's inline nets exported with a dynamic batch axis, as most users export.

Each net (benchmarks/foreign_corpus.py's inline families, random weights) goes through
torch.onnx.export twice: TorchScript (opset 17, dynamic_axes on the batch) and dynamo (opset 18,
a dynamic batch Dim). faaq quantizes each at W8A8 with the plain command (64 Gaussian calibration
samples); the written model's weighted ops on ORT's integer kernels (faaq's kernel report), its
latency against the float file at batch 1 and 8 (interleaved, sessions not spinning), and the
summary's output SQNR.

    python benchmarks/bench_dynamic_batch.py [--families mbv2,resnet,...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from common import OUT, git_state, machine

FAMILIES = "mbv2,resnet,shufflenet,convnext,vit,yolo,deeplab,gnunet"


def export(fam: str, exporter: str, path: Path) -> int:
    """The family's net written with a dynamic batch axis; its input side."""
    import torch
    from foreign_corpus import _export, _random_bn, _tiny_nets

    cls, side = _tiny_nets()[fam]
    opset = 17 if exporter == "ts" else 18
    torch.manual_seed(sum(map(ord, fam)))
    model = cls().eval()
    _random_bn(model, 0)
    _export(model, torch.randn(2, 3, side, side), path, exporter, opset, dynamic_batch=True)
    return side


def main() -> None:
    from faaq_onnx.runtime.kernels import kernel_report
    from faaq_onnx.runtime.timing import interleaved_median_ms

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--families", default=FAMILIES)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--out", default="dynamic_batch")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faaq-dynbatch-"))
    rows, loads = [], [os.getloadavg()[0]]
    for fam in args.families.split(","):
        for exporter in ("ts", "dynamo"):
            src = work / f"{fam}-{exporter}.onnx"
            side = export(fam, exporter, src)
            calib = np.random.default_rng(0).standard_normal((64, 3, side, side)).astype("float32")
            np.savez(work / "calib.npz", input=calib)
            out = work / f"{fam}-{exporter}.q.onnx"
            cmd = ["faaq", "quantize", str(src), "-o", str(out), "--calib", str(work / "calib.npz")]
            done = subprocess.run([*cmd, "--scheme", "w8a8", "-q"], capture_output=True, text=True)
            row: dict = {"net": fam, "exporter": exporter}
            if done.returncode:
                row["failed"] = done.stderr.strip().splitlines()[-1:]
                rows.append(row)
                print(row)
                continue
            sqnr = re.search(r"output SQNR (-?[0-9.]+) dB", done.stdout)
            weighted = kernel_report(str(out))["weighted_ops"]
            row["weighted_int"] = f"{weighted['integer']}/{weighted['total']}"
            row["sqnr_db"] = float(sqnr.group(1)) if sqnr else None
            for batch in (1, 8):
                ms = interleaved_median_ms(
                    [str(src), str(out)], {"input": calib[:batch]}, pairs=args.pairs, seed=0
                )
                row[f"b{batch}"] = [round(v, 4) for v in ms]
            loads.append(os.getloadavg()[0])
            rows.append(row)
            print(row)
    lines = [
        "# Dynamic-batch exports: faaq W8A8 against the float file",
        "",
        f"`python benchmarks/bench_dynamic_batch.py` ({args.pairs} interleaved pairs per batch "
        f"size). {machine()}; git {git_state()}; load {min(loads):.1f}-{max(loads):.1f}.",
        "",
        "| net | exporter | weighted ops on integer kernels | output SQNR dB | batch 1 ms float / "
        "W8A8 (ratio) | batch 8 ms float / W8A8 (ratio) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['net']} | {r['exporter']} | failed: {r['failed']} | | | |")
            continue
        b1, b8 = r["b1"], r["b8"]
        lines.append(
            f"| {r['net']} | {r['exporter']} | {r['weighted_int']} | {r['sqnr_db']} | "
            f"{b1[0]} / {b1[1]} ({b1[1] / b1[0]:.2f}) | {b8[0]} / {b8[1]} ({b8[1] / b8[0]:.2f}) |"
        )
    (OUT / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    (OUT / f"{args.out}.json").write_text(json.dumps({"rows": rows, "loads": loads}, indent=1))


if __name__ == "__main__":
    main()
