"""A HardSwish between two int8 1x1 Convs, in the forms ORT could run, against the float model.

"x·HardSigmoid(x)": what faaq writes (float HardSigmoid between DQ and Q, QLinearMul); "DQ ->
HardSwish -> Q": the float op between the two int8 Convs; "LUT": the 256-entry table of the
uint8 codes (Cast to int32, Gather), exact for any elementwise function. Random weights, batch
1, timed interleaved (faaq_onnx.runtime.timing, sessions not spinning).

    python benchmarks/bench_hardswish_forms.py
"""

from __future__ import annotations

import os

import numpy as np
from common import one_input_model, write_table
from onnx import TensorProto as T
from onnx import helper

from faaq_onnx.runtime.timing import interleaved_median_ms

SHAPES = ((72, 24), (240, 6), (16, 48))
FORMS = ("float model", "x·HardSigmoid(x)", "DQ -> HardSwish -> Q", "LUT (Cast, Gather)")


def build(c, side, mode):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, 1, 1)) * 0.1).astype(np.float32)
    s_in, z_in, s_out, z_out = 0.05, 128, 0.03, 20
    codes = np.arange(256, dtype=np.float32)
    xv = (codes - z_in) * s_in
    hs = xv * np.clip(xv + 3, 0, 6) / 6
    lut = np.clip(np.round(hs / s_out) + z_out, 0, 255).astype(np.uint8)
    inits = {
        "w": w,
        "wq": np.clip(np.round(w / 0.002), -127, 127).astype(np.int8),
        "ws": np.array(0.002, np.float32),
        "wz": np.array(0, np.int8),
        "s": np.array(s_in, np.float32),
        "z": np.array(z_in, np.uint8),
        "so": np.array(s_out, np.float32),
        "zo": np.array(z_out, np.uint8),
        "lut": lut,
        "three": np.array(3, np.float32),
        "sixth": np.array(1 / 6, np.float32),
        "zero": np.array(0, np.float32),
        "six": np.array(6, np.float32),
    }

    def conv(x, y, sq, zq):
        return [
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], [y + "_w"]),
            helper.make_node("Conv", [x, y + "_w"], [y + "_f"]),
            helper.make_node("QuantizeLinear", [y + "_f", sq, zq], [y]),
        ]

    n = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
        *conv("xdq", "aq", "s", "z"),
    ]
    if mode == "lut":
        n += [
            helper.make_node("Cast", ["aq"], ["ai"], to=T.INT32),
            helper.make_node("Gather", ["lut", "ai"], ["hq"]),
        ]
    elif mode == "hsig":
        n += [
            helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["a"]),
            helper.make_node("HardSigmoid", ["a"], ["g"], alpha=1 / 6, beta=0.5),
            helper.make_node("QuantizeLinear", ["g", "so", "z"], ["gq"]),
            helper.make_node("DequantizeLinear", ["gq", "so", "z"], ["gdq"]),
            helper.make_node("Mul", ["a", "gdq"], ["h"]),
            helper.make_node("QuantizeLinear", ["h", "so", "zo"], ["hq"]),
        ]
    elif mode == "hswish_float":
        n += [
            helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["a"]),
            helper.make_node("HardSwish", ["a"], ["h"]),
            helper.make_node("QuantizeLinear", ["h", "so", "zo"], ["hq"]),
        ]
    n += [
        helper.make_node("DequantizeLinear", ["hq", "so", "zo"], ["hdq"]),
        *conv("hdq", "yq", "s", "z"),
        helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"]),
    ]
    return one_input_model(n, [1, c, side, side], inits)


def float_model(c, side):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, 1, 1)) * 0.1).astype(np.float32)
    n = [
        helper.make_node("Conv", ["x", "w"], ["a"]),
        helper.make_node("HardSwish", ["a"], ["h"]),
        helper.make_node("Conv", ["h", "w"], ["y"]),
    ]
    return one_input_model(n, [1, c, side, side], {"w": w})


def main() -> None:
    rows, loads = [], [os.getloadavg()[0]]
    for c, side in SHAPES:
        ms = [float_model(c, side), *(build(c, side, m) for m in ("hsig", "hswish_float", "lut"))]
        x = {"x": np.random.default_rng(1).standard_normal((1, c, side, side)).astype(np.float32)}
        t = interleaved_median_ms(ms, x, pairs=300, seed=0)
        rows.append({"map": f"{c} x {side} x {side}", "ms": [round(v, 4) for v in t]})
        loads.append(os.getloadavg()[0])
        print(rows[-1])
    write_table(
        "hardswish_forms",
        "A HardSwish between two int8 1x1 Convs: the forms ORT could run",
        "python benchmarks/bench_hardswish_forms.py",
        loads,
        ["map", *(f"ms {f}" for f in FORMS)],
        [[r["map"], *r["ms"]] for r in rows],
        how="300 interleaved pairs, batch 1",
    )


if __name__ == "__main__":
    main()
