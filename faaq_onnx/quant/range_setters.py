"""Range setters: choose the clipping range [lo, hi] a quantizer maps onto its integers.

Activations are set from histograms (observers.TensorStats); weights from the
weights themselves, per channel or per block. All search grids are fixed, so the
same data gives the same ranges.
"""

from __future__ import annotations

import numpy as np

from faaq_onnx.errors import FaaqError
from faaq_onnx.quant.affine import affine_params, fake_quant
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.observers import TensorStats

ACTIVATION_METHODS = ("minmax", "percentile", "mse", "entropy")
WEIGHT_METHODS = ("minmax", "mse")


def activation_range(
    stats: TensorStats, fmt: IntFormat, symmetric: bool, method: str, percentile: float = 99.99
) -> tuple[float, float]:
    if method not in ACTIVATION_METHODS:
        raise FaaqError(
            f"unknown range setter {method!r}: choose one of {', '.join(ACTIVATION_METHODS)}"
        )
    lo, hi = min(stats.min, 0.0), max(stats.max, 0.0)
    if method == "minmax" or hi - lo <= 0:
        return lo, hi
    if stats.hist is None or stats.hist.sum() == 0:
        # never fall back to min-max behind the user's back: the histogram sweep must run
        raise RuntimeError(
            f"range setter {method!r} needs a histogram, and none was collected "
            f"(range [{lo:.4g}, {hi:.4g}])"
        )
    # the bins are aligned to zero: the outer ones reach past the range, which their values do not
    all_edges = stats.edges
    assert all_edges is not None  # set with hist
    edges = np.clip(all_edges, lo, hi)
    hist = stats.hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    if method == "percentile":
        cdf = np.cumsum(hist) / hist.sum()
        p = percentile / 100.0
        new_hi = float(edges[1:][np.searchsorted(cdf, p)]) if hi > 0 else 0.0
        new_lo = float(edges[:-1][np.searchsorted(cdf, 1 - p)]) if lo < 0 else 0.0
        return min(new_lo, 0.0), max(new_hi, 0.0)
    if method == "mse":
        return _mse_search(hist, centres, lo, hi, fmt, symmetric)
    return _entropy_search(stats, lo, hi, fmt)


def _fq_error(hist, centres, lo, hi, fmt, symmetric) -> np.ndarray:
    """Expected squared error of fake-quantizing the histogram, for arrays of (lo, hi)."""
    scale, zp = affine_params(lo, hi, fmt, symmetric)
    fq = fake_quant(
        centres[None, :].astype(np.float32),
        scale[:, None],
        zp[:, None].astype(np.float32),
        fmt.qmin,
        fmt.qmax,
    )
    err = (fq.astype(np.float64) - centres[None, :]) ** 2
    return err @ hist


def _mse_search(hist, centres, lo, hi, fmt, symmetric):
    """Clipping range with the least expected squared error over the histogram.

    One-sided ranges search the clipping fraction coarse-to-fine (24 + 24 points, as fine
    as 96 evenly spaced ones: the error is near-unimodal in it); ranges open on both
    sides search a 40 x 40 grid of fractions. Empty bins are skipped.
    """
    keep = hist > 0
    hist, centres = hist[keep], centres[keep]
    if not (symmetric or lo == 0 or hi == 0):
        g = np.linspace(0.1, 1.0, 40)
        a, b = np.meshgrid(g, g, indexing="ij")
        cand_lo, cand_hi = lo * a.ravel(), hi * b.ravel()
        best = int(np.argmin(_fq_error(hist, centres, cand_lo, cand_hi, fmt, symmetric)))
        return float(cand_lo[best]), float(cand_hi[best])
    amax = max(-lo, hi)

    def one_sided(fracs):
        cand_lo = np.where(lo < 0, -amax * fracs, 0.0) if symmetric else lo * fracs
        cand_hi = np.where(hi > 0, amax * fracs, 0.0) if symmetric else hi * fracs
        return cand_lo, cand_hi, _fq_error(hist, centres, cand_lo, cand_hi, fmt, symmetric)

    coarse = np.linspace(0.05, 1.0, 24)
    _, _, errs = one_sided(coarse)
    f0 = coarse[int(np.argmin(errs))]
    fine = np.unique(np.clip(np.linspace(f0 - 0.04, f0 + 0.04, 24), 0.05, 1.0))
    cand_lo, cand_hi, errs = one_sided(fine)
    best = int(np.argmin(errs))
    return float(cand_lo[best]), float(cand_hi[best])


def _entropy_search(stats: TensorStats, lo, hi, fmt):
    """Threshold minimizing KL(P || Q) between the clipped and the quantized |x| histograms.

    P is the histogram up to the threshold with the clipped mass folded into its last
    bin; Q is built from the unclipped bins only, so clipping shows up as divergence
    (TensorRT's calibration recipe). |x|'s histogram is the observer's, folded at zero: its
    bins are aligned there, so bin -1 - i lands exactly on bin i, no count is split.
    """
    assert stats.hist is not None
    one_sided = lo == 0 or hi == 0
    amax = max(-lo, hi)
    at = stats.bins
    folded = np.where(at >= 0, at, -at - 1)
    mhist = np.bincount(folded, weights=stats.hist.astype(np.float64))
    nb, width = len(mhist), 2.0**stats.exp
    if nb < 2:
        return lo, hi
    # The exact zeros a ReLU makes pile into bin 0; left in, that spike drives the
    # search towards tiny thresholds. Flatten it as NVIDIA's calibrator does.
    mhist[0] = mhist[1]
    levels = max((fmt.qmax - fmt.qmin + 1) // (1 if one_sided else 2), 2)
    best_t, best_kl = amax, np.inf
    for i in [*range(levels, nb, max(1, (nb - levels) // 256)), nb]:  # the whole range too
        p = mhist[:i].copy()
        p[-1] += mhist[i:].sum()
        if p.sum() == 0:
            continue
        bounds = (np.arange(levels + 1) * i) // levels
        starts = bounds[:-1][bounds[:-1] < bounds[1:]]
        ref = mhist[:i]
        sums = np.add.reduceat(ref, starts)
        nonzero = np.add.reduceat((ref > 0).astype(np.float64), starts)
        level_of_bin = np.searchsorted(starts, np.arange(i), side="right") - 1
        q = np.where(ref > 0, (sums / np.maximum(nonzero, 1))[level_of_bin], 0.0)
        pn, qn = p / p.sum(), q / max(q.sum(), 1e-30)
        mask = pn > 0
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / np.maximum(qn[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_t = kl, min(i * width, amax)
    return (max(lo, -best_t), min(hi, best_t))


def weight_range(w: np.ndarray, fmt: IntFormat, symmetric: bool, method: str):
    """Per-row ranges of a 2-D [groups, elements] view of a weight.

    MSE searches the clipping ratio per row: a coarse grid over [0.3, 1], then a fine
    one around each row's best (float32; the error is near-unimodal in the ratio).
    """
    if method not in WEIGHT_METHODS:
        raise FaaqError(
            f"unknown weight range setter {method!r}: choose one of {', '.join(WEIGHT_METHODS)}"
        )
    w = w.astype(np.float32)
    lo = np.minimum(w.min(axis=1), 0.0).astype(np.float64)
    hi = np.maximum(w.max(axis=1), 0.0).astype(np.float64)
    if method == "minmax":
        return lo, hi
    best_err = np.full(len(w), np.inf)
    best_frac = np.ones(len(w))

    def try_fracs(fracs_per_row):
        nonlocal best_err, best_frac
        for frac in fracs_per_row:
            scale, zp = affine_params(lo * frac, hi * frac, fmt, symmetric)
            fq = fake_quant(w, scale[:, None], zp[:, None].astype(np.float32), fmt.qmin, fmt.qmax)
            err = np.sum((fq - w) ** 2, axis=1, dtype=np.float64)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_frac = np.where(better, frac, best_frac)

    try_fracs([np.full(len(w), f) for f in np.linspace(0.3, 1.0, 15)])
    coarse = best_frac.copy()
    try_fracs([np.clip(coarse + d, 0.05, 1.0) for d in (-0.04, -0.02, 0.02, 0.04)])
    return lo * best_frac, hi * best_frac
