"""Quantize one weight tensor per tensor, per channel or per block.

The same function feeds the sensitivity sweep (fake-quantized floats) and the emitter
(integers, scales, zero points), so what was measured is what is shipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faaq_onnx.qmath import affine_params, dequantize, quantize
from faaq_onnx.qtypes import IntFormat
from faaq_onnx.range_setters import weight_range


@dataclass
class QuantizedWeight:
    q: np.ndarray  # integers, same shape as the weight
    scale: np.ndarray  # ONNX layout: scalar, 1-D (per axis) or blocked
    zero_point: np.ndarray  # same shape as scale
    axis: int | None
    block_size: int | None
    fmt: IntFormat

    def dequantized(self) -> np.ndarray:
        s, z = self._broadcast(self.scale), self._broadcast(self.zero_point)
        return dequantize(self.q, s, z)

    def _broadcast(self, p: np.ndarray) -> np.ndarray:
        if self.axis is None:
            return p
        if self.block_size:
            return np.repeat(p, self.block_size, axis=self.axis)[tuple(slice(0, d) for d in self.q.shape)]
        shape = [1] * self.q.ndim
        shape[self.axis] = -1
        return p.reshape(shape)

    @property
    def stored_bytes(self) -> int:
        return self.fmt.stored_bytes(self.q.size) + self.scale.size * 4 + (
            0 if not self.zero_point.any() else self.fmt.stored_bytes(self.zero_point.size)
        )


def quantize_weight(
    w: np.ndarray,
    bits: int,
    granularity: str,
    channel_axis: int | None,
    block_axis: int | None,
    block_size: int = 32,
    symmetric: bool = True,
    method: str = "minmax",
) -> QuantizedWeight:
    fmt = IntFormat(bits, signed=symmetric)
    w = np.asarray(w, np.float32)
    if granularity == "block" and block_axis is not None:
        return _blocked(w, fmt, block_axis, block_size, symmetric, method)
    if granularity in ("per-channel", "block") and channel_axis is not None:
        rows = np.moveaxis(w, channel_axis, 0).reshape(w.shape[channel_axis], -1)
        lo, hi = weight_range(rows, fmt, symmetric, method)
        scale, zp = affine_params(lo, hi, fmt, symmetric)
        shape = [1] * w.ndim
        shape[channel_axis] = -1
        q = quantize(w, scale.reshape(shape), zp.reshape(shape), fmt)
        return QuantizedWeight(q, scale, zp, channel_axis, None, fmt)
    lo, hi = weight_range(w.reshape(1, -1), fmt, symmetric, method)
    scale, zp = affine_params(lo, hi, fmt, symmetric)
    q = quantize(w, scale[0], zp[0], fmt)
    return QuantizedWeight(q, scale.reshape(()), zp.reshape(()), None, None, fmt)


def _blocked(w, fmt, axis, block_size, symmetric, method) -> QuantizedWeight:
    moved = np.moveaxis(w, axis, -1)
    d = moved.shape[-1]
    nb = -(-d // block_size)
    pad = nb * block_size - d
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)])
    rows = padded.reshape(-1, block_size)
    lo, hi = weight_range(rows, fmt, symmetric, method)
    scale, zp = affine_params(lo, hi, fmt, symmetric)
    pshape = moved.shape[:-1] + (nb,)
    scale = np.moveaxis(scale.reshape(pshape), -1, axis)
    zp = np.moveaxis(zp.reshape(pshape), -1, axis)
    full_s = np.repeat(scale, block_size, axis=axis)[tuple(slice(0, n) for n in w.shape)]
    full_z = np.repeat(zp, block_size, axis=axis)[tuple(slice(0, n) for n in w.shape)]
    q = quantize(w, full_s, full_z, fmt)
    return QuantizedWeight(q, scale.astype(np.float32), zp, axis, block_size, fmt)
