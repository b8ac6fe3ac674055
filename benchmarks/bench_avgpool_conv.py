"""A quantized AveragePool: ORT's QLinearAveragePool against the depthwise Conv faaq writes.

For each pool and map size, three models of Conv 1x1 -> AveragePool -> Conv 1x1 (random
weights, batch 1), timed interleaved in one process (faaq_onnx.runtime.timing, sessions not
spinning): the float model; the QDQ model with DQ -> AveragePool -> Q, which ORT fuses into
QLinearAveragePool; the same QDQ model with the pool written as a depthwise Conv of weights
1/(kh·kw) (passes/emit_avgpool.py), which ORT fuses into QLinearConv. Also the output SQNR of
the Conv form against the QLinearAveragePool form.

    python benchmarks/bench_avgpool_conv.py
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from common import one_input_model, write_table
from onnx import helper

from faaq_onnx.runtime.session import make_session
from faaq_onnx.runtime.timing import interleaved_median_ms

CASES = [  # (channels, side, kernel, stride, pads)
    (32, 64, 2, 2, 0),
    (64, 32, 2, 2, 0),
    (256, 14, 2, 2, 0),
    (64, 32, 3, 1, 1),
]


def _models(c: int, side: int, k: int, s: int, p: int) -> dict[str, onnx.ModelProto]:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (c, c, 1, 1)).astype(np.float32)
    ws = np.float32(np.abs(w).max() / 127)
    inits = {
        "w": w,
        "wq": np.clip(np.round(w / ws), -127, 127).astype(np.int8),
        "ws": np.array(ws, np.float32),
        "wz": np.array(0, np.int8),
        "s": np.array(0.02, np.float32),
        "z": np.array(128, np.uint8),
        "pw": np.ones((c, 1, k, k), np.int8),
        "ps": np.array(1.0 / (k * k), np.float32),
    }
    pool = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
    counted = {"count_include_pad": 1} if p else {}

    def qdq(t):
        return [
            helper.make_node("QuantizeLinear", [t, "s", "z"], [f"{t}_q"]),
            helper.make_node("DequantizeLinear", [f"{t}_q", "s", "z"], [f"{t}_dq"]),
        ]

    def conv(x, y):
        return [
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], [f"{y}_w"]),
            helper.make_node("Conv", [x, f"{y}_w"], [y]),
        ]

    def quantized(pool_nodes):
        return [
            *qdq("x"),
            *conv("x_dq", "a"),
            *qdq("a"),
            *pool_nodes,
            *qdq("b"),
            *conv("b_dq", "y"),
        ]

    as_pool = [helper.make_node("AveragePool", ["a_dq"], ["b"], **pool, **counted)]
    as_conv = [
        helper.make_node("DequantizeLinear", ["pw", "ps", "wz"], ["pw_dq"]),
        helper.make_node("Conv", ["a_dq", "pw_dq"], ["b"], group=c, **pool),
    ]
    graphs = {
        "float": [
            helper.make_node("Conv", ["x", "w"], ["a"]),
            helper.make_node("AveragePool", ["a"], ["b"], **pool, **counted),
            helper.make_node("Conv", ["b", "w"], ["y"]),
        ],
        "QLinearAveragePool": quantized(as_pool),
        "depthwise QLinearConv": quantized(as_conv),
    }
    return {
        name: one_input_model(nodes, [1, c, side, side], inits) for name, nodes in graphs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--out", default="avgpool_conv")
    args = ap.parse_args()
    rows, loads = [], [os.getloadavg()[0]]
    for c, side, k, s, p in CASES:
        models = _models(c, side, k, s, p)
        x = {"x": np.random.default_rng(1).random((1, c, side, side)).astype(np.float32)}
        ms = interleaved_median_ms(list(models.values()), x, pairs=args.pairs, seed=0)
        ref, got = (make_session(models[n]).run(None, x)[0] for n in list(models)[1:])
        err = float(np.sum((got - ref) ** 2))
        sqnr = float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref**2)) / err)
        rows.append(
            {
                "pool": f"{k}x{k}/{s}" + (f", pads {p} counted" if p else ""),
                "map": f"{c} x {side} x {side}",
                "ms": dict(zip(models, [round(v, 4) for v in ms])),
                "sqnr_conv_vs_pool_db": round(sqnr, 1),
            }
        )
        loads.append(os.getloadavg()[0])
        print(rows[-1])
    write_table(
        args.out,
        "A quantized AveragePool: QLinearAveragePool against a depthwise QLinearConv",
        "python benchmarks/bench_avgpool_conv.py",
        loads,
        [
            "pool",
            "map",
            "ms float",
            "ms QLinearAveragePool",
            "ms as depthwise QLinearConv",
            "Conv form vs QLinearAveragePool form, SQNR dB",
        ],
        [[r["pool"], r["map"], *r["ms"].values(), r["sqnr_conv_vs_pool_db"]] for r in rows],
        how=f"Conv 1x1 -> pool -> Conv 1x1, batch 1, {args.pairs} interleaved pairs, sessions not spinning",
    )


if __name__ == "__main__":
    main()
