import numpy as np
import pytest

from faaq_onnx.optimize.clipped_mean import channel_sample, clipped_mean_shift
from faaq_onnx.runtime.spill import SpilledArray


def _act(x, low, high, slope):
    return np.where(x < low, low + slope * (x - low), np.minimum(x, high))


@pytest.mark.parametrize(
    "low,high,slope",
    [(0.0, 6.0, 0.0), (0.0, np.inf, 0.0), (-1.0, 1.0, 0.0), (0.0, np.inf, 0.1), (0.0, 6.0, 0.01)],
)
def test_the_shift_that_matches_the_clipped_mean(low, high, slope):
    """Values shifted by a known b per channel: the solver finds b back from the mean after the
    activation (Clip, Relu, LeakyRelu), and the plain mean shift is not it."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal((5, 4000)).astype(np.float32) * 2 - 0.5
    b = np.array([0.3, -0.4, 0.0, 1.2, -0.05], np.float32)
    target = _act(v + b[:, None], low, high, slope).mean(1)
    got = clipped_mean_shift(v, target, low, high, slope)
    np.testing.assert_allclose(got, b, atol=1e-5)
    np.testing.assert_allclose(_act(v + got[:, None], low, high, slope).mean(1), target, atol=1e-6)


def test_a_shift_that_any_large_value_meets_is_the_smallest():
    """A channel whose float output is all clipped (a dead Relu channel, mean 0) has every shift
    below some value as a solution: the one nearest zero is taken, not the bisection's far end.
    A channel already matched stays unshifted."""
    v = np.array([[-3.0, -1.0, 0.5, 1.5], [0.0, 1.0, 2.0, 3.0]], np.float32)
    got = clipped_mean_shift(v, np.array([0.0, 1.5]), 0.0, np.inf)
    np.testing.assert_allclose(got, [-1.5, 0.0], atol=1e-6)


def test_channel_sample_takes_every_value_or_the_same_random_positions(tmp_path, monkeypatch):
    import faaq_onnx.optimize.clipped_mean as cm

    x = np.arange(4 * 3 * 5 * 2, dtype=np.float32).reshape(4, 3, 5, 2)
    whole = channel_sample(x)
    assert whole.shape == (3, 40)
    np.testing.assert_array_equal(np.sort(whole[1]), np.sort(x[:, 1].ravel()))
    spilled = SpilledArray(4, (3, 5, 2), np.float32, folder=str(tmp_path))
    spilled.write(0, x)
    np.testing.assert_array_equal(channel_sample(spilled), whole)
    monkeypatch.setattr(cm, "SAMPLE_PER_CHANNEL", 8)  # 2 of 10 positions per sample
    part = channel_sample(x)
    assert part.shape == (3, 8)
    positions = (part[0] % 10).reshape(4, 2)  # position within the sample's 10 values
    assert (positions == positions[0]).all() and len(set(positions[0])) == 2
