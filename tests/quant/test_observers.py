"""One-sweep statistics: a histogram on zero-aligned power-of-two bins, the same whatever the
batching, and faithful to the data."""

import numpy as np
import pytest

from faaq_onnx.quant.observers import N_BINS, SAMPLE_ELEMENTS, TensorStats, bin_exponent


def _observed(batches) -> TensorStats:
    s = TensorStats()
    for b in batches:
        s.observe(np.asarray(b, np.float32))
    return s


def _same(a: TensorStats, b: TensorStats) -> None:
    assert (a.min, a.max, a.count, a.first, a.exp) == (b.min, b.max, b.count, b.first, b.exp)
    np.testing.assert_array_equal(a.hist, b.hist)


def test_the_histogram_does_not_depend_on_batching_or_order():
    """The same samples in batches of 1, 7 or all at once, or in reverse order, give the same
    histogram bin for bin: a model's ranges do not move when its calibration batch does."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 3, 5)) * np.linspace(0.1, 8, 40)[:, None, None]).astype(
        np.float32
    )
    one = _observed([x])
    for size in (1, 7, 13):
        _same(one, _observed([x[i : i + size] for i in range(0, len(x), size)]))
    _same(one, _observed([x[i : i + 1] for i in reversed(range(len(x)))]))


def test_large_samples_are_subsampled_per_sample_whatever_the_batch():
    """Beyond SAMPLE_ELEMENTS elements a sample feeds the histogram a strided subset of its own,
    so batching does not change which elements are counted; min/max/count stay exact."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 2 * SAMPLE_ELEMENTS + 5)).astype(np.float32)
    whole = _observed([x])
    assert whole.count == x.size and (whole.min, whole.max) == (x.min(), x.max())
    assert whole.hist.sum() == 6 * len(range(0, x.shape[1], 3))  # stride 3
    _same(whole, _observed([x[:1], x[1:4], x[4:]]))
    assert _ks_distance(whole, x.ravel()) < 0.01


def test_a_batch_whose_axis_0_is_not_the_samples_is_counted_whole():
    x = np.random.default_rng(5).standard_normal((3, 2 * SAMPLE_ELEMENTS)).astype(np.float32)
    s = TensorStats()
    s.observe(x, by_sample=False)
    assert s.hist.sum() == s.count == x.size
    _same(s, _observed([x.reshape(-1, 64)]))  # no sample is subsampled at 64 elements


def test_bins_are_aligned_to_zero_with_a_power_of_two_width_and_fill_over_half():
    rng = np.random.default_rng(1)
    for lo, hi in ((-3.0, 5.0), (0.0, 1e-3), (-7e4, 0.0), (0.25, 0.5)):
        s = _observed([rng.uniform(lo, hi, 5000)])
        w = s.edges[1] - s.edges[0]
        assert w == 2.0**s.exp and np.all(np.diff(s.edges) == w)
        assert s.edges[0] <= min(s.min, 0.0) < s.edges[0] + w
        assert s.edges[-1] - w <= max(s.max, 0.0) < s.edges[-1]
        assert np.any(s.edges == 0.0)  # zero is an edge: the floor of a ReLU is exact
        assert N_BINS // 2 < len(s.hist) <= N_BINS
        assert s.hist.sum() == 5000


def test_bin_exponent_is_the_finest_that_fits():
    for lo, hi in ((-1.0, 1.0), (0.0, 3.3), (-1e-5, 2e-7), (0.0, 4096.0)):
        e = bin_exponent(lo, hi)
        bins = [np.floor(hi / 2.0**k) - np.floor(lo / 2.0**k) + 1 for k in (e, e - 1)]
        assert bins[0] <= N_BINS < bins[1]
    assert bin_exponent(0.0, 0.0) == -126


def _ks_distance(s: TensorStats, data: np.ndarray) -> float:
    """Largest gap between the histogram's CDF and the data's, at the bin edges."""
    cdf_hist = np.cumsum(s.hist) / s.hist.sum()
    cdf_data = np.searchsorted(np.sort(data), s.edges[1:], side="left") / data.size
    return float(np.max(np.abs(cdf_hist - cdf_data)))


def test_a_growing_range_keeps_every_count_where_its_value_is():
    """Regridding moves counts exactly: the histogram after growth is the one a single batch of
    all the data makes, and its CDF matches the data's at every edge."""
    rng = np.random.default_rng(1)
    batches = [
        rng.standard_normal(20000).astype(np.float32) * s + m
        for s, m in ((0.01, -0.02), (0.5, 3.0), (40.0, 0.0))
    ]
    grown = _observed(batches)
    data = np.concatenate(batches)
    _same(grown, _observed([data]))
    assert _ks_distance(grown, data) == 0.0  # values in bin [a, b) counted below b, exactly


def test_constant_first_batch_does_not_fix_a_coarse_range():
    """A ReLU output that is all zeros in the first batch: later data still gets fine bins."""
    rng = np.random.default_rng(3)
    s = TensorStats()
    s.observe(np.zeros(1000, np.float32))
    assert len(s.hist) == 1 and s.edges[0] == 0.0 and s.hist[0] == 1000
    later = rng.uniform(0, 1e-3, 20000).astype(np.float32)
    s.observe(later)
    assert s.edges[-1] < 1.01e-3 and s.hist[0] >= 1000
    assert _ks_distance(s, np.concatenate([np.zeros(1000, np.float32), later])) == 0.0


def test_merged_is_the_histogram_of_both_tensors_together():
    rng = np.random.default_rng(2)
    a = rng.uniform(1.0, 2.0, (4, 50)).astype(np.float32)
    b = rng.uniform(-40.0, -3.0, (4, 50)).astype(np.float32)
    m = _observed([a]).merged(_observed([b]))
    both = _observed([np.concatenate([a, b])])
    _same(m, both)
    no_hist = TensorStats(min=0.5, max=9.0, count=2)
    n = _observed([a]).merged(no_hist)
    assert n.hist is None and (n.min, n.max, n.count) == (0.5, 9.0, 202)


def test_non_finite_values_leave_an_infinite_range_without_histogram():
    s = _observed([np.array([1.0, 2.0]), np.array([np.inf, 0.0])])
    assert s.unbounded and s.hist is None and s.edges is None and s.count == 4
    s.observe(np.array([3.0], np.float32))
    assert s.unbounded and s.hist is None and s.count == 5


def test_observe_records_count_and_one_samples_shape_and_skips_empty_batches():
    s = TensorStats()
    s.observe(np.zeros((0, 3), np.float32))
    assert s.count == 0 and s.hist is None and s.shape is None
    s.observe(np.ones((2, 3, 4), np.float32))
    assert s.count == 24 and s.shape == (3, 4)
    s.observe(np.array(7.0, np.float32))  # a scalar has no sample shape: the last one stays
    assert s.count == 25 and s.shape == (3, 4) and s.max == 7.0
    v = _observed([np.array([0.5, -1.0, 2.0])])  # N scalar samples: sample shape ()
    assert v.shape == () and v.count == 3


@pytest.mark.parametrize("value", [-2.0, 3.0])
def test_one_value_and_zero_share_a_histogram_that_holds_both(value):
    s = _observed([np.full((2, 3), value)])
    assert s.edges[0] <= min(value, 0.0) and s.edges[-1] > max(value, 0.0)
    assert s.hist.sum() == 6 and s.hist[np.searchsorted(s.edges, value, side="right") - 1] == 6
