"""One-sweep statistics: a histogram whose range grows stays faithful to the data."""

import numpy as np

from faaq_onnx.quant.observers import TensorStats


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
