"""Quantize one weight tensor per tensor, per channel or per block.

Two steps so rounding optimizers can share the first: `weight_grid` chooses the
grid (scale, zero point, format, layout) from the range setter; `QuantizedWeight`
holds the integers on that grid, rounded to nearest by `quantize_weight` or learned
by AdaRound/GPTQ. The same object feeds the sensitivity sweep (fake-quantized floats)
and the emitter (integers, scales, zero points), so what was measured is what ships.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from faaq_onnx.quant.affine import (
    affine_params,
    dequantize,
    expand_blocks,
    quantize_int,
)
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.range_setters import weight_range


@dataclass(frozen=True)
class WeightGrid:
    """Where a weight's integers live: one scale/zero point per tensor, channel or block."""

    scale: np.ndarray  # ONNX layout: scalar, 1-D (per axis) or blocked
    zero_point: np.ndarray  # same shape as scale
    axis: int | None
    block_size: int | None
    fmt: IntFormat
    shape: tuple[int, ...]

    def expand(self, p: np.ndarray) -> np.ndarray:
        """A parameter broadcast element-wise over the weight."""
        if self.axis is None:
            return p
        if self.block_size:
            return expand_blocks(p, self.shape, self.axis, self.block_size)
        shape = [1] * len(self.shape)
        shape[self.axis] = -1
        return p.reshape(shape)

    def scale_index(self) -> np.ndarray:
        """Which scale each weight element uses (an index into scale.ravel()), in the weight's
        shape: where GPTQ, its range search and a learned scale look up an element's scale."""
        index = np.arange(np.size(self.scale)).reshape(np.shape(self.scale))
        return np.broadcast_to(self.expand(index), self.shape)

    @property
    def full_scale(self) -> np.ndarray:
        return self.expand(self.scale).astype(np.float32)

    @property
    def full_zero_point(self) -> np.ndarray:
        return self.expand(self.zero_point).astype(np.float32)

    def round_to_nearest(self, w: np.ndarray) -> QuantizedWeight:
        q = quantize_int(w, self.full_scale, self.full_zero_point, self.fmt)
        return QuantizedWeight(
            compact(q, self.fmt), self.scale, self.zero_point, self.axis, self.block_size, self.fmt
        )


# widest asymmetric weight emitted as offset codes with zero point 0 (zero_point_free_on_kernels),
# and so the widest one the default grid makes asymmetric (symmetric_at)
OFFSET_MAX_BITS = 6


def symmetric_at(bits: int, symmetric: bool | None) -> bool:
    """Whether `bits`-wide weights get a symmetric grid. `symmetric` None (the default): symmetric
    from 7 bits, asymmetric below, where the zero point buys accuracy (EfficientNet-Lite0 W4A8:
    KL to float 0.050 against 0.062) and, emitted as offset codes with zero point 0
    (zero_point_free_on_kernels), costs no speed on integer kernels."""
    return bits > OFFSET_MAX_BITS if symmetric is None else symmetric


def zero_point_free_on_kernels(qw: QuantizedWeight) -> bool:
    """Whether the emitted weight has zero point 0 where it feeds an integer kernel: symmetric
    weights, and asymmetric ones of at most 6 bits, whose codes q - z stay within ±63 (emit_weights'
    offset form; ±63 is also what --reduce-range keeps int8 weights to, so x86 kernels without
    VNNI do not saturate). ORT's kernels take a slow path on weight zero points; int32 biases
    need none."""
    if not qw.zero_point.any():
        return True
    return not qw.block_size and qw.fmt.bits <= OFFSET_MAX_BITS and not qw.fmt.signed


def compact(q: np.ndarray, fmt: IntFormat) -> np.ndarray:
    """Codes in the smallest numpy integer that holds them (int64 would be 8 bytes a weight)."""
    return q.astype(
        np.int8
        if fmt.bits <= 7 or (fmt.signed and fmt.bits <= 8)
        else np.uint8
        if fmt.bits <= 8
        else np.int32
    )


@dataclass
class QuantizedWeight:
    q: np.ndarray  # integers, same shape as the weight
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    block_size: int | None
    fmt: IntFormat
    method: str = "nearest"  # how the integers were chosen: nearest, adaround, gptq, ...

    @property
    def grid(self) -> WeightGrid:
        return WeightGrid(
            self.scale, self.zero_point, self.axis, self.block_size, self.fmt, tuple(self.q.shape)
        )

    def dequantized(self) -> np.ndarray:
        g = self.grid
        return dequantize(self.q, g.full_scale, g.full_zero_point)

    def with_codes(
        self, q: np.ndarray, method: str, scale: np.ndarray | None = None
    ) -> QuantizedWeight:
        """Learned integers (and, where the optimizer learned it too, scale) on this grid."""
        q = np.clip(np.asarray(q, np.int64), self.fmt.qmin, self.fmt.qmax)
        if scale is None:
            scale = self.scale
        elif np.shape(scale) != self.scale.shape:
            raise ValueError(
                f"scale of shape {np.shape(scale)} for a grid of scales {self.scale.shape}"
            )
        return replace(
            self, q=compact(q, self.fmt), scale=np.asarray(scale, np.float32), method=method
        )

    @property
    def stored_bytes(self) -> int:
        return (
            self.fmt.stored_bytes(self.q.size)
            + self.scale.size * 4
            + (0 if not self.zero_point.any() else self.fmt.stored_bytes(self.zero_point.size))
        )


def weight_grid(
    w: np.ndarray,
    bits: int,
    granularity: str,
    channel_axis: int | None,
    block_axis: int | None,
    block_size: int = 32,
    symmetric: bool = True,
    method: str = "minmax",
) -> WeightGrid:
    fmt = IntFormat(bits, signed=symmetric)
    w = np.asarray(w, np.float32)
    if granularity == "block" and block_axis is not None:
        return _blocked_grid(w, fmt, block_axis, block_size, symmetric, method)
    if granularity in ("per-channel", "block") and channel_axis is not None:
        rows = np.moveaxis(w, channel_axis, 0).reshape(w.shape[channel_axis], -1)
        lo, hi = weight_range(rows, fmt, symmetric, method)
        scale, zp = affine_params(lo, hi, fmt, symmetric)
        return WeightGrid(scale, zp, channel_axis, None, fmt, w.shape)
    lo, hi = weight_range(w.reshape(1, -1), fmt, symmetric, method)
    scale, zp = affine_params(lo, hi, fmt, symmetric)
    return WeightGrid(scale.reshape(()), zp.reshape(()), None, None, fmt, w.shape)


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
    """Round-to-nearest on the range setter's grid."""
    grid = weight_grid(
        w, bits, granularity, channel_axis, block_axis, block_size, symmetric, method
    )
    return grid.round_to_nearest(np.asarray(w, np.float32))


def _blocked_grid(w, fmt, axis, block_size, symmetric, method) -> WeightGrid:
    moved = np.moveaxis(w, axis, -1)
    d = moved.shape[-1]
    nb = -(-d // block_size)
    pad = nb * block_size - d
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)])
    rows = padded.reshape(-1, block_size)
    lo, hi = weight_range(rows, fmt, symmetric, method)
    scale, zp = affine_params(lo, hi, fmt, symmetric)
    pshape = (*moved.shape[:-1], nb)
    scale = np.moveaxis(scale.reshape(pshape), -1, axis).astype(np.float32)
    zp = np.moveaxis(zp.reshape(pshape), -1, axis)
    return WeightGrid(scale, zp, axis, block_size, fmt, w.shape)
