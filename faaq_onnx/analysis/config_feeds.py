"""A quantization configuration as the probe's feeds."""

from __future__ import annotations

import numpy as np

from faaq_onnx.analysis.calibrate import Calibration
from faaq_onnx.analysis.probe import enabled_params
from faaq_onnx.config import FLOAT, Candidate, QuantConfig
from faaq_onnx.groups import QuantizerGraph
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

    def feeds(self, choices: dict[str, Candidate]) -> tuple[dict, dict]:
        weights, acts = {}, {}
        for gname, cand in choices.items():
            g = self.qgraph.groups[gname]
            for w in g.weights if cand.w < FLOAT else []:  # float weights: the probe's default
                weights[w] = self.weight_values(w, cand.w)
            for a in g.activations if cand.a < FLOAT else []:  # float activations: switched off
                acts[a] = self.act_params(a, cand.a)
        return weights, acts

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
