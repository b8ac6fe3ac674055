"""Stage 2: the quantized weights: round-to-nearest cache, learned rounding, bias corrections.

Its cache is what the sensitivity sweep measures and what the emitter writes, so what was
measured is what ships.
"""

from __future__ import annotations

import math

from faaq_onnx.optimize.plan_rounding import PlanRounding
from faaq_onnx.plan import BitPlan, choices_key
from faaq_onnx.weight_cache import WeightCache, quantize_weights


class WeightOptimization:
    """The weight cache, the rounding passes that fill it and the bias corrections per plan."""

    def __init__(self, comp) -> None:
        self.comp = comp
        self.weights = WeightCache(comp.model, comp.qgraph, comp.config)
        self.rounding = PlanRounding(comp)
        self._bias: dict = {}

    def optimize_rounding(self, plans: list[BitPlan]) -> dict:
        return self.rounding.optimize(plans)

    def reround(self, plan: BitPlan) -> None:
        self.rounding.reround(plan)

    def quantized(self, plan: BitPlan) -> dict:
        """The plan's quantized weights, from the cache (timed as the weight stage)."""
        with self.comp.stage("optimize_weights"):
            return quantize_weights(self.weights, plan)

    def bias_overrides(self, plan: BitPlan) -> dict:
        config = self.comp.config
        if "bias-correction" not in config.optimize:
            return {}
        if config.optimize_auto and not _auto_corrects(plan, config, self.comp.qgraph):
            return {}  # auto corrects biases where weights go below 8 bits only
        from faaq_onnx.optimize.bias_correction import bias_corrections

        key = choices_key(plan.choices)
        if key not in self._bias and key in self.rounding.biases:  # corrected during GPTQ's pass
            self._bias[key] = self.rounding.biases[key]
        if key not in self._bias:
            with self.comp.stage("bias_correction"):
                self._bias[key] = bias_corrections(
                    self.comp, plan, self.comp.config.optimize_samples
                )
        return self._bias[key]


def _auto_corrects(plan: BitPlan, config, qgraph) -> bool:
    """Whether --optimize auto corrects the plan's biases: where some weight goes below 8 bits,
    and where 8-bit weights keep a 7-bit range (reduce_range: ORT's int8 kernels without VNNI)
    in a network with depthwise convolutions, whose few weights per channel round without
    averaging out (EfficientNet-Lite0 W8A8: 81.13 -> 81.61 %, float 81.61). Networks without
    them (ResNet-20 W8A8: 0.07 pt from float) are not made to pay the pass it costs."""
    if any(c.w < 8 for c in plan.choices.values()):
        return True
    return (
        config.weights_reduce_range
        and any(c.w == 8 for c in plan.choices.values())
        and any(_depthwise(w) for w in qgraph.weights.values())
    )


def _depthwise(w) -> bool:
    """A Conv weight with one input channel per group: (C_out, 1, k, k) with k > 1."""
    return (
        w.op_type == "Conv"
        and len(w.shape) >= 3
        and w.shape[1] == 1
        and w.shape[0] > 1
        and math.prod(w.shape[2:]) > 1
    )
