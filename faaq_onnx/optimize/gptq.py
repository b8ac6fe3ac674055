"""GPTQ (Frantar et al. 2022): Hessian-compensated rounding of every weighted op.

For y = x W (W: K inputs x N outputs) and layer inputs X, the output error of rounding
W is governed by H = 2 XᵀX / n. GPTQ rounds one input row k at a time and spreads its
error over the rows not yet rounded through the inverse Hessian, so later rows absorb
what earlier ones lost. Rows go in their natural order; the paper's act-order (decreasing
diag(H)) is one switch away (ACT_ORDER, or act_order=) but is off: measured, it lowers each
layer's error on the calibration inputs and not the network's accuracy. H is damped by
DAMP of its mean diagonal, as the paper does.

Conv, ConvTranspose, Gemm and MatMul weights are all seen as G independent products
(optimize.hessian.LinearForm: one per conv group, K = C_in/group · kernel) and rounded
together, batched over groups. Scales follow faaq's grid (the weight cache's, so 8-bit
weights narrowed to 7 bits stay narrowed): per tensor or per output channel they are
the round-to-nearest grid's, fixed up front; per block they are chosen, like GPTQ's
groups, from the block's weights as updated when its first row is reached. The result
is a QuantizedWeight on that grid, emitted like any other (MatMulNBits or int8 kernels).
"""

from __future__ import annotations

import numpy as np

from faaq_onnx.quant.affine import affine_params, quantize_int
from faaq_onnx.quant.range_setters import weight_range
from faaq_onnx.quant.weights import QuantizedWeight, WeightGrid, compact

DAMP = 0.01  # of the mean Hessian diagonal, as the paper
TARGET_DAMP = 0.1  # asymmetric_target's pull towards the float weights, of the mean diagonal
TARGET_ROWS_PER_INPUT = 4  # fewer patches than this per input (K): no asymmetric target
DAMP_STEPS = 6  # tenfold more damping each time the Hessian does not factor: up to 1000x
LAZY = 128  # rows updated together (the paper's lazy batch)
IN_PLACE_K = 256  # from this many inputs per group, GPTQ's factor is made in one buffer
# Rows by decreasing diag(H)? benchmarks/out/gptq_conv.md: act-order's layer errors are ~5 % lower
# (ResNet-20/56 W4A8/W3A8, EfficientNet-Lite0 W4A8), top-1 is not higher (ResNets within
# ±0.6 pt either way; EfficientNet-Lite0 72.0 % vs 74.1 % natural). Blocked grids: not measured.
ACT_ORDER = False


def hessian(x: np.ndarray) -> np.ndarray:
    """2 XᵀX / n over every row of a MatMul input (batch and sequence dims flattened); products
    in float32 as HessianSum's."""
    from faaq_onnx.optimize.hessian import gram

    x = np.ascontiguousarray(np.asarray(x, np.float32).reshape(-1, x.shape[-1]))
    return 2.0 * gram(x[None])[0] / max(len(x), 1)


def asymmetric_target(form, w: np.ndarray, hsum, damp: float = TARGET_DAMP) -> np.ndarray | None:
    """The weights (w's layout) whose output on the quantized model's inputs X̃ is nearest the float
    model's output X W, or None where `hsum` has no cross product or too few patches.

    Plain GPTQ rounds W to reproduce X̃ W, the float weights on what the quantized model feeds the
    layer: the error upstream layers left in X̃ passes through untouched, layer after layer. For
    any W̃, ||X̃ W̃ - X W||² = ||X̃ (W̃ - W*)||² + const with W* the least-squares fit of X W from X̃,
    so GPTQ run on W* (same Hessian) minimizes the error against the float model's output instead
    (GPTAQ's asymmetric calibration, Li et al. 2025). W* is fit with a ridge towards W, `damp` of
    the mean diagonal: W* = W + (X̃ᵀX̃ + λI)⁻¹ X̃ᵀ(X - X̃) W, which is W itself when X̃ = X. Layers
    with fewer than TARGET_ROWS_PER_INPUT patches per input are left alone: EfficientNet-Lite0's
    classifier (256 rows for K = 1,280) fit that way lost 0.3 pt of top-1."""
    if not hsum.compares_float or hsum.rows < TARGET_ROWS_PER_INPUT * form.gkn[1]:
        return None
    wg = form.to_gkn(np.asarray(w, np.float64))
    gap = hsum.float_gap(wg)  # X̃ᵀ(X - X̃) W
    assert gap is not None  # compares_float
    h = hsum.sum
    k = h.shape[1]
    mean = np.einsum("gii->g", h)[:, None, None] / k
    # a group whose inputs are all zero has nothing to fit: the tiny floor keeps it solvable
    ridge = (damp * mean + 1e-9 * (float(mean.max()) + 1e-30)) * np.eye(k)[None]
    shift = np.linalg.solve(h + ridge, gap)
    return form.from_gkn(wg + shift)


def gptq(
    w: np.ndarray,
    h: np.ndarray,
    grid: WeightGrid,
    symmetric: bool,
    method: str = "minmax",
    act_order: bool | None = None,
) -> QuantizedWeight:
    """Round a 2-D w (K x N, input rows first; grid in that layout) against the Hessian h (K x K)."""
    from faaq_onnx.optimize.hessian import LinearForm

    w = np.asarray(w)
    form = LinearForm("MatMul", tuple(w.shape))
    return gptq_weight(form, w, np.asarray(h)[None], grid, symmetric, method, act_order)


def gptq_weight(
    form,
    w: np.ndarray,
    h: np.ndarray,
    grid: WeightGrid,
    symmetric: bool,
    method: str = "minmax",
    act_order: bool | None = None,
    starts: dict | None = None,
) -> QuantizedWeight:
    """Round a weight of any LinearForm (w in its own layout, h: (G, K, K)) on `grid`. With
    `starts`, starts["w"] is set to the error-compensated weights the codes round (w's layout)."""
    w = np.asarray(w, np.float64)
    where = form.to_gkn(grid.scale_index())  # each element's scale, (G, K, N)
    flat_s = np.asarray(grid.scale, np.float64).ravel()
    flat_z = np.asarray(grid.zero_point, np.float64).ravel()
    blocks = _dynamic_blocks(where) if grid.block_size else None
    q, s, z, compensated = gptq_codes(
        form.to_gkn(w),
        h,
        flat_s[where],
        flat_z[where],
        grid.fmt,
        blocks=blocks,
        block_size=grid.block_size,
        symmetric=symmetric,
        method=method,
        act_order=act_order,
    )
    q = compact(form.from_gkn(q), grid.fmt)
    if starts is not None:
        starts["w"] = form.from_gkn(compensated).astype(np.float32)
    if blocks is None:
        return QuantizedWeight(
            q, grid.scale, grid.zero_point, grid.axis, grid.block_size, grid.fmt, method="gptq"
        )
    scale = flat_s.astype(np.float32)
    zp = flat_z.astype(np.asarray(grid.zero_point).dtype)
    scale[where.ravel()] = s.ravel()
    zp[where.ravel()] = z.ravel()
    return QuantizedWeight(
        q,
        scale.reshape(np.shape(grid.scale)),
        zp.reshape(np.shape(grid.zero_point)),
        grid.axis,
        grid.block_size,
        grid.fmt,
        method="gptq",
    )


def _dynamic_blocks(where: np.ndarray) -> np.ndarray | None:
    """Block id of each (group, row) where blocks may take their scales during GPTQ: each block
    lies in one group and every output column splits the rows the same way. Else None (the
    round-to-nearest block scales are kept)."""
    ids = where[:, :, 0]
    offset = where - where[:, :, :1]
    if not np.all(offset == offset[:, :1, :]):
        return None
    groups_of: dict[int, int] = {}
    for g, row in enumerate(ids):
        for b in np.unique(row):
            if groups_of.setdefault(int(b), g) != g:
                return None
    return ids


def gptq_codes(
    w,
    h,
    scale,
    zp,
    fmt,
    *,
    blocks=None,
    block_size=None,
    symmetric=True,
    method="minmax",
    act_order=None,
):
    """GPTQ on G independent (K x N) weights at once.

    w: (G, K, N); h: (G, K, K); scale, zp: (G, K, N), each element's grid parameters. With
    `blocks` ((G, K) ids), the rows of one id share a scale per column, chosen from their
    current values when the first of them is reached (padded with zeros to block_size, as
    the grid pads). Returns codes (G, K, N) int64, the scales and zero points used, and the
    error-compensated weights the codes are the nearest rounding of (float64, (G, K, N)): a
    learned rounding started there starts at GPTQ's solution.
    """
    act_order = ACT_ORDER if act_order is None else act_order
    w = np.array(w, np.float64, order="C")  # rows contiguous: a conv weight comes transposed
    h = np.asarray(h, np.float64)  # copied below only where it must change
    scale = np.array(scale, np.float64)
    zp = np.array(zp, np.float64)
    g_dim, k_dim, n = w.shape
    diag = np.diagonal(h, axis1=1, axis2=2).copy()
    gi, ki = np.nonzero(
        diag <= 0
    )  # inputs that are always 0: no error to spread, rounded to nearest
    if len(gi):
        h = h.copy()
    h[gi, ki, :] = 0.0
    h[gi, :, ki] = 0.0
    h[gi, ki, ki] = 1.0
    rows = (
        np.argsort(-diag, axis=1, kind="stable")
        if act_order
        else np.tile(np.arange(k_dim), (g_dim, 1))
    )
    take = lambda a: np.take_along_axis(a, rows[:, :, None], axis=1)  # noqa: E731
    if act_order:  # natural order: no copies of H (K x K) to make
        w, scale, zp = take(w), take(scale), take(zp)
        h = np.take_along_axis(take(h), rows[:, None, :], axis=2)
    feedback = _feedback(h)
    first = members = None
    if blocks is not None:
        bp = np.take_along_axis(blocks, rows, axis=1)
        first = np.zeros((g_dim, k_dim), bool)
        members = []
        for g in range(g_dim):
            ids, at = np.unique(bp[g], return_index=True)
            first[g, at] = True
            members.append({int(b): np.nonzero(bp[g] == b)[0] for b in ids})
    q = np.zeros((g_dim, k_dim, n), np.int64)
    original = w.copy()
    # one buffer for every row's update: a fresh (G, LAZY, N) temporary per row is mapped and
    # unmapped by the allocator each time
    spread = np.empty((g_dim, min(LAZY, k_dim), n))
    for start in range(0, k_dim, LAZY):
        end = min(start + LAZY, k_dim)
        res = np.zeros((g_dim, end - start, n))  # each rounded row's residual against w
        for i in range(start, end):
            if first is not None and first[:, i].any():
                for g in np.nonzero(first[:, i])[0]:
                    cols = members[g][int(bp[g, i])]
                    cur = w[g, cols].copy()
                    late = (
                        cols >= end
                    )  # rows past this lazy batch have not received its updates yet
                    if late.any() and i > start:
                        cur[late] += feedback[g, start:i][:, cols[late]].T @ res[g, : i - start]
                    s_b, z_b = _block_params(cur.T, fmt, symmetric, method, block_size)
                    scale[g, cols], zp[g, cols] = s_b, z_b
            wi, s, z = w[:, i], scale[:, i], zp[:, i]
            qi = np.clip(np.rint(wi / s) + z, fmt.qmin, fmt.qmax)
            q[:, i] = qi
            r = original[:, i] - (qi - z) * s
            res[:, i - start] = r
            step = spread[:, : end - i - 1]
            np.multiply(feedback[:, i, i + 1 : end, None], r[:, None, :], out=step)
            w[:, i + 1 : end] += step
        if end < k_dim:
            # contiguous: BLAS takes no reversed view (_feedback_in_place), numpy would loop
            block = np.ascontiguousarray(feedback[:, start:end, end:].transpose(0, 2, 1))
            w[:, end:] += np.matmul(block, res)
    # each row of w is final once its turn has come: it then holds the value that was rounded
    if not act_order:
        return q, scale, zp, w
    back = np.argsort(rows, axis=1)
    untake = lambda a: np.take_along_axis(a, back[:, :, None], axis=1)  # noqa: E731
    return untake(q), untake(scale), untake(zp), untake(w)


def _block_params(rows: np.ndarray, fmt, symmetric: bool, method: str, block_size: int | None):
    """Per-column scale and zero point of one block (rows: N x members), on the grid's range setter."""
    if block_size and rows.shape[1] < block_size:
        rows = np.pad(rows, [(0, 0), (0, block_size - rows.shape[1])])
    lo, hi = weight_range(rows.astype(np.float32), fmt, symmetric, method)
    s, z = affine_params(lo, hi, fmt, symmetric)
    return s.astype(np.float64), z.astype(np.float64)


def _feedback(h: np.ndarray) -> np.ndarray:
    """GPTQ's error feedback F (G, K, K), strictly upper triangular: row j, once rows before it are
    rounded, is rounded at w_j + Σ_{i<j} F_ij (w_i - deq(q_i)), residuals against the weights as
    given. With the damped H = V Vᵀ, V upper triangular, F_ij = V_ij / V_jj.

    This is the paper's update (w_j -= U_ij e_i with UᵀU = H⁻¹, e_i the compensated row's error
    over U_ii) written with V = U⁻¹: both give the same codes, but V is one Cholesky
    factorization, where U needs H's triangular inverse as well (3x the arithmetic: 5.4 s of
    a 6.0 s ResNet-50 layer at K = 4608). float64: float32 took EfficientNet-Lite0 W4A8 from
    80.36 % to 78.93 % (its Hessians are far worse conditioned than a random one).

    Only F's strict upper triangle is defined: GPTQ reads nothing else. From K = IN_PLACE_K on,
    F is a view of one buffer factored and scaled in place (_feedback_in_place)."""
    if h.shape[1] >= IN_PLACE_K:
        return _feedback_in_place(h)
    v = _reverse_factor(h)
    f = v / np.diagonal(v, axis1=1, axis2=2)[:, None, :]
    idx = np.arange(h.shape[1])
    f[:, idx, idx] = 0.0
    return f


def _feedback_in_place(h: np.ndarray) -> np.ndarray:
    """_feedback from one (G, K, K) buffer: H reversed, factored by LAPACK in place, scaled in
    place, returned as a reversed, transposed view (F's strict upper triangle; below it, what
    LAPACK left). Each fresh K x K float64 array costs its page faults (ResNet-50's K = 4608
    layers: 170 MB each, 0.3-0.9 s here); the five _reverse_factor's way made took 2.3-7 s of
    a layer, this one buffer 1.2-1.6 s."""
    g_dim, k, _ = h.shape
    buf = np.empty((g_dim, k, k))
    for g in range(g_dim):
        base = np.diagonal(h[g])
        mean = float(base.mean())
        damp = DAMP
        for _ in range(DAMP_STEPS):
            m = buf[g]
            m[...] = h[g, ::-1, ::-1]  # P H P, symmetric: m.T (Fortran order) is the same matrix
            np.einsum("ii->i", m)[...] += damp * mean
            if _factor_in_place(m.T) and np.isfinite(np.diagonal(m)).all():
                break
            damp *= 10
        else:
            raise np.linalg.LinAlgError(
                "GPTQ: the layer's Hessian does not factor even with "
                f"{DAMP * 10 ** (DAMP_STEPS - 1):g}x its mean diagonal added"
            )
        # m = Lᵀ with P H P = L Lᵀ, so V = P L P = (m reversed)ᵀ: V's column j is m's row k-1-j
        m /= np.diagonal(m).copy()[:, None]
        np.einsum("ii->i", m)[...] = 0.0
    return buf[:, ::-1, ::-1].transpose(0, 2, 1)


def _reverse_factor(h: np.ndarray) -> np.ndarray:
    """Upper triangular V with V Vᵀ = H + damping, per group (the damping, DAMP of the mean
    diagonal, grows tenfold until H factors). With P the order-reversing permutation and
    P H P = L Lᵀ, V = P L P."""
    rev = np.array(h[:, ::-1, ::-1], np.float64)  # one copy, damped in place
    diag = np.einsum("gii->gi", rev)  # a writable view of the diagonals
    base = diag.copy()
    mean = base.mean(axis=1, keepdims=True)
    damp = DAMP
    for _ in range(DAMP_STEPS):
        diag[...] = base + damp * mean
        low = _cholesky(rev)
        if low is not None:
            return np.ascontiguousarray(low[:, ::-1, ::-1])
        damp *= 10
    raise np.linalg.LinAlgError(
        "GPTQ: the layer's Hessian does not factor even with "
        f"{DAMP * 10 ** (DAMP_STEPS - 1):g}x its mean diagonal added"
    )


def _factor_in_place(a: np.ndarray) -> bool:
    """Overwrite the lower triangle of `a` (K x K, Fortran order) with its Cholesky factor; False
    where it is not positive definite. torch's LAPACK writes into a column-major tensor it is
    given as its own output; without torch, numpy's factor is copied in."""
    try:
        import torch
    except ImportError:  # torch is an optional dependency
        try:
            a[...] = np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            return False
        return True
    t = torch.from_numpy(a)
    info = torch.empty((), dtype=torch.int32)
    torch.linalg.cholesky_ex(t, out=(t, info))
    return int(info) == 0


def _cholesky(a: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factors (None where a is not positive definite); torch's LAPACK where
    installed (faster here than numpy's)."""
    try:
        import torch
    except ImportError:  # torch is an optional dependency
        try:
            return np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            return None
    low, info = torch.linalg.cholesky_ex(torch.from_numpy(a))
    if info.any() or not torch.isfinite(low).all():
        return None
    return low.numpy()


def rtn_error(w: np.ndarray, qw: QuantizedWeight, x: np.ndarray) -> float:
    """Output MSE of a 2-D (K x N) quantized weight on inputs x, for reports and tests."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return float(np.mean((x @ (qw.dequantized().astype(np.float64) - w)) ** 2))


__all__ = [
    "ACT_ORDER",
    "asymmetric_target",
    "gptq",
    "gptq_codes",
    "gptq_weight",
    "hessian",
    "quantize_int",
    "rtn_error",
]
