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

from faaq_onnx.quant.weights import QuantizedWeight, zero_point_free_on_kernels

INT32_BIAS_OPS = frozenset({"Conv", "Gemm"})
# the largest int32 bias code faaq writes: half the range, so that the accumulator the bias
# starts from cannot overflow while the (near-zero) products are added to it
INT32_BIAS_LIMIT = 2**30


def takes_int32_bias(op_type: str, qw: QuantizedWeight, channel_axis: int | None) -> bool:
    """Whether a layer with these quantized weights gets an int32 bias (ORT's fusion needs
    per-tensor or per-output-channel weights of at most 8 bits with zero point 0, as emitted)."""
    return (
        op_type in INT32_BIAS_OPS
        and not qw.block_size
        and qw.fmt.bits <= 8
        and zero_point_free_on_kernels(qw)
        and qw.axis in (None, channel_axis)
    )


def int32_bias_scale(s_x: float, w_scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """s_x · s_w per channel, in float32 as the model stores it."""
    s_w = np.broadcast_to(np.asarray(w_scale, np.float64).reshape(-1), shape)
    return (float(s_x) * s_w).astype(np.float32)


def widened_for_bias(qw: QuantizedWeight, b: np.ndarray, s_x: float) -> QuantizedWeight:
    """`qw`, its scale widened on each channel whose bias would not fit INT32_BIAS_LIMIT codes of
    s_x · s_w, the channel's weights re-rounded on the wider grid (as ORT's quantizer widens
    such weight scales). Such a channel has near-zero weights under a non-zero bias (BatchNorm
    folded with a vanishing gamma: PP-OCRv4 det and rec, EfficientNet-Lite0): clipped to int32,
    its bias came out as ~0 and the channel's constant output was lost; widened, its tiny
    weights round to ~0 instead. Returns `qw` itself where every bias fits."""
    s_w = np.broadcast_to(np.asarray(qw.scale, np.float64).reshape(-1), np.shape(b))
    # (a hair wider: the scale is stored in float32, which may round it down)
    need = np.abs(np.asarray(b, np.float64)) / (float(s_x) * INT32_BIAS_LIMIT) * (1 + 2**-16)
    if not np.any(need > s_w):
        return qw
    wide = np.maximum(s_w, need)
    scale = (wide.max() if qw.axis is None else wide).reshape(np.shape(qw.scale))
    values = qw.dequantized()
    full = qw.grid.expand(scale.astype(np.float32))
    q = np.rint(values.astype(np.float64) / np.asarray(full, np.float64)) + qw.grid.full_zero_point
    return qw.with_codes(q, qw.method, scale=scale.astype(np.float32))


def int32_bias(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The int32 codes of bias `b` at `scale` (int32_bias_scale)."""
    # float64: in float32 the bound 2**31 - 1 rounds to 2**31 and a clipped bias wrapped to
    # -2**31 (a bias clips only where its weights were not widened_for_bias)
    ratio = np.asarray(b, np.float64) / np.maximum(scale.astype(np.float64), 1e-30)
    return np.clip(np.rint(ratio), -(2**31), 2**31 - 1).astype(np.int32)


def bias_on_grid(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The bias as the emitted model computes with it: its int32 codes dequantized in float32,
    as DequantizeLinear does."""
    return (int32_bias(b, scale).astype(np.float32) * scale).astype(np.float32)
