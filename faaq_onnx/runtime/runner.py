"""Run a session over many samples in batches, respecting fixed batch dimensions."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm


def session_batch_size(session: ort.InferenceSession, wanted: int) -> int:
    """A model whose inputs have a fixed leading dim can only take that many at once."""
    for inp in session.get_inputs():
        if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0:
            return int(inp.shape[0])
    return wanted


def run_batches(
    session: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    batch_size: int,
    output_names: list[str] | None = None,
    desc: str | None = None,
    progress: bool = False,
    extra_feeds: dict[str, np.ndarray] | None = None,
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield (start index, outputs) for consecutive batches of the inputs."""
    n = len(next(iter(inputs.values())))
    bs = session_batch_size(session, batch_size)
    starts = range(0, n, bs)
    it = tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch") if desc else starts
    for start in it:
        feed = {k: v[start : start + bs] for k, v in inputs.items()}
        if bs != batch_size and len(next(iter(feed.values()))) < bs:
            continue  # fixed-batch model and a ragged tail: drop it rather than fail
        if extra_feeds:
            feed.update(extra_feeds)
        yield start, session.run(output_names, feed)


def run_all(session: ort.InferenceSession, inputs: dict[str, np.ndarray], batch_size: int = 32,
            output_names: list[str] | None = None, extra_feeds: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """All outputs for all samples, concatenated along the batch axis."""
    parts: list[list[np.ndarray]] = []
    for _, outs in run_batches(session, inputs, batch_size, output_names, extra_feeds=extra_feeds):
        parts.append(outs)
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
