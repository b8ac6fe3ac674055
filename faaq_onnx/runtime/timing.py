"""Latency of several models measured interleaved, so load from other processes hits all alike."""

from __future__ import annotations

import time

import numpy as np

from faaq_onnx.runtime.session import make_session


def interleaved_median_ms(models, feeds: dict[str, np.ndarray], ep: str = "cpu", pairs: int = 30, warmup: int = 5,
                          threads: int | None = None) -> list[float]:
    """Median ms per run of each model; one run of each in turn, `pairs` rounds."""
    sessions = [make_session(m, ep=ep, threads=threads) for m in models]
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(pairs):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) * 1e3 for t in times]
