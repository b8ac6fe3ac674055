"""A GroupNorm + SiLU block before a 3x3 Conv: its affine and SiLU quantized or float.

torch's GroupNorm exports as Reshape -> InstanceNormalization -> Reshape -> Mul γ -> Add β; a
SiLU (x·Sigmoid(x)) follows, then a Conv. ORT has no integer normalization. Two QDQ forms of the
block (random weights, batch 1), timed interleaved (faaq_onnx.runtime.timing, sessions not
spinning): "quantized chain", a QuantizeLinear right after the norm and the affine and SiLU on
QLinearMul/QLinearAdd/QLinearSigmoid (faaq before after_float_norm, and ORT's quantizer); "float
chain", the affine and SiLU float (ORT fuses the SiLU into QuickGelu) and one QuantizeLinear in
front of the Conv (faaq since). The Conv is QLinearConv in both.

    python benchmarks/bench_norm_chain.py
"""

from __future__ import annotations

import os

import numpy as np
from common import int8_weight_inits, one_input_model, write_table
from onnx import helper

from faaq_onnx.runtime.timing import interleaved_median_ms


def build(c, side, quant_chain):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32)
    inits = {
        **int8_weight_inits(w),
        "s": np.array(0.03, np.float32),
        "z": np.array(128, np.uint8),
        "shape1": np.array([1, 8, -1], np.int64),
        "shape2": np.array([1, c, side, side], np.int64),
        "ig": np.ones(8, np.float32),
        "ib": np.zeros(8, np.float32),
        "gamma": (1 + 0.1 * rng.standard_normal((c, 1, 1))).astype(np.float32),
        "beta": (0.1 * rng.standard_normal((c, 1, 1))).astype(np.float32),
        "gs": np.array(0.01, np.float32),
        "gz": np.array(128, np.uint8),
    }
    inits["gq"] = np.clip(np.round(inits["gamma"] / 0.01) + 128, 0, 255).astype(np.uint8)
    inits["bq"] = np.clip(np.round(inits["beta"] / 0.01) + 128, 0, 255).astype(np.uint8)

    def qdq(t):
        return [
            helper.make_node("QuantizeLinear", [t, "s", "z"], [t + "_q"]),
            helper.make_node("DequantizeLinear", [t + "_q", "s", "z"], [t + "_dq"]),
        ]

    n = [
        helper.make_node("Reshape", ["x", "shape1"], ["r1"]),
        helper.make_node("InstanceNormalization", ["r1", "ig", "ib"], ["in"]),
        helper.make_node("Reshape", ["in", "shape2"], ["r2"]),
    ]
    if quant_chain:
        n += [
            *qdq("r2"),
            helper.make_node("DequantizeLinear", ["gq", "gs", "gz"], ["g_dq"]),
            helper.make_node("Mul", ["r2_dq", "g_dq"], ["m"]),
            *qdq("m"),
            helper.make_node("DequantizeLinear", ["bq", "gs", "gz"], ["b_dq"]),
            helper.make_node("Add", ["m_dq", "b_dq"], ["a"]),
            *qdq("a"),
            helper.make_node("Sigmoid", ["a_dq"], ["sg"]),
            *qdq("sg"),
            helper.make_node("Mul", ["a_dq", "sg_dq"], ["sw"]),
            *qdq("sw"),
        ]
    else:
        n += [
            helper.make_node("Mul", ["r2", "gamma"], ["m"]),
            helper.make_node("Add", ["m", "beta"], ["a"]),
            helper.make_node("Sigmoid", ["a"], ["sg"]),
            helper.make_node("Mul", ["a", "sg"], ["sw"]),
            *qdq("sw"),
        ]
    n += [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w_dq"]),
        helper.make_node("Conv", ["sw_dq", "w_dq"], ["cv"], pads=[1] * 4),
        *qdq("cv"),
        helper.make_node("Identity", ["cv_dq"], ["y"]),
    ]
    return one_input_model(n, [1, c, side, side], inits)


def main() -> None:
    rows, loads = [], [os.getloadavg()[0]]
    for c, side in ((32, 64), (64, 32), (64, 16)):
        ms = [build(c, side, True), build(c, side, False)]
        x = {"x": np.random.default_rng(1).standard_normal((1, c, side, side)).astype(np.float32)}
        t = interleaved_median_ms(ms, x, pairs=300, seed=0)
        rows.append(
            {
                "map": f"{c} x {side} x {side}",
                "quantized_ms": round(t[0], 4),
                "float_ms": round(t[1], 4),
                "ratio": round(t[1] / t[0], 2),
            }
        )
        loads.append(os.getloadavg()[0])
        print(rows[-1])
    write_table(
        "norm_chain",
        "A GroupNorm + SiLU block: affine and SiLU quantized or float",
        "python benchmarks/bench_norm_chain.py",
        loads,
        ["map", "ms quantized chain", "ms float chain", "float / quantized"],
        [[r["map"], r["quantized_ms"], r["float_ms"], r["ratio"]] for r in rows],
        how="300 interleaved pairs, batch 1",
    )


if __name__ == "__main__":
    main()
