"""A SiLU between two int8 Convs: ORT's QLinearSigmoid + QLinearMul against the float SiLU
between DequantizeLinear and QuantizeLinear (which ORT fuses into QuickGelu), and the float model.

Conv 1x1 -> x·Sigmoid(x) -> Conv 1x1, random weights, timed interleaved (faaq_onnx.runtime.timing,
sessions not spinning) at five (batch, channels, side) shapes. faaq quantizes a SiLU whose input
a Conv writes (the first form).

    python benchmarks/bench_silu_forms.py
"""

from __future__ import annotations

import os

import numpy as np
from common import int8_weight_inits, one_input_model, write_table
from onnx import helper

from faaq_onnx.runtime.timing import interleaved_median_ms

SHAPES = ((1, 32, 32), (8, 32, 32), (1, 96, 48), (1, 240, 12), (8, 64, 16))


def build(c, mode):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, 1, 1)) * 0.1).astype(np.float32)
    inits = {
        **int8_weight_inits(w),
        "s": np.array(0.05, np.float32),
        "z": np.array(128, np.uint8),
        "so": np.array(0.004, np.float32),
        "zs": np.array(0, np.uint8),
        "sm": np.array(0.03, np.float32),
        "zm": np.array(10, np.uint8),
    }

    def conv(x, y):
        return [
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], [y + "_w"]),
            helper.make_node("Conv", [x, y + "_w"], [y + "_f"]),
            helper.make_node("QuantizeLinear", [y + "_f", "s", "z"], [y]),
        ]

    if mode == "float":
        n = [
            helper.make_node("Conv", ["x", "w"], ["a"]),
            helper.make_node("Sigmoid", ["a"], ["g"]),
            helper.make_node("Mul", ["a", "g"], ["h"]),
            helper.make_node("Conv", ["h", "w"], ["y"]),
        ]
    else:
        n = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
            *conv("xdq", "aq"),
            helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["a"]),
        ]
        if mode == "qlinear":
            n += [
                helper.make_node("Sigmoid", ["a"], ["g"]),
                helper.make_node("QuantizeLinear", ["g", "so", "zs"], ["gq"]),
                helper.make_node("DequantizeLinear", ["gq", "so", "zs"], ["gdq"]),
                helper.make_node("Mul", ["a", "gdq"], ["h"]),
            ]
        else:
            n += [
                helper.make_node("Sigmoid", ["a"], ["g"]),
                helper.make_node("Mul", ["a", "g"], ["h"]),
            ]
        n += [
            helper.make_node("QuantizeLinear", ["h", "sm", "zm"], ["hq"]),
            helper.make_node("DequantizeLinear", ["hq", "sm", "zm"], ["hdq"]),
            *conv("hdq", "yq"),
            helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"]),
        ]
    return one_input_model(n, ["N", c, "H", "W"], inits)


def main() -> None:
    rows, loads = [], [os.getloadavg()[0]]
    for b, c, side in SHAPES:
        ms = [build(c, "float"), build(c, "qlinear"), build(c, "floatsilu")]
        x = {"x": np.random.default_rng(1).standard_normal((b, c, side, side)).astype(np.float32)}
        t = interleaved_median_ms(ms, x, pairs=200, seed=0)
        rows.append({"shape": f"{b} x {c} x {side} x {side}", "ms": [round(v, 4) for v in t]})
        loads.append(os.getloadavg()[0])
        print(rows[-1])
    write_table(
        "silu_forms",
        "A SiLU between two int8 Convs: QLinearSigmoid + QLinearMul or float between DQ and Q",
        "python benchmarks/bench_silu_forms.py",
        loads,
        [
            "input",
            "ms float model",
            "ms QLinearSigmoid + QLinearMul",
            "ms DQ -> SiLU -> Q",
            "float SiLU / QLinear",
        ],
        [[r["shape"], *r["ms"], round(r["ms"][2] / r["ms"][1], 2)] for r in rows],
        how="200 interleaved pairs",
    )


if __name__ == "__main__":
    main()
