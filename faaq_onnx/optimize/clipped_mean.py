"""The bias shift that matches a channel's mean after its Relu/Clip, not before it.

A layer followed by Relu, LeakyRelu or Clip is read by the next layer only through that
activation's output. Matching its mean before the clip (what plain bias correction does) counts
the error of values the clip throws away: a depthwise channel mostly below zero, whose
quantized values err further below zero, gets shifted down, and the values in the clip's linear
range, the only ones the next layer reads, move with it. EfficientNet-Lite0's `practical` plan
at bops=0.281@w8a16 (W4A8/W8A8): corrected that way, every Clip output's mean error grew
(|error| 0.036 against 0.015 uncorrected after block 12's depthwise conv), the 1x1 projections
summed it over their 1,152 input channels, and the logits' SQNR fell to 1.7 dB (9.2
uncorrected). Here the shift b solves mean(clip(q + b, lo, hi)) = mean(float clipped output)
per channel, the solution nearest zero where several do.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from faaq_onnx.runtime.spill import SpilledArray

SAMPLE_PER_CHANNEL = 1 << 15  # values per channel the clipped mean is solved on, at most
SAMPLE_VALUES = 1 << 23  # ... and over all of a layer's channels
_BISECTIONS = 48


def sample_positions(shape, seed: int = 0) -> np.ndarray | None:
    """The positions (indices into the flattened axes after the channels) channel_sample takes
    from a [samples, channels, ...] tensor of `shape` in every sample; None where it takes every
    value. The same for any tensor of that shape: the float model's mean over these positions
    is the target the quantized values sampled there are matched to (sampled_positions_of).
    Drawn once per shape (read-only): a layer-by-layer run asks again for every batch."""
    return _positions(tuple(int(d) for d in shape), seed, SAMPLE_PER_CHANNEL, SAMPLE_VALUES)


@functools.lru_cache(maxsize=256)
def _positions(shape: tuple, seed: int, per_channel_max: int, values_max: int):
    n, c = shape[0], shape[1]
    positions = int(np.prod(shape[2:], dtype=np.int64))
    per_channel = min(per_channel_max, max(1, values_max // max(c, 1)))
    keep = max(1, min(positions, -(-per_channel // n)))
    if keep >= positions:
        return None
    idx = np.sort(np.random.default_rng(seed).choice(positions, keep, replace=False))
    idx.flags.writeable = False
    return idx


def sampled_positions_of(names):
    """For runtime.runner.channel_means / SegmentedRun.watch: the tensors of `names` averaged over
    channel_sample's positions only, so that the float mean a clipped layer's quantized sample is
    matched to is taken over the same values. Against the mean over every value, the difference
    was sampling noise as large as the correction itself in EfficientNet-Lite0's first layers (RMS
    over channels 0.017 against 0.019 for the stem, 0.115 against 0.174 for block 2's depthwise)."""
    names = set(names)

    def positions(name: str, shape) -> np.ndarray | None:
        return sample_positions(shape) if name in names and len(shape) >= 3 else None

    return positions


def channel_sample(x, seed: int = 0) -> np.ndarray:
    """(channels, k) values of a [samples, channels, ...] tensor (a SpilledArray read chunk by
    chunk): every value where that fits SAMPLE_PER_CHANNEL / SAMPLE_VALUES, else the same
    random positions in every sample (random, not strided: a stride keeps one parity of
    columns, and those can differ)."""
    c = x.shape[1]
    positions = int(np.prod(x.shape[2:], dtype=np.int64))
    idx = sample_positions(x.shape, seed)
    parts = []
    chunks = x.chunks() if isinstance(x, SpilledArray) else [(0, np.asarray(x))]
    for _, rows in chunks:
        rows = rows.reshape(len(rows), c, positions)
        parts.append(rows if idx is None else rows[:, :, idx])
    values = np.concatenate(parts, axis=0)  # (n, c, keep)
    return np.ascontiguousarray(values.transpose(1, 0, 2).reshape(c, -1))


def clipped_mean_shift(
    values: np.ndarray, target: np.ndarray, low: float, high: float, slope: float = 0.0
) -> np.ndarray:
    """Per channel (rows of `values`), the shift b nearest zero with
    mean(clip(values + b, low, high)) = target (bisection on the sorted values: each step
    is a search per channel, not a pass over them). `slope` > 0: below `low` the activation
    goes on at that slope instead of staying at `low` (LeakyRelu: low 0, high inf)."""
    c, k = values.shape
    # sorted in float32 (2.5x faster than float64), summed in float64
    s = np.sort(np.asarray(values, np.float32), axis=1).astype(np.float64)
    sums = np.zeros((c, k + 1))
    np.cumsum(s, axis=1, out=sums[:, 1:])  # in place: no copy of every value to join a 0 column
    t = np.asarray(target, np.float64)
    finite = [abs(v) for v in (low, high) if np.isfinite(v)]
    largest = np.maximum(np.abs(s[:, 0]), np.abs(s[:, -1]))  # sorted rows: at either end
    reach = largest + np.abs(t) + sum(finite) + 1.0  # |b| that reaches any target
    if slope > 0:  # below `low` the mean moves at `slope` per unit of b
        reach = reach + np.abs(t) / slope
    # one sorted array for all channels: row r shifted into a band of its own
    lowest = min(float(s[:, 0].min()), 0.0) - float(reach.max()) - sum(finite) - 1.0
    width = max(float(s[:, -1].max()), 0.0) + float(reach.max()) + sum(finite) + 1.0 - lowest
    offsets = np.arange(c) * width - lowest
    flat = (s + offsets[:, None]).ravel()
    first = np.arange(c) * k

    def count(x: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
        return np.clip(np.searchsorted(flat, x + offsets, side=side) - first, 0, k)

    def mean(b: np.ndarray) -> np.ndarray:
        below = count(low - b, "left")  # values + b < low
        within = count(high - b, "right")  # values + b <= high
        rows = np.arange(c)
        middle = sums[rows, within] - sums[rows, below] + (within - below) * b
        with np.errstate(invalid="ignore"):  # inf * 0 in the branch np.where drops
            leak = slope * (sums[rows, below] + below * (b - low))
            lows = np.where(below > 0, low * below + leak, 0.0)
            highs = np.where(within < k, high * (k - within), 0.0)
        return (lows + middle + highs) / k

    at_zero = mean(np.zeros(c))
    up = at_zero < t
    lo = np.where(up, 0.0, -reach)
    hi = np.where(up, reach, 0.0)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        m = mean(mid)
        above = np.where(up, m >= t, m > t)
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    b = np.where(up, hi, lo)
    return np.where(at_zero == t, 0.0, b).astype(np.float32)
