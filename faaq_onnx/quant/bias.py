"""int32 biases: the one form ORT's QLinearConv/QGemm fusion takes, and what it does to a bias.

A quantized Conv/Gemm's bias is stored as int32 at scale s_x · s_w (its input's activation
scale times its weight's per-channel scale): the integer kernels add it to the accumulator,
whose every value is a multiple of that scale. At 8-bit weights the step is negligible; at W4
with a wide input range it is not (PP-OCRv4's recognizer: steps up to 0.13 on biases near 3),
and a bias rounded to it is a per-channel offset in every sample. The emitter stores biases
this way and every measurement (the probe, the layer-by-layer runs) computes with the same
rounded values, so what is measured is what ships.
"""

from __future__ import annotations

import numpy as np

from faaq_onnx.quant.weights import QuantizedWeight

INT32_BIAS_OPS = frozenset({"Conv", "Gemm"})


def takes_int32_bias(op_type: str, qw: QuantizedWeight, channel_axis: int | None) -> bool:
    """Whether a layer with these quantized weights gets an int32 bias (ORT's fusion needs
    symmetric per-tensor or per-output-channel weights of at most 8 bits)."""
    return (
        op_type in INT32_BIAS_OPS
        and not qw.block_size
        and qw.fmt.bits <= 8
        and not qw.zero_point.any()
        and qw.axis in (None, channel_axis)
    )


def int32_bias_scale(s_x: float, w_scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """s_x · s_w per channel, in float32 as the model stores it."""
    s_w = np.broadcast_to(np.asarray(w_scale, np.float64).reshape(-1), shape)
    return (float(s_x) * s_w).astype(np.float32)


def int32_bias(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The int32 codes of bias `b` at `scale` (int32_bias_scale)."""
    # float64: in float32 the bound 2**31 - 1 rounds to 2**31 and a clipped bias wrapped to -2**31
    # (channels with tiny weights have a tiny scale, so their bias clips; ORT's quantizer widens
    # such weight scales)
    ratio = np.asarray(b, np.float64) / np.maximum(scale.astype(np.float64), 1e-30)
    return np.clip(np.rint(ratio), -(2**31), 2**31 - 1).astype(np.int32)


def bias_on_grid(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The bias as the emitted model computes with it: its int32 codes dequantized in float32,
    as DequantizeLinear does."""
    return (int32_bias(b, scale).astype(np.float32) * scale).astype(np.float32)
