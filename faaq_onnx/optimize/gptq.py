"""GPTQ (Frantar et al. 2022): Hessian-compensated rounding of MatMul/Gemm weights.

For y = x W (W: K inputs x N outputs) and layer inputs X, the output error of rounding
W is governed by H = 2 XᵀX / n. GPTQ rounds one input row k at a time and spreads its
error over the rows not yet rounded through the inverse Hessian, so later rows absorb
what earlier ones lost. Scales follow faaq's grid: per output channel (fixed up front)
or per block of `block_size` input rows, chosen from the rows as updated when the
block is reached (GPTQ's groups). The result is a QuantizedWeight on that grid,
emitted like any other (MatMulNBits or int8 kernels).
"""

from __future__ import annotations

import numpy as np

from faaq_onnx.quant.affine import affine_params, quantize_int
from faaq_onnx.quant.range_setters import weight_range
from faaq_onnx.quant.weights import QuantizedWeight, WeightGrid, compact

DAMP = 0.01  # of the mean Hessian diagonal, as the paper
LAZY = 128  # rows updated together (the paper's lazy batch)


def hessian(x: np.ndarray) -> np.ndarray:
    """2 XᵀX / n over every row of the layer input (batch and sequence dims flattened)."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return 2.0 * (x.T @ x) / max(len(x), 1)


def gptq(w: np.ndarray, h: np.ndarray, grid: WeightGrid, symmetric: bool, method: str = "minmax") -> QuantizedWeight:
    """Round w (K x N, input rows first) on grid's format, blocked along K or per output column."""
    w = np.asarray(w, np.float64).copy()
    k_dim, n = w.shape
    fmt = grid.fmt
    h = h.copy()
    dead = np.diag(h) == 0  # inputs that are always 0: any value works, keep them at 0
    h[dead, dead] = 1.0
    w[dead, :] = 0.0
    h += DAMP * np.mean(np.diag(h)) * np.eye(k_dim)
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H^-1
    block = grid.block_size if grid.block_size else None
    if block is None:
        scale = np.broadcast_to(grid.scale, (n,)).astype(np.float64)
        zp = np.broadcast_to(grid.zero_point, (n,)).astype(np.float64)
        scales = zps = None
    else:
        n_blocks = -(-k_dim // block)
        scales = np.zeros((n_blocks, n), np.float32)
        zps = np.zeros((n_blocks, n), np.int64)
    q = np.zeros((k_dim, n), np.int64)
    for start in range(0, k_dim, LAZY):
        end = min(start + LAZY, k_dim)
        err = np.zeros((end - start, n))
        for i in range(start, end):
            if block is not None and i % block == 0:  # a new group: its scale from the rows as they are now
                rows = w[i:i + block].T.astype(np.float32)  # one row per output column
                lo, hi = weight_range(rows, fmt, symmetric, method)
                s_b, z_b = affine_params(lo, hi, fmt, symmetric)
                scales[i // block], zps[i // block] = s_b, z_b
                scale, zp = s_b.astype(np.float64), z_b.astype(np.float64)
            qi = np.clip(np.rint(w[i] / scale) + zp, fmt.qmin, fmt.qmax)
            q[i] = qi
            deq = (qi - zp) * scale
            e = (w[i] - deq) / hinv[i, i]
            err[i - start] = e
            w[i + 1:end] -= np.outer(hinv[i, i + 1:end], e)
        w[end:] -= hinv[start:end, end:].T @ err
    if block is None:
        return QuantizedWeight(compact(q, fmt), grid.scale, grid.zero_point, grid.axis, None, fmt, method="gptq")
    return QuantizedWeight(compact(q, fmt), scales, zps, 0, block, fmt, method="gptq")


def rtn_error(w: np.ndarray, qw: QuantizedWeight, x: np.ndarray) -> float:
    """Output MSE of a quantized weight on inputs x, for reports and tests."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return float(np.mean((x @ (qw.dequantized().astype(np.float64) - w)) ** 2))


__all__ = ["gptq", "hessian", "quantize_int", "rtn_error"]
