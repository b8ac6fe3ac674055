"""A quantization configuration as the probe's feeds."""

from __future__ import annotations

import numpy as np

from faaq_onnx.analysis.calibrate import Calibration
from faaq_onnx.analysis.probe import enabled_params
from faaq_onnx.config import FLOAT, Candidate, QuantConfig
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.quant.bias import bias_on_grid, int32_bias_scale, takes_int32_bias
from faaq_onnx.weight_cache import WeightCache

FEED_CACHE_BYTES = 512 << 20  # dequantized weights kept between configurations, at most


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
        steps = self.bias_steps(choices) if activations else {}
        for b in set(steps) | set(biases):
            value = biases[b] if b in biases else self.cache.float_initializer(b)
            weights[b] = bias_on_grid(value, steps[b]) if b in steps else value
        return weights, acts

    def bias_steps(
        self, choices: dict[str, Candidate], weights: set[str] | None = None
    ) -> dict[str, np.ndarray]:
        """{bias: its int32 scale s_x · s_w per channel} of every bias the emitted model stores
        as int32 under `choices` (QuantizeBiasPass's conditions: a weight below float whose
        layer reads a quantized activation), of the layers of `weights` if given."""
        wbits: dict[str, int] = {}
        abits: dict[str, int] = {}
        for gname, cand in choices.items():
            g = self.qgraph.groups[gname]
            wbits.update({w: cand.w for w in g.weights if cand.w < FLOAT})
            abits.update({a: cand.a for a in g.activations if cand.a < FLOAT})
        steps = {}
        for w, bits in wbits.items():
            if weights is not None and w not in weights:
                continue
            wq = self.qgraph.weights[w]
            if not wq.bias or len(wq.consumers) != 1 or wq.activation not in abits:
                continue
            qw = self.cache.get(w, bits)
            if not takes_int32_bias(wq.op_type, qw, wq.channel_axis):
                continue
            shape = np.shape(self.cache.float_initializer(wq.bias))
            if len(shape) != 1:
                continue
            s_x = self.act_params(wq.activation, abits[wq.activation])[0]
            steps[wq.bias] = int32_bias_scale(s_x, qw.scale, shape)
        return steps

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
