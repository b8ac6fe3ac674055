"""quant/range_setters: the weight MSE search returns the best ratio of its documented grid
(15 ratios over [0.3, 1], then +-0.02 and +-0.04 around each row's best), and the activation
setters on degenerate histograms (empty, a single sample)."""

from __future__ import annotations

import numpy as np
import pytest

from faaq_onnx.quant.affine import affine_params, fake_quant
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.observers import TensorStats
from faaq_onnx.quant.range_setters import activation_range, weight_range


def _row_errors(w, lo, hi, fmt, symmetric):
    scale, zp = affine_params(lo, hi, fmt, symmetric)
    fq = fake_quant(w, scale[:, None], zp[:, None].astype(np.float32), fmt.qmin, fmt.qmax)
    return np.sum((fq - w) ** 2, axis=1, dtype=np.float64)


@pytest.mark.parametrize("symmetric", [True, False])
def test_weight_mse_takes_the_best_ratio_of_the_coarse_and_fine_grids(symmetric):
    rng = np.random.default_rng(1)
    w = rng.standard_t(4, size=(300, 64)).astype(np.float32)
    fmt = IntFormat(3, symmetric)
    lo0 = np.minimum(w.min(axis=1), 0.0).astype(np.float64)
    hi0 = np.maximum(w.max(axis=1), 0.0).astype(np.float64)
    lo, hi = weight_range(w, fmt, symmetric, "mse")
    ratio = np.where(hi0 > 0, hi / hi0, lo / lo0)
    np.testing.assert_allclose(lo, lo0 * ratio)
    np.testing.assert_allclose(hi, hi0 * ratio)
    got = _row_errors(w, lo, hi, fmt, symmetric)
    errs = np.stack(
        [_row_errors(w, lo0 * f, hi0 * f, fmt, symmetric) for f in np.linspace(0.3, 1, 15)]
    )
    coarse = np.linspace(0.3, 1, 15)[np.argmin(errs, axis=0)]
    fine = [np.clip(coarse + d, 0.05, 1.0) for d in (-0.04, -0.02, 0.02, 0.04)]
    fine_errs = np.stack([_row_errors(w, lo0 * f, hi0 * f, fmt, symmetric) for f in fine])
    best = np.minimum(errs.min(axis=0), fine_errs.min(axis=0))
    np.testing.assert_allclose(got, best, rtol=1e-9)
    # every step of the fine grid is somebody's best: none of them is dead weight
    picked = np.round(ratio - coarse, 6)
    assert {-0.04, -0.02, 0.02, 0.04} <= set(picked.tolist())


def test_weight_minmax_is_each_rows_range_with_zero_inside():
    w = np.array([[1.0, 2.0, 3.0], [-4.0, -1.0, -2.0], [-1.5, 0.5, 2.5]], np.float32)
    lo, hi = weight_range(w, IntFormat(4, True), True, "minmax")
    np.testing.assert_array_equal(lo, [0.0, -4.0, -1.5])
    np.testing.assert_array_equal(hi, [3.0, 0.0, 2.5])


def _stats(x):
    s = TensorStats()
    s.observe(np.asarray(x, np.float32))
    return s


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_an_all_zero_histogram_is_an_error_too(method):
    s = _stats(np.linspace(-1, 3, 100))
    s.hist = np.zeros_like(s.hist)
    with pytest.raises(RuntimeError, match=r"needs a histogram.*range \[-1, 3\]"):
        activation_range(s, IntFormat(8, False), False, method)


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_a_single_sample_is_a_histogram(method):
    """One observed value (a histogram that sums to 1) is enough: the range keeps zero and
    stays within [0, value]."""
    lo, hi = activation_range(_stats([3.0]), IntFormat(8, False), False, method)
    assert lo == 0.0 and 0.0 < hi <= 3.0
    if method == "percentile":
        assert hi == pytest.approx(3.0)


def test_a_constant_zero_tensor_keeps_the_zero_range():
    for method in ("minmax", "percentile", "mse", "entropy"):
        assert activation_range(_stats(np.zeros(10)), IntFormat(8, False), False, method) == (
            0.0,
            0.0,
        )


def _mse_reference(stats, fmt, symmetric):
    """The documented MSE search written out one candidate at a time: 40 x 40 fractions of
    [0.1, 1] of each side for a range open on both sides, else 24 fractions of [0.05, 1] then
    24 within +-0.04 of the best (clipped to [0.05, 1]); the first best wins."""
    lo, hi = min(stats.min, 0.0), max(stats.max, 0.0)
    keep = stats.hist > 0
    hist = stats.hist[keep].astype(np.float64)
    edges = np.clip(stats.edges, lo, hi)
    centres = ((edges[:-1] + edges[1:]) / 2)[keep]

    def err(c_lo, c_hi):
        s, z = affine_params(np.array([c_lo]), np.array([c_hi]), fmt, symmetric)
        fq = fake_quant(
            centres[None].astype(np.float32),
            s[:, None],
            z[:, None].astype(np.float32),
            fmt.qmin,
            fmt.qmax,
        )
        return float(((fq[0].astype(np.float64) - centres) ** 2) @ hist)

    def first_best(cands):
        errs = [err(a, b) for a, b in cands]
        return cands[int(np.argmin(errs))]

    if not (symmetric or lo == 0 or hi == 0):
        g = np.linspace(0.1, 1.0, 40)
        return first_best([(lo * a, hi * b) for a in g for b in g])
    amax = max(-lo, hi)

    def cand(f):
        if symmetric:
            return (-amax * f if lo < 0 else 0.0, amax * f if hi > 0 else 0.0)
        return lo * f, hi * f

    coarse = list(np.linspace(0.05, 1.0, 24))
    errs = [err(*cand(f)) for f in coarse]
    f0 = coarse[int(np.argmin(errs))]
    fine = np.unique(np.clip(np.linspace(f0 - 0.04, f0 + 0.04, 24), 0.05, 1.0))
    return first_best([cand(f) for f in fine])


def _data(kind):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(20_000)
    x[:8] = 12.0
    return {
        "two-sided": x,
        "relu": np.maximum(x, 0),
        "negative": -np.abs(x) * 0.5,
        "skewed": np.concatenate([x[x > -1.5], [-3.0] * 3]),
        "sparse": np.round(x * 2) / 2,  # a few exact values: most bins are empty
        "small": x * 0.05,  # the whole range within (-1, 1)
    }[kind]


@pytest.mark.parametrize("kind", ["two-sided", "relu", "negative", "skewed", "sparse", "small"])
@pytest.mark.parametrize("bits,symmetric", [(4, False), (4, True), (6, False)])
def test_mse_activation_range_is_the_documented_grid_search(kind, bits, symmetric):
    s = _stats(_data(kind))
    fmt = IntFormat(bits, symmetric and kind != "relu")
    got = activation_range(s, fmt, symmetric, "mse")
    assert got == pytest.approx(_mse_reference(s, fmt, symmetric), rel=1e-6, abs=1e-9)
