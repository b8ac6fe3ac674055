"""Scale/zero-point arithmetic shared by calibration, sensitivity and emission.

Everything here is plain numpy so that the sensitivity sweep, the emitted QDQ model
and the tests agree bit for bit on what "quantize with these parameters" means
(round half to even, as ONNX QuantizeLinear does).
"""

from __future__ import annotations

import numpy as np

from faaq_onnx.qtypes import IntFormat

_EPS = np.float32(1e-12)


def affine_params(lo, hi, fmt: IntFormat, symmetric: bool):
    """Scale and zero point that map [lo, hi] (which must contain 0) onto fmt's range."""
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    if symmetric:
        amax = np.maximum(np.abs(lo), np.abs(hi))
        if fmt.signed:
            scale = amax / fmt.qmax
            zp = np.zeros_like(scale)
        else:  # unsigned symmetric: centre the zero point
            scale = 2 * amax / (fmt.qmax - fmt.qmin)
            zp = np.full_like(scale, (fmt.qmax + fmt.qmin + 1) // 2)
    else:
        scale = (hi - lo) / (fmt.qmax - fmt.qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zp = np.clip(np.round(fmt.qmin - lo / safe), fmt.qmin, fmt.qmax)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # all-zero tensors
    scale = np.maximum(scale, _EPS)
    return scale, zp.astype(np.int64)


def quantize(x, scale, zp, fmt: IntFormat):
    """Integers as ONNX QuantizeLinear computes them, clamped to fmt's own range."""
    q = np.rint(np.asarray(x, np.float32) / scale) + zp
    return np.clip(q, fmt.qmin, fmt.qmax).astype(np.int64)


def dequantize(q, scale, zp):
    return ((np.asarray(q, np.float32) - zp) * scale).astype(np.float32)


def fake_quantize(x, scale, zp, fmt: IntFormat):
    return dequantize(quantize(x, scale, zp, fmt), scale, zp)


def broadcast_shape(weight_shape, axis: int | None, block_size: int | None):
    """Shape a per-tensor / per-axis / blocked scale takes to broadcast over the weight."""
    rank = len(weight_shape)
    if axis is None:
        return (1,) * rank
    shape = [1] * rank
    if block_size:
        shape = list(weight_shape)
        shape[axis] = -(-weight_shape[axis] // block_size)
        return tuple(shape)
    shape[axis] = weight_shape[axis]
    return tuple(shape)


def expand_blocks(p, weight_shape, axis: int, block_size: int):
    """Repeat blocked parameters along axis so they broadcast element-wise."""
    return np.repeat(p, block_size, axis=axis)[tuple(slice(0, d) for d in weight_shape)]


def sqnr_db(reference, approx) -> float:
    """Signal to quantization noise ratio, mean over samples (seed 003 eq. 3)."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    err = ref - np.asarray(approx, np.float64).reshape(len(reference), -1)
    sig = np.mean(ref**2, axis=1)
    noise = np.mean(err**2, axis=1)
    ratio = np.mean(sig / np.maximum(noise, 1e-30))
    return float(10 * np.log10(max(ratio, 1e-30)))
