"""Tensors of a graph in graph order, each computed from the ones computed before it.

Layer-by-layer passes (GPTQ with the quantized model's inputs) ask for one layer's input
at a time, in graph order, while the weights upstream keep changing. Running the model
from its input for each layer costs about half the model per layer (ProbeSession's
prefix sessions): quadratic in depth, 75 % of GPTQ's time on EfficientNet-Lite0. Here
each request runs only the nodes not run before, from the tensors earlier requests left
behind (kept for every sample, while a node not yet run still reads them): linear in
depth. A node runs once, so a request must come after every weight its nodes read is
final: in graph order, a layer's weight is read only by requests after that layer.

Only float tensors with a sample axis (axis 0 follows the batch) are kept; anything
else a later node needs (shapes, constants) is computed again from what is kept. One of at
least SPILL_BYTES is kept in a file (runtime.spill): memory then no longer grows with the
number of samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from faaq_onnx.graph import ancestor_nodes, prefix_model, reader_index
from faaq_onnx.runtime.runner import channel_sums, run_batches, session_batch_size
from faaq_onnx.runtime.session import make_session
from faaq_onnx.runtime.spill import SPILL_BYTES, SpilledArray

_ELEM = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.float16): onnx.TensorProto.FLOAT16,
}


class SegmentedRun:
    """Produce tensors of `model` for every sample of `inputs`, in graph order. `feeds` gives,
    when a request runs, the values of the model's other inputs (weights, quantizer
    parameters) for the nodes it runs."""

    def __init__(
        self,
        model: onnx.ModelProto,
        inputs: dict[str, np.ndarray],
        batch_size: int = 32,
        feeds: Callable[[], dict[str, np.ndarray]] | None = None,
        threads: int | None = None,
    ) -> None:
        # a model exported for a fixed batch (a Reshape to [1, -1] behind its data input) takes
        # that many samples at once in every segment, whatever the kept tensors declare
        self.model, self.threads = model, threads
        self.fixed_batch = _fixed_batch(model, inputs)
        self.batch_size = self.fixed_batch or batch_size
        self.feeds = feeds or dict
        self.kept: dict[str, np.ndarray] = dict(inputs)
        self.model_inputs = set(inputs)
        self.n = len(next(iter(inputs.values())))
        self.nodes = list(model.graph.node)
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.readers = reader_index(self.nodes)
        self.done: set[int] = set()
        self.graph_inputs = {i.name: i for i in model.graph.input}
        # per-channel sums of watched tensors, taken batch by batch as they are computed: a mean
        # without reading back a tensor kept in a file
        self.watched: set[str] = set()
        self._positions = None
        self._sums: dict[str, tuple[np.ndarray, int]] = {}

    def watch(self, names, positions=None) -> None:
        """Sum `names` per channel (axis 1) as they are computed (channel_mean); `positions`
        (name, shape of all samples) -> the positions after the channel axis summed, or None for
        all (runner.channel_means)."""
        self.watched |= set(names)
        self._positions = positions or self._positions

    def channel_mean(self, name: str) -> np.ndarray | None:
        """The per-channel mean over every sample of a watched tensor once computed, else None."""
        if name not in self._sums:
            return None
        total, count = self._sums[name]
        return total / max(count, 1)

    def kept_bytes(self) -> int:
        return sum(v.nbytes for k, v in self.kept.items() if k not in self.model_inputs)

    def get(self, name: str, lazy: bool = False):
        """`name` for every sample, running only the nodes not run yet. `lazy`: a tensor kept in a
        file comes back as that SpilledArray (for callers that read it a slice at a time)."""
        value = self._get(name)
        return value if lazy or not isinstance(value, SpilledArray) else np.asarray(value)

    def _get(self, name: str):
        if name in self.kept:
            return self.kept[name]
        nodes = {
            self.index[id(n)] for n in ancestor_nodes([name], self.producer, stop=self.kept.keys())
        }
        produced = {o for i in nodes for o in self.nodes[i].output if o}
        later = [
            t
            for t in sorted(produced)
            if t == name
            or any(r not in self.done and r not in nodes for r in self.readers.get(t, []))
        ]
        segment = prefix_model(self.model, later, given=self.cut())
        cut = [i.name for i in segment.graph.input if i.name in self.kept]
        _as_constants(segment, {k: v for k, v in self.feeds().items() if k not in cut})
        session = make_session(segment, opt_level="extended", threads=self.threads)
        gathered = {t: _Gathered(self.n) for t in later}
        for t in self.watched.intersection(later):
            self._sums.pop(t, None)
        step = session_batch_size(session, self.batch_size, cut)
        for start, outs in run_batches(
            session, {t: self.kept[t] for t in cut}, self.batch_size, later
        ):
            rows = min(step, self.n - start)
            for t, v in zip(later, outs):
                gathered[t].add(start, rows, v)
                if t in self.watched and np.ndim(v) >= 2:
                    self._add_sums(t, np.asarray(v))
        for t in later:
            if gathered[t].per_sample:
                self.kept[t] = gathered[t].array()
        self.done |= nodes
        for t in later:  # not kept: whoever reads it later computes it again
            if not gathered[t].per_sample:
                self.done.discard(self.index[id(self.producer[t])])
        self._forget()
        if name not in self.kept:
            return gathered[name].array()
        return self.kept[name]

    def _add_sums(self, name: str, v: np.ndarray) -> None:
        at = self._positions(name, (self.n, *v.shape[1:])) if self._positions else None
        total, count = channel_sums(v, 1, at)
        if name in self._sums:
            total, count = total + self._sums[name][0], count + self._sums[name][1]
        self._sums[name] = (total, count)

    def shift(self, name: str, delta: np.ndarray, axis: int = 1) -> None:
        """Add `delta` along `axis` of the kept `name` (a bias changed after its layer ran: what
        later nodes read becomes what the layer now computes). Nothing if `name` is not kept."""
        if name in self.kept:
            kept = self.kept[name]
            shape = [1] * kept.ndim
            shape[axis] = -1
            step = np.asarray(delta, kept.dtype).reshape(shape)
            if isinstance(kept, SpilledArray):
                kept.add_(step)  # in its file, a chunk at a time
            else:  # in place: the kept array is this run's own (filled from its batches), and a
                # copy of every sample's feature map per corrected layer cost 2 s on EfficientNet-Lite0
                np.add(kept, step, out=kept)

    def cut(self) -> dict[str, onnx.ValueInfoProto]:
        """The kept tensors, as the inputs of a model that goes on from here (graph.prefix_model's
        `given`). Their sample axis is declared as the model's fixed batch where it has one: a
        session built from the cut then runs at that batch whoever runs it (run_batches reads it
        from the inputs), for a tensor that only looks like it has a sample axis (a recurrent
        state [1, hidden] behind a batch-1 input, silero-vad's 16 kHz model) must go back in
        batches of the size it was computed in."""
        return {t: self._info(t) for t in self.kept}

    def _info(self, t: str) -> onnx.ValueInfoProto:
        if t in self.graph_inputs:
            return self.graph_inputs[t]
        v = self.kept[t]
        elem = _ELEM.get(v.dtype, onnx.helper.np_dtype_to_tensor_dtype(v.dtype))
        return helper.make_tensor_value_info(t, elem, [self.fixed_batch or "n", *v.shape[1:]])

    def _forget(self) -> None:
        """Drop kept tensors no node still to run reads (the model's inputs stay)."""
        for t in list(self.kept):
            if t in self.model_inputs:
                continue
            if all(r in self.done for r in self.readers.get(t, [])):
                del self.kept[t]  # a file behind it goes with the last reference (SpilledArray)


class _Gathered:
    """One output of a segment over every batch. A float tensor with a sample axis goes straight
    into one array for all the samples (joining the batches afterwards held every sample's
    feature map twice at the peak); anything else is kept as its batches and joined."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.per_sample = True
        self.buffer: np.ndarray | SpilledArray | None = None
        self.parts: list[np.ndarray] = []

    def add(self, start: int, rows: int, v: np.ndarray) -> None:
        fits = v.dtype in _ELEM and v.ndim >= 1 and len(v) == rows
        if self.per_sample and fits and (self.buffer is None or self._matches(v)):
            if self.buffer is None:
                size = self.n * v.itemsize * int(np.prod(v.shape[1:], dtype=np.int64))
                self.buffer = (
                    SpilledArray(self.n, v.shape[1:], v.dtype)
                    if size >= SPILL_BYTES
                    else np.empty((self.n, *v.shape[1:]), v.dtype)
                )
            if isinstance(self.buffer, SpilledArray):
                self.buffer.write(start, v)
            else:
                self.buffer[start : start + rows] = v
            return
        if self.per_sample and self.buffer is not None:  # no sample axis after all
            self.parts = [self.buffer[:start]]
            self.buffer = None
        self.per_sample = False
        self.parts.append(v)

    def _matches(self, v: np.ndarray) -> bool:
        assert self.buffer is not None
        return self.buffer.dtype == v.dtype and self.buffer.shape[1:] == v.shape[1:]

    def array(self):
        return self.buffer if self.buffer is not None else np.concatenate(self.parts)


def _as_constants(segment: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    """The segment's overridable inputs among `values` (weights, quantizer parameters) become
    its constants: a node runs once, after every weight it reads is final (the class's
    contract), so nothing is lost, and ORT can then pre-pack the weights for its fast
    convolutions (NCHWc), which a weight fed at run time never gets."""
    read = {i.name for i in segment.graph.input} & set(values)
    if not read:
        return
    kept_inputs = [i for i in segment.graph.input if i.name not in read]
    inits = [t for t in segment.graph.initializer if t.name not in read]
    inits += [numpy_helper.from_array(np.asarray(values[n]), n) for n in sorted(read)]
    del segment.graph.input[:]
    segment.graph.input.extend(kept_inputs)
    del segment.graph.initializer[:]
    segment.graph.initializer.extend(inits)


def _fixed_batch(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> int | None:
    """The fixed leading dim of the model's data inputs fed in batches (None: any batch).
    Inputs fed one whole feed per sample (rank one more than declared) say nothing."""
    for i in model.graph.input:
        v = inputs.get(i.name)
        dims = i.type.tensor_type.shape.dim
        if v is None or not dims or v.ndim != len(dims):
            continue
        if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
    return None
