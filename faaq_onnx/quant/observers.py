"""Running statistics of activation tensors in bounded memory.

Two sweeps over the calibration data: the first finds each tensor's min/max, the
second fills a fixed histogram over that span. Every range setter (percentile, MSE,
entropy) then works on histograms only, so memory does not grow with the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_BINS = 2048


@dataclass
class TensorStats:
    min: float = np.inf
    max: float = -np.inf
    count: int = 0
    shape: tuple[int, ...] | None = None  # one sample's shape, as observed
    hist: np.ndarray | None = field(default=None, repr=False)
    edges: np.ndarray | None = field(default=None, repr=False)

    def observe_minmax(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        self.min = min(self.min, float(np.min(x)))
        self.max = max(self.max, float(np.max(x)))
        self.count += x.size
        if x.ndim >= 1:
            self.shape = tuple(int(d) for d in x.shape[1:])

    def observe_hist(self, x: np.ndarray) -> None:
        if self.hist is None:
            lo, hi = min(self.min, 0.0), max(self.max, 0.0)
            if hi <= lo:
                hi = lo + 1e-8
            self.edges = np.linspace(lo, hi, N_BINS + 1)
            self.hist = np.zeros(N_BINS, np.int64)
        h, _ = np.histogram(x, bins=self.edges)
        self.hist += h

    def merged(self, other: "TensorStats") -> "TensorStats":
        """Union of two tensors' stats (for a scale shared by several tensors)."""
        out = TensorStats(min(self.min, other.min), max(self.max, other.max), self.count + other.count, self.shape)
        if self.hist is not None and other.hist is not None:
            lo, hi = min(out.min, 0.0), max(out.max, 0.0)
            edges = np.linspace(lo, hi, N_BINS + 1)
            hist = np.zeros(N_BINS, np.float64)
            for s in (self, other):
                centres = (s.edges[:-1] + s.edges[1:]) / 2
                h, _ = np.histogram(centres, bins=edges, weights=s.hist)
                hist += h
            out.hist, out.edges = hist, edges
        return out
