"""A quantization configuration as the probe's feeds."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from faaq_onnx.analysis.calibrate import Calibration
from faaq_onnx.analysis.probe import enabled_params
from faaq_onnx.config import FLOAT, Candidate, QuantConfig
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.quant.bias import (
    bias_on_grid,
    int32_bias_scale,
    takes_int32_bias,
    widened_for_bias,
)
from faaq_onnx.quant.weights import QuantizedWeight
from faaq_onnx.weight_cache import WeightCache

FEED_CACHE_BYTES = 512 << 20  # dequantized weights kept between configurations, at most


class Int32Layer(NamedTuple):
    """A layer whose bias the emitted model stores as int32: the bias's name, the layer's
    QuantizedWeight as emitted, the bias's scale, and how many channels that weight had its
    scale widened on so the bias fits (0: the cache's weight itself)."""

    bias: str
    weight: QuantizedWeight
    step: np.ndarray
    widened: int = 0


class ConfigFeeds:
    """A quantization configuration as probe feeds: fake-quantized weights, fake-quant parameters.

    Every configuration (a sweep's, each segment of a layer-by-layer pass) feeds every quantized
    weight, and dequantizing them all again each time took 7 s of a ResNet-50 budget run. So
    each (weight, bits) keeps its dequantized array (read-only) for as long as the weight cache
    holds the same QuantizedWeight, up to FEED_CACHE_BYTES in all; beyond that, weights are
    dequantized per call as before."""

    def __init__(
        self, qgraph: QuantizerGraph, cal: Calibration, cache: WeightCache, config: QuantConfig
    ) -> None:
        self.qgraph, self.cal, self.cache, self.config = qgraph, cal, cache, config
        self._act_cache: dict[tuple[str, int], np.ndarray] = {}
        self._weight_values: dict[tuple[str, int], tuple[object, np.ndarray]] = {}
        self._weight_bytes = 0

    def reset_act_cache(self) -> None:
        """Forget cached activation parameters (after step sizes were learned)."""
        self._act_cache.clear()

    def act_params(self, act: str, bits: int) -> np.ndarray:
        key = (act, bits)
        if key not in self._act_cache:
            c = self.config
            assert c.act_range is not None  # resolved by QuantConfig (calib_domain)
            scale, zp, fmt, _, _ = self.cal.activation_params(
                self.qgraph.activations[act], bits, c.act_symmetric, c.act_range, c.percentile
            )
            self._act_cache[key] = enabled_params(scale, zp, fmt.qmin, fmt.qmax)
        return self._act_cache[key]

    def feeds(
        self,
        choices: dict[str, Candidate],
        biases: dict[str, np.ndarray] | None = None,
        activations: bool = True,
    ) -> tuple[dict, dict]:
        """(weights, activation parameters) to feed for `choices`. The weights include every
        bias the emitted model stores as int32, rounded as it is (quant.bias); `biases`
        ({name: float values}, e.g. corrected ones) replace the model's before that rounding.
        activations=False: the weights alone, activations and biases left float (AdaRound's
        `weights` inputs): no parameters, no bias rounded."""
        weights, acts = {}, {}
        for gname, cand in choices.items():
            g = self.qgraph.groups[gname]
            for w in g.weights if cand.w < FLOAT else []:  # float weights: the probe's default
                weights[w] = self.weight_values(w, cand.w)
            for a in g.activations if cand.a < FLOAT and activations else []:  # else off
                acts[a] = self.act_params(a, cand.a)
        biases = biases or {}
        layers = self.int32_layers(choices, biases=biases) if activations else {}
        for w, layer in layers.items():
            if layer.widened:  # rare: a dead channel under a bias too large for int32
                weights[w] = layer.weight.dequantized()
        steps = {layer.bias: layer.step for layer in layers.values()}
        for b in set(steps) | set(biases):
            value = biases[b] if b in biases else self.cache.float_initializer(b)
            weights[b] = bias_on_grid(value, steps[b]) if b in steps else value
        return weights, acts

    def bias_steps(
        self,
        choices: dict[str, Candidate],
        weights: set[str] | None = None,
        biases: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """{bias: its int32 scale s_x · s_w per channel} of every bias the emitted model stores
        as int32 under `choices`, of the layers of `weights` if given (int32_layers)."""
        layers = self.int32_layers(choices, weights, biases)
        return {layer.bias: layer.step for layer in layers.values()}

    def int32_layers(
        self,
        choices: dict[str, Candidate],
        weights: set[str] | None = None,
        biases: dict[str, np.ndarray] | None = None,
    ) -> dict[str, Int32Layer]:
        """{weight: its Int32Layer (the QuantizedWeight as emitted, the int32 scale)} of every
        layer whose bias the emitted model stores as int32 under `choices` (QuantizeBiasPass's
        conditions: a weight below float whose layer reads a quantized activation), of the
        layers of `weights` if given. The weight is the cache's, widened where its bias
        (`biases`' value, else the model's) would not fit int32 (quant.bias.widened_for_bias)."""
        wbits = choices_bits(self.qgraph, choices)
        abits: dict[str, int] = {}
        for gname, cand in choices.items():
            abits.update(
                {a: cand.a for a in self.qgraph.groups[gname].activations if cand.a < FLOAT}
            )
        layers = {}
        for w, bits in wbits.items():
            if weights is not None and w not in weights:
                continue
            wq = self.qgraph.weights[w]
            bias, act = wq.bias, wq.activation
            if bias is None or len(wq.consumers) != 1 or act is None or act not in abits:
                continue
            qw = self.cache.get(w, bits)
            if not takes_int32_bias(wq.op_type, qw, wq.channel_axis):
                continue
            b = (biases or {}).get(bias)
            b = self.cache.float_initializer(bias) if b is None else b
            if np.ndim(b) != 1:
                continue
            s_x = self.act_params(act, abits[act])[0]
            wide = widened_for_bias(qw, b, s_x)
            widened = 0 if wide is qw else int(np.sum(wide.scale != qw.scale))
            step = int32_bias_scale(s_x, wide.scale, np.shape(b))
            layers[w] = Int32Layer(bias, wide, step, widened)
        return layers

    def weight_values(self, name: str, bits: int) -> np.ndarray:
        """The weight as the probe computes with it: its QuantizedWeight dequantized (read-only)."""
        qw = self.cache.get(name, bits)
        key = (name, bits)
        held = self._weight_values.get(key)
        if held is not None and held[0] is qw:
            return held[1]
        values = qw.dequantized()
        values.flags.writeable = False
        if held is not None:
            self._weight_bytes -= held[1].nbytes
            del self._weight_values[key]
        if self._weight_bytes + values.nbytes <= FEED_CACHE_BYTES:
            self._weight_values[key] = (qw, values)
            self._weight_bytes += values.nbytes
        return values


def choices_bits(qgraph: QuantizerGraph, choices: dict[str, Candidate]) -> dict[str, int]:
    """{weight: its bits} of every weight `choices` quantizes."""
    return {
        w: cand.w
        for gname, cand in choices.items()
        if cand.w < FLOAT
        for w in qgraph.groups[gname].weights
    }
