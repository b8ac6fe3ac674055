"""Grouped Convs with few channels per group: ORT's int8 Conv against the float one.

Per case, a 1x1 Conv -> Relu -> the grouped 3x3 Conv -> Relu -> 1x1 Conv on 32 channels at
32x32, batch 1: the float model, faaq W8A8 as written (narrow groups merged:
passes/emit_regroup.py), faaq W8A8 with that pass off (the grouping as the model has it) and
ONNX Runtime's quantize_static W8A8, timed interleaved (shuffled rounds, sessions not spinning;
faaq_onnx.runtime.timing), three runs of --pairs rounds; the table gives the median ms of
the float model and each quantized model's time relative to it (median of the three runs).

    python benchmarks/bench_grouped_conv.py

Writes benchmarks/out/grouped_conv.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import one_input_model

CASES = {  # name: (input channels, output channels, groups) of the middle Conv
    "depthwise": (32, 32, 32),
    "depthwise x2": (32, 64, 32),
    "depthwise x4": (32, 128, 32),
    "2 per group": (32, 32, 16),
    "4 per group": (32, 32, 8),
    "8 per group": (32, 32, 4),
    "dense": (32, 32, 1),
}


def model(cin: int, cout: int, groups: int, side: int = 32) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {
        "w0": rng.standard_normal((cin, cin, 1, 1)).astype(np.float32) * 0.3,
        "w1": rng.standard_normal((cout, cin // groups, 3, 3)).astype(np.float32) * 0.3,
        "w2": rng.standard_normal((16, cout, 1, 1)).astype(np.float32) * 0.3,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="pre"),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["g"], name="grouped", group=groups, pads=[1] * 4),
        helper.make_node("Relu", ["g"], ["rg"]),
        helper.make_node("Conv", ["rg", "w2"], ["y"], name="post"),
    ]
    return onnx.shape_inference.infer_shapes(one_input_model(nodes, [1, cin, side, side], inits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=300)
    args = ap.parse_args()
    from common import md_table, meta_stamp, ort_quantize_static, run_meta, write

    from faaq_onnx import quantize
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.passes import emit_regroup
    from faaq_onnx.runtime.timing import interleaved_median_ms

    work = Path(tempfile.mkdtemp(prefix="faaq-grouped-"))
    rows, loads = [], [os.getloadavg()[0]]
    factor = emit_regroup.regroup_factor
    for name, (cin, cout, groups) in CASES.items():
        tag = name.replace(" ", "_")
        src = work / f"{tag}.onnx"
        onnx.save(model(cin, cout, groups), src)
        x = np.random.default_rng(1).standard_normal((16, cin, 32, 32)).astype(np.float32)
        config = QuantConfig(scheme="w8a8", progress=False)
        emit_regroup.regroup_factor = factor
        result = quantize(str(src), {"x": x}, str(work / f"{tag}.faaq.onnx"), config)
        emit_regroup.regroup_factor = lambda *a: None
        quantize(str(src), {"x": x}, str(work / f"{tag}.asis.onnx"), config)
        emit_regroup.regroup_factor = factor
        ort_quantize_static(src, work / f"{tag}.ort.onnx", {"x": x})
        paths = [str(work / f"{tag}{s}.onnx") for s in ("", ".faaq", ".asis", ".ort")]
        runs = [
            interleaved_median_ms(paths, {"x": x[:1]}, pairs=args.pairs, seed=r) for r in range(3)
        ]
        ms = np.median(np.array(runs), axis=0)
        merged = result.report["regrouped_convs"].get("grouped", {}).get("merged", "-")
        rows.append(
            {
                "case": name,
                "per_group": [cin // groups, cout // groups],
                "merged": merged,
                "float_ms": float(ms[0]),
                "faaq": float(ms[1] / ms[0]),
                "as_is": float(ms[2] / ms[0]),
                "ort": float(ms[3] / ms[0]),
            }
        )
        print(rows[-1], flush=True)
        loads.append(os.getloadavg()[0])
    meta = run_meta(loads)
    headers = [
        "grouped Conv",
        "channels per group in / out",
        "groups merged",
        "float ms",
        "faaq W8A8",
        "faaq W8A8, groups as they are",
        "ORT quantize_static W8A8",
    ]
    cells = [
        [
            r["case"],
            f"{r['per_group'][0]} / {r['per_group'][1]}",
            r["merged"],
            f"{r['float_ms']:.3f}",
            *(f"{r[k]:.2f}x" for k in ("faaq", "as_is", "ort")),
        ]
        for r in rows
    ]
    title = "# Grouped Convs: ORT's int8 Conv against the float one"
    lines = [title, "", meta_stamp(meta), "", *md_table(headers, cells)]
    write("grouped_conv", {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
