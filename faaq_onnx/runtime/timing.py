"""Latency of several models measured interleaved, so load from other processes hits all alike."""

from __future__ import annotations

import random
import time

import numpy as np

from faaq_onnx.runtime.session import make_session


def interleaved_median_ms(
    models,
    feeds: dict[str, np.ndarray],
    ep: str = "cpu",
    pairs: int = 30,
    warmup: int = 5,
    threads: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Median ms per run of each model; one run of each per round, `pairs` rounds.

    The order is shuffled every round and the sessions do not spin, so no model is timed
    always right after the same other one while that one's threads still hold the cores.
    """
    sessions = [make_session(m, ep=ep, threads=threads, spinning=False) for m in models]
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feeds)
    times: list[list[float]] = [[] for _ in sessions]
    rng = random.Random(seed)
    order = list(range(len(sessions)))
    for _ in range(pairs):
        rng.shuffle(order)
        for i in order:
            t0 = time.perf_counter()
            sessions[i].run(None, feeds)
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) * 1e3 for t in times]
