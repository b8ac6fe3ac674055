"""Calibrate activation ranges with one ONNX Runtime session.

The session exposes every tensor whose range a quantizer needs as an extra output;
statistics are gathered batch by batch in one sweep (min/max and a fixed-size
histogram), so memory stays bounded whatever the calibration set size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import to_proto
from faaq_onnx.groups import ActivationQuantizer, QuantizerGraph
from faaq_onnx.quant.affine import affine_params
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.observers import TensorStats
from faaq_onnx.quant.range_setters import activation_range
from faaq_onnx.runtime.runner import batch_step, run_batches
from faaq_onnx.runtime.session import make_session


@dataclass
class Calibration:
    stats: dict[str, TensorStats]
    # learned step sizes (BRECQ/LSQ) by (quantizer, bits): they replace the range setter's
    learned: dict[tuple[str, int], float] = field(default_factory=dict)
    data_free: bool = False
    _ranges: dict = field(default_factory=dict, repr=False)

    def quantizer_stats(self, aq: ActivationQuantizer) -> TensorStats:
        parts = [self.stats[t] for t in aq.range_tensors if t in self.stats]
        if not parts:
            raise FaaqError(f"no calibration statistics for {aq.name}")
        out = parts[0]
        for p in parts[1:]:
            out = out.merged(p)
        return out

    def activation_params(
        self,
        aq: ActivationQuantizer,
        bits: int,
        symmetric: bool,
        method: str,
        percentile: float = 99.99,
    ):
        """(scale, zero point, format, lo, hi) of one activation quantizer at a bit width."""
        fmt = IntFormat(bits, signed=symmetric, min_container=8)
        key = (aq.name, bits, symmetric, method, percentile)
        if key not in self._ranges:  # range searches are the slow part; each is done once
            self._ranges[key] = activation_range(
                self.quantizer_stats(aq), fmt, symmetric, method, percentile
            )
        lo, hi = self._ranges[key]
        scale, zp = affine_params(lo, hi, fmt, symmetric)
        learned = self.learned.get((aq.name, bits))
        if learned is not None:  # same zero point, learned step: the grid keeps 0 exact
            scale = np.float32(learned)
            lo, hi = float(scale * (fmt.qmin - zp)), float(scale * (fmt.qmax - zp))
        return float(scale), int(zp), fmt, lo, hi


def tap_model(proto: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of the model that also outputs the given intermediate tensors."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(proto)
    have = {o.name for o in tapped.graph.output} | {i.name for i in tapped.graph.input}
    for name in tensors:
        if name not in have:
            tapped.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            have.add(name)
    return tapped


def calibrate(
    model: ir.Model,
    qgraph: QuantizerGraph,
    inputs: dict[str, np.ndarray],
    batch_size: int = 16,
    progress: bool = False,
) -> Calibration:
    proto = to_proto(model)
    graph_inputs = set(inputs)
    wanted = sorted({t for aq in qgraph.activations.values() for t in aq.range_tensors})
    outputs = [t for t in wanted if t not in graph_inputs]
    stats = {t: TensorStats() for t in wanted}
    session = make_session(tap_model(proto, outputs), opt_level="all") if outputs else None
    for name in wanted:
        if name in graph_inputs:
            arr = inputs[name]
            for i in range(0, len(arr), 256):  # batch by batch, as the session's outputs are
                _observe(stats[name], arr[i : i + 256])
    if session is not None:
        batch = tap_batch_size(
            model,
            outputs,
            batch_size,
            measure=lambda: tapped_bytes_per_sample(session, inputs, outputs),
        )
        step, n = batch_step(session, inputs, batch), len(next(iter(inputs.values())))
        for start, outs in run_batches(
            session, inputs, batch, outputs, desc="calibrate", progress=progress
        ):
            rows = min(step, n - start)
            for name, arr in zip(outputs, outs):
                # axis 0 holds the batch's samples, or something else (a [seq, batch, hidden]
                # layout, heads folded into the batch): then no element may be left out
                _observe(stats[name], arr, np.ndim(arr) >= 1 and np.shape(arr)[0] == rows)
    if any(s.unbounded for s in stats.values()):
        bad = _non_finite_input(inputs)
        if bad is not None:  # the data's fault, not the model's: one line, stop
            raise FaaqError(
                f"calibration data holds non-finite values in input {bad!r}; check the calibration data"
            )
    # otherwise the model itself drives the tensor to ±inf from finite data (an attention mask
    # added to scores): its range stays infinite and prune_quantizers leaves it float, named
    return Calibration(stats)


def _non_finite_input(inputs: dict[str, np.ndarray]) -> str | None:
    """The first input holding ±inf or NaN, read 256 samples at a time (lazy inputs stay lazy)."""
    for name, arr in inputs.items():
        for i in range(0, len(arr), 256):
            part = np.asarray(arr[i : i + 256])
            if part.dtype.kind == "f" and not np.isfinite(part).all():
                return name
    return None


TAP_BATCH_BYTES = 256 << 20  # tapped outputs held at once during calibration
# ... and never more than this, whatever the floor: ORT holds every tapped output of a batch,
# and its copies come on top (ResNet-50, 67 MB of tapped tensors a sample: 5.5 GB peak RSS at
# batch 16, 2.4 GB at 4, in the same time)
TAP_MAX_BYTES = 512 << 20


def tap_batch_size(
    model: ir.Model, tensors: list[str], floor: int, ceiling: int = 256, measure=None
) -> int:
    """A batch whose tapped outputs fit TAP_BATCH_BYTES (larger batches run faster in ORT), at
    least `floor` unless that would pass TAP_MAX_BYTES. Where the graph's shapes do not say how
    large a sample's outputs are (symbolic dimensions, as other exporters write them), `measure()`
    says (tapped_bytes_per_sample); without it, `floor`. PP-OCRv4's recognizer from Paddle2ONNX
    held 5.9 GB at the floor of 16 and 1.6 GB at 4."""
    per_sample = _static_bytes_per_sample(model, tensors)
    if per_sample is None:
        if measure is None:
            return floor
        per_sample = measure()
    batch = max(floor, min(ceiling, TAP_BATCH_BYTES // max(per_sample, 1)))
    if batch * per_sample > TAP_MAX_BYTES:
        batch = max(1, TAP_MAX_BYTES // max(per_sample, 1))
    return int(batch)


def _static_bytes_per_sample(model: ir.Model, tensors: list[str]) -> int | None:
    """Bytes of one sample's tapped float outputs, from the graph's shapes; None where one is
    missing or has a symbolic dimension after the first."""
    values = {v.name: v for n in model.graph for v in n.outputs if v is not None}
    per_sample = 0
    for t in tensors:
        v = values.get(t)
        dims = list(v.shape) if v is not None and v.shape is not None else None
        sizes = [d for d in dims[1:] if isinstance(d, int)] if dims else []
        if not dims or len(sizes) < len(dims) - 1:
            return None
        per_sample += 4 * int(np.prod(sizes))
    return per_sample


def tapped_bytes_per_sample(session, inputs: dict[str, np.ndarray], tensors: list[str]) -> int:
    """Bytes of one sample's outputs `tensors`, measured on the first sample (or the first batch
    of a model that takes a fixed batch)."""
    for _, outs in run_batches(session, inputs, 1, tensors):
        rows = max(len(outs[0]) if outs and np.ndim(outs[0]) else 1, 1)
        return int(sum(np.asarray(o).nbytes for o in outs) // rows)
    return 0


def _observe(s: TensorStats, arr: np.ndarray, by_sample: bool = True) -> None:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        s.observe(arr, by_sample)
