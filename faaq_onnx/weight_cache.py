"""A model's quantized weights by (name, bits), shared by analysis, optimization and emission.

Plain round-to-nearest with the chosen range setter (faaq_onnx.quant.weights), computed once
per (weight, bits) so the sensitivity sweep and the emitter share it; rounding optimizers
(faaq_onnx.optimize) put their learned results in the same cache. It lives beside plan.py and
groups.py, outside both analysis/ and optimize/, because both read it.
"""

from __future__ import annotations

import onnx_ir as ir

from faaq_onnx.config import QuantConfig
from faaq_onnx.graph import const_array, done_with
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.plan import BitPlan
from faaq_onnx.quant.weights import QuantizedWeight, quantize_weight


class WeightCache:
    """Quantized weights by (name, bits), computed once."""

    def __init__(self, model: ir.Model, qgraph: QuantizerGraph, config: QuantConfig) -> None:
        self.model, self.qgraph, self.config = model, qgraph, config
        self._cache: dict[tuple[str, int], QuantizedWeight] = {}
        self.optimized: set[tuple[str, int, str]] = set()

    def float_weight(self, name: str):
        return const_array(self.model.graph.initializers[name])

    def float_initializer(self, name: str):
        return const_array(self.model.graph.initializers[name])

    def get(self, name: str, bits: int) -> QuantizedWeight:
        key = (name, bits)
        if key not in self._cache:
            wq = self.qgraph.weights[name]
            self._cache[key] = quantize_weight(
                self.float_weight(name),
                self.range_bits(bits),
                self.config.weight_granularity,
                wq.channel_axis,
                wq.block_axis,
                self.config.block_size,
                self.config.symmetric_weights(bits),
                self.config.weight_range,
            )
            done_with(
                self.model.graph.initializers[name]
            )  # a big model's float weight leaves memory
        return self._cache[key]

    def range_bits(self, bits: int) -> int:
        """The integer range a `bits`-wide weight gets: 8-bit weights keep 7 bits where ORT's
        int8 kernels would saturate (config.reduce_range)."""
        if bits == 8 and self.config.weights_reduce_range:
            return 7
        return bits

    def put(self, name: str, bits: int, qw: QuantizedWeight) -> None:
        self._cache[(name, bits)] = qw
        self.optimized.add((name, bits, qw.method))

    def snapshot(self) -> dict:
        """The cache's entries as they are now (the weights themselves are not copied)."""
        return dict(self._cache)

    def changed_since(self, snapshot: dict) -> dict:
        """Entries put since `snapshot` (learned rounding written over it)."""
        return {
            k: v
            for k, v in self._cache.items()
            if snapshot.get(k) is not v and v.method != "nearest"
        }

    def restore(self, entries: dict) -> None:
        self._cache = dict(entries)

    def forget_nearest(self) -> None:
        """Drop round-to-nearest results (recomputed on demand); learned ones stay."""
        self._cache = {k: v for k, v in self._cache.items() if v.method != "nearest"}

    def key(self) -> str:
        """What the cached weights depend on beyond the config (learned rounding), for cache keys."""
        return ",".join(sorted(f"{n}@{b}:{m}" for n, b, m in self.optimized))


def quantize_weights(cache: WeightCache, plan: BitPlan) -> dict[str, QuantizedWeight]:
    """The plan's quantized weights (weights the plan leaves float are not in it)."""
    bits = plan.weight_bits(cache.qgraph, quantized_only=True)
    return {name: cache.get(name, b) for name, b in bits.items()}
