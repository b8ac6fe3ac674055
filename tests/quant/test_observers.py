"""One-sweep statistics: a histogram whose range grows stays faithful to the data."""

import numpy as np
import pytest

from faaq_onnx.quant.observers import N_BINS, TensorStats


def test_growing_range_keeps_counts_and_percentiles():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(5000).astype(np.float32) * s for s in (0.5, 1.0, 3.0, 1.0)]
    s = TensorStats()
    for b in batches:
        s.observe(b)
    data = np.concatenate(batches)
    assert s.count == data.size and s.hist.sum() == data.size
    assert s.min == data.min() and s.max == data.max()
    assert s.edges[0] <= s.min and s.edges[-1] >= s.max
    cdf = np.cumsum(s.hist) / s.hist.sum()
    for q in (0.01, 0.5, 0.99):
        approx = s.edges[1:][np.searchsorted(cdf, q)]
        bin_w = s.edges[1] - s.edges[0]
        assert abs(approx - np.quantile(data, q)) <= 3 * bin_w


def _ks_distance(s: TensorStats, data: np.ndarray) -> float:
    """Largest gap between the histogram's CDF and the data's, at the bin edges."""
    cdf_hist = np.cumsum(s.hist) / s.hist.sum()
    cdf_data = np.searchsorted(np.sort(data), s.edges[1:], side="right") / data.size
    return float(np.max(np.abs(cdf_hist - cdf_data)))


def test_regrown_histogram_keeps_the_whole_distribution():
    """Re-binning must move old counts to where they were, not pile them up anywhere."""
    rng = np.random.default_rng(1)
    batches = [
        rng.standard_normal(20000).astype(np.float32) * s + m
        for s, m in ((1.0, -2.0), (0.5, 3.0), (4.0, 0.0))
    ]
    s = TensorStats()
    for b in batches:
        s.observe(b)
    assert _ks_distance(s, np.concatenate(batches)) < 0.01


def test_growth_keeps_resolution():
    """A growing range gains a margin (a quarter of the span), not a multiple of it."""
    rng = np.random.default_rng(2)
    s = TensorStats()
    s.observe(rng.uniform(0, 1, 5000).astype(np.float32))
    s.observe(rng.uniform(0, 4, 5000).astype(np.float32))
    assert 4.0 <= s.edges[-1] <= 4.0 * 1.3
    assert s.edges[0] == 0.0  # a non-negative tensor keeps its floor at zero


def test_constant_first_batch_does_not_fix_a_coarse_range():
    """A ReLU output that is all zeros in the first batch: later data still gets fine bins."""
    rng = np.random.default_rng(3)
    s = TensorStats()
    s.observe(np.zeros(1000, np.float32))
    later = rng.uniform(0, 1e-3, 20000).astype(np.float32)
    s.observe(later)
    assert s.edges[-1] < 1e-2
    assert _ks_distance(s, np.concatenate([np.zeros(1000, np.float32), later])) < 0.01


def test_huge_batches_are_sampled_into_the_histogram():
    """Beyond 2^20 elements a strided sample feeds the histogram (bounded time per batch);
    min/max/count stay exact."""
    HIST_SAMPLE = 1 << 20
    x = np.random.default_rng(4).standard_normal(3 * HIST_SAMPLE + 7).astype(np.float32)
    s = TensorStats()
    s.observe(x)
    assert s.count == x.size and s.min == x.min() and s.max == x.max()
    assert HIST_SAMPLE <= s.hist.sum() <= HIST_SAMPLE + 8
    assert _ks_distance(s, x) < 0.01


def test_two_pass_histogram_spans_the_observed_range_and_merges_counts():
    x = np.random.default_rng(5).uniform(0, 0.01, 1000).astype(np.float32)
    s = TensorStats()
    s.observe_minmax(x)
    s.observe_hist(x)
    assert s.edges[0] == 0.0 and s.edges[-1] == pytest.approx(
        x.max()
    )  # not widened to a fixed span
    m = s.merged(s)
    assert m.count == 2 * s.count and m.hist.sum() == 2 * s.hist.sum()


def test_growth_adds_a_quarter_of_the_new_span_on_the_side_that_grew():
    """[-1, 1] then -3: the span is 4, the floor goes to -3 - 1 = -4 and the top stays; then 5:
    span 9 (from -4), the top goes to 5 + 2.25. Every count is kept."""
    s = TensorStats()
    s.observe(np.array([-1.0, 1.0], np.float32))
    assert (s.edges[0], s.edges[-1]) == (-1.0, 1.0)
    s.observe(np.array([-3.0], np.float32))
    assert (s.edges[0], s.edges[-1]) == (-4.0, 1.0)
    assert s.hist[-1] == 1  # re-binned: 1.0 is still in the top bin
    s.observe(np.array([5.0], np.float32))
    assert (s.edges[0], s.edges[-1]) == (-4.0, 7.25)
    assert s.hist.sum() == 4 and s.count == 4 and (s.min, s.max) == (-3.0, 5.0)
    # the new values were counted where they are
    centres = (s.edges[:-1] + s.edges[1:]) / 2
    for v in (-3.0, 5.0):
        assert s.hist[np.abs(centres - v) <= (s.edges[1] - s.edges[0])].sum() >= 1


def test_histogram_includes_zero_and_has_width_for_constant_data():
    """The range always holds 0; a batch of one value still gets bins of positive width."""
    s = TensorStats()
    s.observe(np.full((2, 3), -2.0, np.float32))
    assert s.edges[0] == -2.0 and s.edges[-1] == 0.0 and s.hist[0] == 6
    z = TensorStats()
    z.observe(np.zeros((4, 1), np.float32))
    assert z.edges[0] == 0.0 and 0 < z.edges[-1] <= 1e-6 and z.hist[0] == 4
    p = TensorStats()
    p.observe(np.array([[2.0, 4.0]], np.float32))
    assert (p.edges[0], p.edges[-1]) == (0.0, 4.0) and (p.hist[1024], p.hist[-1]) == (1, 1)


def test_observe_records_count_and_one_samples_shape_and_skips_empty_batches():
    s = TensorStats()
    s.observe(np.zeros((0, 3), np.float32))
    assert s.count == 0 and s.hist is None and s.shape is None
    s.observe(np.ones((2, 3, 4), np.float32))
    assert s.count == 24 and s.shape == (3, 4)
    s.observe(np.array(7.0, np.float32))  # a scalar has no sample shape: the last one stays
    assert s.count == 25 and s.shape == (3, 4) and s.max == 7.0


def test_minmax_pass_skips_empty_batches_and_counts_single_values():
    s = TensorStats()
    s.observe_minmax(np.zeros((0,), np.float32))
    assert s.count == 0 and s.min == np.inf
    s.observe_minmax(np.array([3.5], np.float32))
    assert (s.min, s.max, s.count, s.shape) == (3.5, 3.5, 1, ())
    s.observe_minmax(np.array([[-1.0, 2.0]], np.float32))
    assert (s.min, s.max, s.count, s.shape) == (-1.0, 3.5, 3, (2,))


def test_two_pass_histogram_of_constant_zero_data_has_width():
    s = TensorStats()
    x = np.zeros(10, np.float32)
    s.observe_minmax(x)
    s.observe_hist(x)
    assert s.edges[-1] > s.edges[0] == 0.0 and s.hist.sum() == 10 and s.hist[0] == 10


def test_merged_spans_both_ranges_and_keeps_every_count():
    """Min, max and counts add up; the merged histogram spans both (and 0) and holds every
    count near where it was; without histograms only the min/max/count merge."""
    a, b = TensorStats(), TensorStats()
    a.observe(np.array([1.0, 2.0, 2.0], np.float32))
    b.observe(np.array([[-4.0, -3.0]], np.float32))
    m = a.merged(b)
    assert (m.min, m.max, m.count, m.shape) == (-4.0, 2.0, 5, a.shape)
    assert (m.edges[0], m.edges[-1]) == (-4.0, 2.0) and m.hist.sum() == 5
    below = m.hist[m.edges[1:] <= -2.9].sum()  # -4 and -3
    assert below == 2
    c = TensorStats()
    c.observe_minmax(np.array([0.5, 9.0], np.float32))
    n = a.merged(c)
    assert n.hist is None and (n.min, n.max, n.count) == (0.5, 9.0, 5)


def test_batch_of_scalar_samples_records_an_empty_sample_shape():
    """A tensor of shape [N] holds N scalar samples: its sample shape is (), as the two-sweep
    interface records it, not "never observed" (None)."""
    x = np.array([0.5, -1.0, 2.0], np.float32)
    one_sweep = TensorStats()
    one_sweep.observe(x)
    two_sweep = TensorStats()
    two_sweep.observe_minmax(x)
    assert one_sweep.shape == two_sweep.shape == ()
    assert one_sweep.count == 3


def test_edges_bound_every_bin_in_every_pass():
    """A histogram of N bins has N + 1 edges, from the first observation on, after growth, in
    the two-pass interface and in a merge; the bins tile the range evenly."""
    rng = np.random.default_rng(0)
    one = TensorStats()
    one.observe(rng.normal(size=(4, 8)).astype(np.float32))
    checks = [one]
    grown = TensorStats()
    grown.observe(np.linspace(0, 1, 64, dtype=np.float32).reshape(2, 32))
    grown.observe(np.linspace(-3, 5, 64, dtype=np.float32).reshape(2, 32))  # grows both sides
    checks.append(grown)
    two = TensorStats()
    x = rng.uniform(-2, 3, size=(4, 8)).astype(np.float32)
    two.observe_minmax(x)
    two.observe_hist(x)
    checks += [two, one.merged(grown)]
    for s in checks:
        assert len(s.hist) == N_BINS and len(s.edges) == N_BINS + 1
        widths = np.diff(s.edges)
        assert np.allclose(widths, widths[0])
        assert s.edges[0] <= min(s.min, 0.0) and s.edges[-1] >= max(s.max, 0.0)
    assert one.hist.sum() == 32 and grown.hist.sum() == 128 and two.hist.sum() == 32
