"""Running statistics of activation tensors in bounded memory.

One sweep over the calibration data: each tensor's min/max and a fixed-size histogram
whose range grows (re-binning) when a batch exceeds it. Every range setter (percentile, MSE,
entropy) then works on histograms only, so memory does not grow with the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_BINS = 2048
HIST_SAMPLE = 1 << 20  # elements per batch that go into the histogram (a strided sample beyond)


@dataclass
class TensorStats:
    min: float = np.inf
    max: float = -np.inf
    count: int = 0
    shape: tuple[int, ...] | None = None  # one sample's shape, as observed
    hist: np.ndarray | None = field(default=None, repr=False)
    edges: np.ndarray | None = field(default=None, repr=False)

    @property
    def unbounded(self) -> bool:
        """Non-finite values were seen (min/max are then -inf/inf)."""
        return self.count > 0 and np.isinf(self.min)

    def observe(self, x: np.ndarray) -> None:
        """One pass: min/max, count, and a histogram over the range seen so far.

        When a batch falls outside the current histogram range, the range grows (by a
        quarter of its span beyond what the batch needs, so growth is rare) and the
        counts are re-binned onto the new edges: one sweep over the data instead of two.
        """
        if x.size == 0:
            return
        x = np.asarray(x, np.float32)
        lo_b, hi_b = float(x.min()), float(x.max())
        if self.unbounded or not (np.isfinite(lo_b) and np.isfinite(hi_b)):
            # ±inf or NaN (an attention mask of -3.4e38 added to scores overflows): no grid
            # carries it; the range stays infinite, with no histogram
            self.min, self.max, self.hist, self.edges = -np.inf, np.inf, None, None
            self.count += x.size
            return
        self.min, self.max = min(self.min, lo_b), max(self.max, hi_b)
        self.count += x.size
        if x.ndim >= 1:
            self.shape = tuple(int(d) for d in x.shape[1:])
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        if self.hist is None or self.edges is None:  # set together
            self.edges = np.linspace(lo, hi if hi > lo else lo + 1e-8, N_BINS + 1)
            self.hist = np.zeros(N_BINS, np.int64)
        elif lo < self.edges[0] or hi > self.edges[-1]:
            self._grow(lo, hi)
        a, b = float(self.edges[0]), float(self.edges[-1])
        flat = x.reshape(-1)
        if (
            flat.size > HIST_SAMPLE
        ):  # the shape of the distribution needs a sample; min/max above are exact
            flat = flat[:: flat.size // HIST_SAMPLE]
        step = 1 << 20  # bounded temporaries, whatever the batch
        for i in range(0, flat.size, step):
            idx = ((flat[i : i + step] - np.float32(a)) * np.float32(N_BINS / (b - a))).astype(
                np.int32
            )
            np.clip(idx, 0, N_BINS - 1, out=idx)
            self.hist += np.bincount(idx, minlength=N_BINS)

    def _grow(self, lo: float, hi: float) -> None:
        assert self.edges is not None and self.hist is not None
        a, b = float(self.edges[0]), float(self.edges[-1])
        span = max(hi, b) - min(lo, a)
        new_lo = min(a, lo - 0.25 * span) if lo < a else a
        new_hi = max(b, hi + 0.25 * span) if hi > b else b
        new_lo, new_hi = min(new_lo, 0.0) if a <= 0 else new_lo, new_hi
        edges = np.linspace(new_lo, new_hi, N_BINS + 1)
        centres = (self.edges[:-1] + self.edges[1:]) / 2
        where = np.clip(
            ((centres - new_lo) * (N_BINS / (new_hi - new_lo))).astype(np.int64), 0, N_BINS - 1
        )
        self.hist = np.bincount(where, weights=self.hist, minlength=N_BINS).astype(np.int64)
        self.edges = edges

    # the two-sweep interface, kept for callers that already know the range
    def observe_minmax(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        self.min = min(self.min, float(np.min(x)))
        self.max = max(self.max, float(np.max(x)))
        self.count += x.size
        if x.ndim >= 1:
            self.shape = tuple(int(d) for d in x.shape[1:])

    def observe_hist(self, x: np.ndarray) -> None:
        if self.hist is None or self.edges is None:  # set together
            lo, hi = min(self.min, 0.0), max(self.max, 0.0)
            if hi <= lo:
                hi = lo + 1e-8
            self.edges = np.linspace(lo, hi, N_BINS + 1)
            self.hist = np.zeros(N_BINS, np.int64)
        h, _ = np.histogram(x, bins=N_BINS, range=(self.edges[0], self.edges[-1]))
        self.hist += h

    def merged(self, other: TensorStats) -> TensorStats:
        """Union of two tensors' stats (for a scale shared by several tensors)."""
        out = TensorStats(
            min(self.min, other.min), max(self.max, other.max), self.count + other.count, self.shape
        )
        if self.hist is not None and other.hist is not None:
            lo, hi = min(out.min, 0.0), max(out.max, 0.0)
            edges = np.linspace(lo, hi, N_BINS + 1)
            hist = np.zeros(N_BINS, np.float64)
            for s in (self, other):
                assert s.edges is not None  # set with hist
                centres = (s.edges[:-1] + s.edges[1:]) / 2
                h, _ = np.histogram(centres, bins=edges, weights=s.hist)
                hist += h
            out.hist, out.edges = hist, edges
        return out
