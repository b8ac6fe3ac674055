"""Stage 2: the quantized weights: round-to-nearest cache, learned rounding, bias corrections.

Its cache is what the sensitivity sweep measures and what the emitter writes, so what was
measured is what ships.
"""

from __future__ import annotations

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
        if config.optimize_auto and not _below_8_effective_bits(plan, config):
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


def _below_8_effective_bits(plan: BitPlan, config) -> bool:
    """Whether some weight of the plan is on a grid coarser than 8 bits: below 8 bits, or at 8
    bits kept to a 7-bit range (reduce_range, ORT's int8 kernels without VNNI), where
    EfficientNet-Lite0's depthwise convolutions lose 0.5 pt that bias correction gives back."""
    return any(c.w < 8 or (c.w == 8 and config.weights_reduce_range) for c in plan.choices.values())
