"""Run a session over many samples in batches, respecting fixed batch dimensions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm

from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime.spill import SpilledArray


def session_batch_size(
    session: ort.InferenceSession, wanted: int, data: Iterable[str] | None = None
) -> int:
    """A model whose data inputs (`data`: the inputs fed per sample; None: all of them) have a
    fixed leading dim can only take that many at once. Inputs fed whole (a probe's weights
    and quantizer parameters, shape [4]) say nothing about the batch."""
    return _fixed_batch(session, data) or wanted


def _fixed_batch(session: ort.InferenceSession, data: Iterable[str] | None) -> int | None:
    """The fixed leading dim of the first data input that has one (None: every batch size)."""
    names = None if data is None else set(data)
    for inp in session.get_inputs():
        if names is not None and inp.name not in names:
            continue
        if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0:
            return int(inp.shape[0])
    return None


def _stacked(session: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> list[str]:
    """Inputs held as one whole feed per sample (rank one more than the session's input): the
    model itself has no sample axis there, so they go one sample per run."""
    ranks = {i.name: len(i.shape) for i in session.get_inputs()}
    return [k for k, v in inputs.items() if k in ranks and v.ndim == ranks[k] + 1]


def _feed_plan(
    session: ort.InferenceSession, inputs: dict[str, np.ndarray]
) -> tuple[list[str], int | None]:
    """(inputs held as one whole feed per sample, the batch the model fixes: 1 with such inputs,
    else its fixed leading dim or None)."""
    stacked = _stacked(session, inputs)
    return stacked, (1 if stacked else _fixed_batch(session, inputs))


def batch_step(
    session: ort.InferenceSession, inputs: dict[str, np.ndarray], batch_size: int
) -> int:
    """How many samples run_batches feeds at once: `batch_size`, or the batch the model fixes."""
    return _feed_plan(session, inputs)[1] or batch_size


def run_batches(
    session: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    batch_size: int,
    output_names: list[str] | None = None,
    desc: str | None = None,
    progress: bool = False,
    extra_feeds: dict[str, np.ndarray] | None = None,
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield (start index, outputs) for consecutive batches of the inputs.

    A model with a fixed batch dimension B gets exactly B samples per run: a ragged last
    batch is padded by repeating its own samples and the padding's outputs are cut off,
    so every sample counts once; fewer than B samples in all is an error that says so.
    Inputs held as one whole feed per sample (faaq_onnx.data.stacked_inputs) make B = 1,
    and each run is fed that sample's array as it is; its outputs come back with a sample
    axis in front.
    """
    n = len(next(iter(inputs.values())))
    stacked, fixed_batch = _feed_plan(session, inputs)
    bs = fixed_batch or batch_size
    fixed = fixed_batch is not None
    if fixed and n < bs:
        raise FaaqError(
            f"the model takes batches of exactly {bs} samples, but only {n} were given: "
            f"give at least {bs}"
        )
    starts = range(0, n, bs)
    it = (
        tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch") if desc else starts
    )
    for start in it:
        feed = {k: v[start : start + bs] for k, v in inputs.items()}
        real = len(next(iter(feed.values())))
        if fixed and real < bs:
            take = np.arange(bs) % real
            feed = {k: v[take] for k, v in feed.items()}
        for k in stacked:
            feed[k] = np.asarray(feed[k][0])
        if extra_feeds:
            feed.update(extra_feeds)
        outs = session.run(output_names, feed)
        if stacked:  # one whole output per sample, as the whole feed was one
            outs = [np.asarray(o)[None] for o in outs]
        elif fixed and real < bs:
            outs = [o[:real] if getattr(o, "ndim", 0) and o.shape[0] == bs else o for o in outs]
        yield start, outs


def channel_means(
    session: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    batch_size: int,
    output_names: list[str],
    axis: int = 1,
    extra_feeds: dict[str, np.ndarray] | None = None,
    positions=None,
) -> list[np.ndarray]:
    """Per-channel means of outputs over all samples, summed batch by batch: only one batch of
    them is ever held (all of a model's conv outputs for all samples can pass 10 GB).
    `positions(name, shape of all samples)`: where given, the flattened positions after the
    channel axis (1) an output is averaged over, or None for all of them."""
    sums: list[np.ndarray | None] = [None] * len(output_names)
    counts = [0] * len(output_names)
    total = len(next(iter(inputs.values())))
    for _, outs in run_batches(session, inputs, batch_size, output_names, extra_feeds=extra_feeds):
        for i, o in enumerate(outs):
            at = positions(output_names[i], (total, *o.shape[1:])) if positions else None
            s, n = channel_sums(o, axis, at)
            sums[i] = s if sums[i] is None else sums[i] + s
            counts[i] += n
    if any(s is None for s in sums):
        raise ValueError("channel_means needs at least one sample")
    return [s / c for s, c in zip(sums, counts) if s is not None]


def channel_sums(x, axis: int = 1, positions=None) -> tuple[np.ndarray, int]:
    """(per-channel float64 sums over every axis but `axis`, values per channel), without moving
    `axis` first (a copy of the whole feature map: half the time). A tensor kept in a file
    (runtime.spill) is summed chunk by chunk (chunks split the samples: `axis` must follow).
    `positions`: only these flattened positions after the channel axis (1) of each sample."""
    if isinstance(x, SpilledArray):
        assert axis >= 1, "chunks split axis 0"
        total, count = np.zeros(x.shape[axis]), 0
        for _, rows in x.chunks():
            s, n = channel_sums(rows, axis, positions)
            total, count = total + s, count + n
        return total, count
    x = np.asarray(x)
    y = x.reshape(int(np.prod(x.shape[:axis])), x.shape[axis], -1)
    if positions is not None:
        assert axis == 1, "positions index the axes after the channels of each sample"
        y = y[:, :, positions]
    return y.sum(axis=2, dtype=np.float64).sum(0), y.shape[0] * y.shape[2]


def run_all(
    session: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    batch_size: int = 32,
    output_names: list[str] | None = None,
    extra_feeds: dict[str, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """All outputs for all samples, concatenated along the batch axis."""
    parts: list[list[np.ndarray]] = []
    for _, outs in run_batches(session, inputs, batch_size, output_names, extra_feeds=extra_feeds):
        parts.append(outs)
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def model_outputs(model, inputs: dict[str, np.ndarray], batch_size: int = 32, threads=None):
    """Every output of `model` (a path or a proto) for every sample of `inputs`, in a session
    of its own."""
    from faaq_onnx.runtime.session import make_session  # looked up at call time

    session = make_session(model, threads=threads)
    return run_all(session, inputs, batch_size, [o.name for o in session.get_outputs()])
