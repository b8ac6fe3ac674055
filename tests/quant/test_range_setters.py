import numpy as np
import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.observers import TensorStats
from faaq_onnx.quant.range_setters import activation_range, weight_range
from faaq_onnx.quant.weights import quantize_weight


def _stats(x):
    s = TensorStats()
    s.observe(np.asarray(x, np.float32))
    return s


@pytest.fixture
def heavy_tailed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:20] = 40.0  # rare outliers
    return x


def test_minmax_is_the_observed_range(heavy_tailed):
    lo, hi = activation_range(_stats(heavy_tailed), IntFormat(8, False), False, "minmax")
    assert lo == pytest.approx(heavy_tailed.min()) and hi == pytest.approx(40.0)


@pytest.mark.parametrize("method,bits", [("percentile", 8), ("entropy", 8), ("mse", 4)])
def test_clipping_setters_cut_outliers(heavy_tailed, method, bits):
    # at 8 bits MSE rightly keeps 20 outliers in 200k (their clipping error would
    # exceed the rounding noise); at 4 bits the rounding noise dominates and it clips
    lo, hi = activation_range(_stats(heavy_tailed), IntFormat(bits, False), False, method)
    assert lo <= 0 <= hi
    assert hi < 40.0 * 0.9, f"{method} kept the outliers: {hi}"
    assert hi > 2.0, f"{method} clipped the bulk of the data: {hi}"


def test_mse_lowers_error_versus_minmax(heavy_tailed):
    from faaq_onnx.quant.affine import affine_params, fake_quantize

    fmt = IntFormat(4, False)
    errs = {}
    for m in ("minmax", "mse"):
        lo, hi = activation_range(_stats(heavy_tailed), fmt, False, m)
        s, z = affine_params(lo, hi, fmt, False)
        errs[m] = float(np.mean((fake_quantize(heavy_tailed, s, z, fmt) - heavy_tailed) ** 2))
    assert errs["mse"] < errs["minmax"] * 0.5


def test_nonnegative_data_keeps_zero_floor():
    x = np.abs(np.random.default_rng(0).standard_normal(10_000)).astype(np.float32)
    for m in ("minmax", "percentile", "mse", "entropy"):
        lo, hi = activation_range(_stats(x), IntFormat(8, False), False, m)
        assert lo == 0.0 and hi > 0


def test_unknown_method():
    with pytest.raises(FaaqError, match="unknown range setter"):
        activation_range(_stats(np.ones(4, np.float32)), IntFormat(8, False), False, "magic")


def test_weight_mse_never_worse_than_minmax():
    w = np.random.default_rng(0).standard_t(3, size=(16, 300))
    fmt = IntFormat(4, True)
    e = {}
    for m in ("minmax", "mse"):
        qw = quantize_weight(w, 4, "per-channel", 0, 1, symmetric=True, method=m)
        e[m] = np.sum((qw.dequantized() - w) ** 2, axis=1)
    assert np.all(e["mse"] <= e["minmax"] + 1e-9)
    assert e["mse"].sum() < e["minmax"].sum()
    _lo, hi = weight_range(w, fmt, True, "minmax")
    np.testing.assert_allclose(hi, w.max(1))


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_missing_histogram_is_an_error_not_silent_minmax(method):
    s = TensorStats(min=-1.0, max=3.0, count=100)  # min/max without a histogram
    with pytest.raises(RuntimeError, match="needs a histogram"):
        activation_range(s, IntFormat(8, False), False, method)
    assert activation_range(s, IntFormat(8, False), False, "minmax") == (-1.0, 3.0)


def _true_mse(x, lo, hi, fmt, symmetric):
    from faaq_onnx.quant.affine import affine_params, fake_quantize

    s, z = affine_params(lo, hi, fmt, symmetric)
    return float(np.mean((fake_quantize(x, s, z, fmt).astype(np.float64) - x) ** 2))


@pytest.mark.parametrize("symmetric,one_sided", [(False, True), (False, False), (True, False)])
def test_mse_range_is_near_the_brute_force_optimum(heavy_tailed, symmetric, one_sided):
    """The histogram search lands within 3 % of the best clipping found by brute force on the raw data."""
    x = np.abs(heavy_tailed) if one_sided else heavy_tailed
    fmt = IntFormat(4, not one_sided and symmetric)
    lo, hi = activation_range(_stats(x), fmt, symmetric, "mse")
    x_lo, x_hi = min(float(x.min()), 0.0), float(x.max())
    best = min(
        _true_mse(x, x_lo * a, x_hi * b, fmt, symmetric)
        for a in (np.linspace(0.05, 1, 60) if x_lo < 0 else [1.0])
        for b in np.linspace(0.05, 1, 60)
    )
    assert _true_mse(x, lo, hi, fmt, symmetric) <= 1.03 * best


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_activation_ranges_scale_with_the_data(heavy_tailed, method):
    """Rescaling the data rescales the range: small-valued tensors are not treated as min-max."""
    fmt = IntFormat(8, False)
    lo, hi = activation_range(_stats(heavy_tailed), fmt, False, method)
    lo_s, hi_s = activation_range(_stats(heavy_tailed * 0.01), fmt, False, method)
    assert lo_s == pytest.approx(lo * 0.01, rel=0.02) and hi_s == pytest.approx(hi * 0.01, rel=0.02)


def _entropy_reference(stats, lo, hi, fmt):
    """TensorRT's entropy calibration written out with loops (slow, obviously correct)."""
    width = stats.edges[1] - stats.edges[0]
    amax = max(-lo, hi)
    mhist = [0.0] * len(stats.hist)
    for left, count in zip(stats.edges[:-1], stats.hist):  # |x| of [a, a + w): [|a| - w, |a|)
        mhist[int(round(abs(left) / width)) - (1 if left < 0 else 0)] += float(count)
    while mhist[-1] == 0:
        mhist.pop()
    mhist = np.array(mhist)
    nb = len(mhist)
    mhist[0] = mhist[1]
    levels = max((fmt.qmax - fmt.qmin + 1) // (1 if (lo == 0 or hi == 0) else 2), 2)
    best_t, best_kl = amax, np.inf
    for i in [*range(levels, nb, max(1, (nb - levels) // 256)), nb]:  # the whole range too
        p = list(mhist[:i])
        p[-1] += mhist[i:].sum()
        q = [0.0] * i
        bounds = [(k * i) // levels for k in range(levels + 1)]
        for k in range(levels):
            chunk = range(bounds[k], bounds[k + 1])
            filled = [j for j in chunk if mhist[j] > 0]
            for j in filled:
                q[j] = sum(mhist[j] for j in chunk) / len(filled)
        ps, qs = sum(p), sum(q)
        kl = sum(
            (pj / ps) * np.log((pj / ps) / max(qj / qs, 1e-12)) for pj, qj in zip(p, q) if pj > 0
        )
        if kl < best_kl:
            best_kl, best_t = kl, min(i * width, amax)
    return max(lo, -best_t), min(hi, best_t)


@pytest.mark.parametrize("one_sided", [True, False])
def test_entropy_matches_the_plain_reference(one_sided):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(50_000).astype(np.float32)
    x[:10] = 25.0
    x[rng.random(x.size) < 0.2] = 0.0  # empty-ish regions and a zero spike, as after a ReLU
    x = np.abs(x) if one_sided else x
    s = _stats(x)
    fmt = IntFormat(8, False)
    got = activation_range(s, fmt, False, "entropy")
    ref = _entropy_reference(s, min(s.min, 0.0), max(s.max, 0.0), fmt)
    assert got == pytest.approx(ref, rel=1e-9)
    assert 2.5 < got[1] < 20  # clips the outliers, keeps the bulk of N(0, 1)


def test_weight_ranges_keep_zero_inside_and_mse_near_optimum():
    rng = np.random.default_rng(6)
    w = rng.standard_t(3, size=(8, 400))
    w[0] = np.abs(w[0]) + 0.1  # an all-positive row: its range still starts at zero
    fmt = IntFormat(4, True)
    for m in ("minmax", "mse"):
        lo, hi = weight_range(w, fmt, True, m)
        assert lo[0] == 0.0 and np.all(lo <= 0) and np.all(hi >= 0)
    lo, hi = weight_range(w, fmt, True, "mse")
    for r in range(1, 8):
        got = _true_mse(w[r], lo[r], hi[r], fmt, True)
        best = min(
            _true_mse(w[r], w[r].min() * f, w[r].max() * f, fmt, True)
            for f in np.linspace(0.1, 1, 200)
        )
        assert got <= 1.02 * best


def test_percentile_takes_the_outer_edges_of_the_bins_where_the_cdf_crosses():
    """1000 values at -0.6 and at 0.6, one at -1000 and one at 1000: 4001 bins of 0.5 over
    [-1000, 1000.5); at 99.95 % the top is the upper edge of 0.6's bin [0.5, 1), the floor the
    lower edge of -0.6's bin [-1, -0.5)."""
    x = np.array([-1000.0] + [-0.6] * 1000 + [0.6] * 1000 + [1000.0], np.float32)
    lo, hi = activation_range(_stats(x), IntFormat(8, False), False, "percentile", 99.95)
    assert (lo, hi) == (-1.0, 1.0)
    lo, hi = activation_range(_stats(x), IntFormat(8, False), False, "percentile", 100)
    assert (lo, hi) == (-1000.0, 1000.0)  # 100 %: the whole range


@pytest.mark.parametrize(
    "kind",
    [
        "signed-two-sided",
        "signed-relu",
        "4-bit",
        "sparse",
        "binary",
        "uniform",
        "spike",
        "negative",
    ],
)
def test_entropy_matches_the_plain_reference_for_other_formats_and_data(kind):
    """Signed and 4-bit formats take fewer levels; values on a coarse lattice leave most bins
    empty; a pile next to zero is not flattened away; all-negative data is one-sided; all-0/1
    data and uniform data are best left unclipped."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(40_000).astype(np.float32)
    x[:6] = 15.0
    fmt = IntFormat(8, True)
    if kind == "signed-relu":
        x = np.maximum(x, 0)
    elif kind == "4-bit":
        fmt = IntFormat(4, False)
    elif kind == "sparse":
        x = np.round(x * 4) / 4
        fmt = IntFormat(8, False)
    elif kind == "binary":
        x = (x > 0).astype(np.float32)
        fmt = IntFormat(8, False)
    elif kind == "spike":  # a pile in bin 1, next to the zero bin the search flattens
        x = np.concatenate([np.maximum(x, 0), np.full(8000, 15 / 2048 * 1.5, np.float32)])
        fmt = IntFormat(4, False)
    elif kind == "negative":  # one-sided below zero
        x = -np.maximum(x, 0)
        fmt = IntFormat(4, False)
    elif kind == "uniform":
        x = rng.uniform(0, 1, 40_000).astype(np.float32)
        fmt = IntFormat(8, False)
    s = _stats(x)
    got = activation_range(s, fmt, False, "entropy")
    if kind != "binary":  # (the reference divides by an empty Q there)
        ref = _entropy_reference(s, min(s.min, 0.0), max(s.max, 0.0), fmt)
        assert got == pytest.approx(ref, rel=1e-9)
    if kind in ("binary", "uniform"):
        assert got == pytest.approx((0.0, float(x.max())), abs=1e-9)  # no clipping


def test_percentile_of_all_negative_data_keeps_zero_as_the_top():
    x = -np.abs(np.random.default_rng(9).standard_normal(10_000)).astype(np.float32)
    lo, hi = activation_range(_stats(x), IntFormat(8, False), False, "percentile", 99.0)
    assert hi == 0.0 and x.min() < lo < -1.0
    lo, hi = activation_range(_stats(-x), IntFormat(8, False), False, "percentile", 99.0)
    assert lo == 0.0 and 1.0 < hi < -x.min()
