"""Empirical bias correction (seed 001): quantization shifts each output channel's mean.

For every Conv/Gemm/ConvTranspose with a bias, in graph order, the mean of its output per
channel is measured on the float model and on the quantized model (the probe, with the plan's
weights and activations and every correction made so far upstream), and the difference is added
to the bias. A layer read only through a Relu, LeakyRelu, HardSigmoid or Clip gets the mean of
that activation's output matched instead (optimize.clipped_mean: the error of values the clip
drops does not reach the next layer). The quantized model runs once in all: layer by layer from
what the previous layers left (runtime.segments), each layer's kept output shifted by its
correction before anything downstream reads it. The correction lands in the float bias before
it is quantized to int32, so the emitted graph keeps its fused QLinearConv/QGemm: onnxsim's
correct_bias inserts an Add after each layer instead, and ORT then runs all 19 convolutions of
a ResNet-20 W4A8 in float (measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import numpy_helper

from faaq_onnx.analysis.calibrate import tap_batch_size, tap_model, tapped_bytes_per_sample
from faaq_onnx.analysis.probe import build_probe, probe_feeds
from faaq_onnx.graph import constant_tensors, reader_index
from faaq_onnx.optimize.clipped_mean import (
    channel_sample,
    clipped_mean_shift,
    sampled_positions_of,
)
from faaq_onnx.plan import BitPlan
from faaq_onnx.quant.bias import bias_on_grid
from faaq_onnx.runtime.runner import channel_means, channel_sums
from faaq_onnx.runtime.segments import SegmentedRun
from faaq_onnx.runtime.session import make_session

BIASED_OPS = ("Conv", "ConvTranspose", "Gemm")


def correction_targets(comp) -> list[tuple[str, str, str, int]]:
    """(node, output tensor, bias initializer, channel axis) of every layer that can be corrected."""
    out = []
    for node in comp.float_proto.graph.node:
        if node.op_type not in BIASED_OPS or len(node.input) < 3 or not node.input[2]:
            continue
        w = node.input[1]
        if w not in comp.qgraph.weights or comp.qgraph.weights[w].bias != node.input[2]:
            continue
        out.append((node.name, node.output[0], node.input[2], 1))
    return out


@dataclass(frozen=True)
class ClippedActivation:
    """The activation a layer is read through: scale · f(x) + offset, f the identity clipped to
    [low, high] with `slope` below low (Relu: 0, inf; Clip: its bounds; LeakyRelu: 0, inf, alpha;
    HardSigmoid: alpha x + beta clipped to [0, 1], i.e. scale alpha, offset beta, the bounds
    moved to x's scale)."""

    output: str
    low: float
    high: float
    slope: float = 0.0
    scale: float = 1.0
    offset: float = 0.0

    def clip_target(self, mean: np.ndarray) -> np.ndarray:
        """The mean f's output must have for the activation's to be `mean`."""
        return (np.asarray(mean, np.float64) - self.offset) / self.scale


def clipping_activations(proto, outputs) -> dict[str, ClippedActivation]:
    """{layer output: its ClippedActivation} for each of `outputs` read by nothing but one
    Relu, LeakyRelu, HardSigmoid or Clip with constant bounds: what the next layer reads."""
    consts = constant_tensors(proto.graph)
    nodes = list(proto.graph.node)
    readers = reader_index(nodes)
    graph_outputs = {o.name for o in proto.graph.output}
    found = {}
    for out in outputs:
        rs = readers.get(out, [])
        if len(rs) != 1 or out in graph_outputs:
            continue
        act = _clipped(nodes[rs[0]], consts)
        if act is not None:
            found[out] = act
    return found


def _clipped(node, consts) -> ClippedActivation | None:
    attrs = {a.name: a.f for a in node.attribute}
    out = node.output[0]
    if node.op_type == "Relu":
        return ClippedActivation(out, 0.0, np.inf)
    if node.op_type == "LeakyRelu":
        alpha = attrs.get("alpha", 0.01)
        return ClippedActivation(out, 0.0, np.inf, slope=alpha) if alpha >= 0 else None
    if node.op_type == "HardSigmoid":
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        if alpha <= 0:
            return None
        return ClippedActivation(out, -beta / alpha, (1 - beta) / alpha, scale=alpha, offset=beta)
    if node.op_type != "Clip":
        return None
    bounds = [attrs.get("min", -np.inf), attrs.get("max", np.inf)]  # opset < 11: attributes
    for k, name in enumerate(node.input[1:3]):
        if not name:
            continue
        value = numpy_helper.to_array(consts[name]) if name in consts else None
        if value is None or value.size != 1:
            return None
        bounds[k] = float(value.reshape(()))
    return ClippedActivation(out, bounds[0], bounds[1])


def bias_corrections(comp, plan: BitPlan, samples: int = 256) -> dict[str, np.ndarray]:
    """{bias name: corrected bias} for `plan`, layer by layer, in one run of its model."""
    inputs = {k: v[:samples] for k, v in comp.inputs.items()}
    fix = LayerBiasCorrection(comp, inputs, plan.choices)
    if not fix.targets:
        return {}
    weights, acts = comp.feeds.feeds(plan.choices)
    feeds = probe_feeds(comp.qgraph.activations, weights, acts)
    probe = build_probe(comp.float_proto, comp.qgraph)
    run = SegmentedRun(probe, inputs, max(comp.config.batch_size, 32), feeds=lambda: feeds)
    for node in fix.targets:
        fix.correct(node, run)
    return fix.corrected


def _channel_mean(x, axis: int, positions=None) -> np.ndarray:
    s, n = channel_sums(x, axis, positions)
    return s / max(n, 1)


def float_channel_means(
    comp, outs: list[str], inputs: dict[str, np.ndarray], positions=None
) -> dict[str, np.ndarray]:
    """Float means per channel of the tensors `outs`, from one pass of the float model; kept in
    the compilation's `float_means` for the next pass over the same samples (GPTQ's
    layer-by-layer correction, then the allocated plan's). `positions`: as
    runner.channel_means' (the same for every call with the same `outs`)."""
    key = (len(next(iter(inputs.values()))), tuple(outs))
    if key not in comp.float_means:
        float_sess = make_session(tap_model(comp.float_proto, outs), opt_level="basic")
        # every layer's output at once: a batch whose outputs fit calibration's cap
        batch = tap_batch_size(
            comp.model,
            outs,
            comp.config.batch_size,
            measure=lambda: tapped_bytes_per_sample(float_sess, inputs, outs),
        )
        means = channel_means(float_sess, inputs, batch, outs, positions=positions)
        comp.float_means[key] = dict(zip(outs, means))
    return comp.float_means[key]


class LayerBiasCorrection:
    """Bias correction inside a layer-by-layer pass (GPTQ's): once a layer's weights are final,
    its output is taken from the same run (runtime.segments), its per-channel mean shift against
    the float model's becomes its bias correction, and the kept output is shifted by it, so
    every later layer is rounded on, and measured against, corrected inputs. Saves the
    separate pass over the model bias_corrections makes."""

    def __init__(
        self,
        comp,
        inputs: dict[str, np.ndarray],
        choices: dict | None,
        float_run: SegmentedRun | None = None,
    ) -> None:
        """`choices`: the configuration the quantized run computes, its biases rounded to int32
        as the emitted model's are (quant.bias); None where the run keeps biases (and
        activations) float. `float_run`: the float model's own
        layer-by-layer run over the same `inputs`, where the pass has one (GPTQ fit to the float
        output): each float mean is then summed as that run computes the tensor, instead of in
        a float pass of its own (ResNet-18, 256 images: 10 s)."""
        self.comp, self.choices = comp, choices
        self.targets = {t[0]: t for t in correction_targets(comp)}  # in graph order
        self.weight = {wq.bias: w for w, wq in comp.qgraph.weights.items() if wq.bias}
        outs = [t[1] for t in self.targets.values()]
        # a layer read only through a clipping activation gets that output's mean matched
        self.clipped = clipping_activations(comp.float_proto, outs)
        tapped = [o for o in outs if o not in self.clipped] + [
            a.output for a in self.clipped.values()
        ]
        # a clipped output's float mean over the positions its quantized values are sampled at
        self.positions = sampled_positions_of(a.output for a in self.clipped.values())
        self.float_run = float_run
        if float_run is not None:
            float_run.watch(tapped, self.positions)
            self.means_f: dict[str, np.ndarray] = {}
        else:
            self.means_f = float_channel_means(comp, tapped, inputs, self.positions) if outs else {}
        self.corrected: dict[str, np.ndarray] = {}

    def _float_mean(self, name: str) -> np.ndarray:
        if name not in self.means_f:
            assert self.float_run is not None, "float means come from their own pass otherwise"
            value = self.float_run.get(name, lazy=True)  # in graph order, as the pass asks
            mean = self.float_run.channel_mean(name)
            if mean is None:
                mean = _channel_mean(value, 1, self.positions(name, value.shape))
            self.means_f[name] = mean
        return self.means_f[name]

    def correct(self, node: str, run: SegmentedRun) -> None:
        """Correct `node`'s bias if it has one; `run` is the quantized model's layer-by-layer run,
        past every layer before `node` and with `node`'s weights final."""
        if node not in self.targets:
            return
        _, out, bias, axis = self.targets[node]
        weight = self.weight[bias]
        kept = run.get(out, lazy=True)
        if out in self.clipped:
            act = self.clipped[out]
            target = act.clip_target(self._float_mean(act.output))
            delta = clipped_mean_shift(channel_sample(kept), target, act.low, act.high, act.slope)
        else:
            delta = (self._float_mean(out) - _channel_mean(kept, axis)).astype(np.float32)
        # the run computed with the bias on its int32 grid, and the emitted model will round the
        # corrected one to it again: what later layers read moves by the difference of the two
        base = self.comp.weights.float_initializer(bias).astype(np.float32)
        fed = self._on_grid(weight, bias, base)
        target = (fed + delta).astype(np.float32)
        self.corrected[bias] = target
        shipped = self._on_grid(weight, bias, target)
        run.shift(out, shipped - fed, axis)  # what later layers read is the corrected output

    def _on_grid(self, weight: str, bias: str, value: np.ndarray) -> np.ndarray:
        """`value` as the emitted model computes with it as `bias` (its int32 grid), or as is
        where the run keeps biases float."""
        if self.choices is None:
            return value
        step = self.comp.feeds.bias_steps(self.choices, {weight}, {bias: value}).get(bias)
        return value if step is None else bias_on_grid(value, step)

    def result(self) -> dict[str, np.ndarray] | None:
        """Corrected biases, or None unless every correctable layer was corrected (a plan with
        layers the pass did not visit needs bias_corrections' own pass)."""
        done = {t[2] for t in self.targets.values()} <= set(self.corrected)
        return dict(self.corrected) if done else None
