"""Emit a standard QDQ model with packed low-bit weights: the activation and weight
passes, run in order by one onnx-ir PassManager.

1. DropRedundantClampsPass  - Relu/Clip the activation quantizer's range already enforces
2. InsertActivationQDQPass  - a Q/DQ pair per tensor of each shared activation scale
   AveragePoolAsConvPass    - a quantized AveragePool as the depthwise Conv computing it
3. InsertWeightDQPass       - integer weights (packed + Cast, see emit_weights) -> DQ
4. QuantizeBiasPass         - int32 biases, so ORT fuses QLinearConv/QGemm
5. DropOrphanedInitializersPass - constants only a replaced node read (a dropped Clip's bounds)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassManager, PassResult

from faaq_onnx.config import FLOAT, QuantConfig
from faaq_onnx.graph import drop_orphaned_initializers, read_initializers
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.passes.emit_activations import (
    DropRedundantClampsPass,
    InsertActivationQDQPass,
)
from faaq_onnx.passes.emit_avgpool import AveragePoolAsConvPass
from faaq_onnx.passes.emit_constants import QuantizeConstantOperandsPass
from faaq_onnx.passes.emit_regroup import RegroupConvPass
from faaq_onnx.passes.emit_weights import InsertWeightDQPass, QuantizeBiasPass
from faaq_onnx.plan import BitPlan
from faaq_onnx.quant.weights import QuantizedWeight


@dataclass
class EmitSummary:
    weights: dict[str, dict] = field(default_factory=dict)
    activations: dict[str, dict] = field(default_factory=dict)
    dropped_clamps: list[str] = field(default_factory=list)
    int32_biases: list[str] = field(default_factory=list)
    # {weight: channels whose scale was widened so that their bias fits int32 (quant.bias)}
    widened_for_bias: dict[str, int] = field(default_factory=dict)
    matmulnbits: list[str] = field(default_factory=list)  # nodes emitted as MatMulNBits
    constant_operands: list[str] = field(default_factory=list)  # 'node:input' given a DQ
    # {grouped Conv: its groups and how many were merged into one} (emit_regroup)
    regrouped: dict[str, dict] = field(default_factory=dict)


def needed_opset(plan: BitPlan, config: QuantConfig, int2: bool = False) -> int:
    """The lowest default-domain opset that has every type and layout the plan uses.

    int2 containers (opset 25) only when asked for and the weights are cast-stored.
    """
    w_bits = {c.w for c in plan.choices.values() if c.w < FLOAT}
    a_bits = {c.a for c in plan.choices.values() if c.a < FLOAT}
    if (
        int2
        and config.weight_storage == "cast"
        and config.weight_granularity != "block"
        and any(b <= 2 for b in w_bits)
    ):
        return 25
    if (
        config.weight_granularity == "block"
        or any(b <= 4 or b > 8 for b in w_bits)
        or any(b > 8 for b in a_bits)
    ):
        return 21
    return 13


def emit_qdq(
    model: ir.Model,
    qgraph: QuantizerGraph,
    plan: BitPlan,
    calib,
    config: QuantConfig,
    qweights: dict[str, QuantizedWeight],
    int2: bool,
    keep_clamps=(),
) -> EmitSummary:
    """Rewrite `model` in place into its QDQ form.

    `keep_clamps`: activation quantizers whose Relu/Clip must stay (their Q/DQ will be
    bypassed by weight-only MatMulNBits nodes)."""
    summary = EmitSummary()
    qweights = dict(qweights)  # RegroupConvPass swaps entries: the caller's cache stays as it is
    act_bits = plan.act_bits(qgraph, quantized_only=True)
    qgraph = _quantized_part(qgraph, plan)
    act_params = {}
    for name, aq in qgraph.activations.items():
        scale, zp, fmt, lo, hi = calib.activation_params(
            aq, act_bits[name], config.act_symmetric, config.act_range, config.percentile
        )
        act_params[name] = (scale, zp, fmt)
        summary.activations[name] = {
            "bits": fmt.bits,
            "type": str(fmt),
            "scale": scale,
            "zero_point": zp,
            "range": [lo, hi],
            "tensors": list(aq.tensors),
        }
    passes = [
        RegroupConvPass(qgraph, qweights, act_bits, summary),  # reads the tensors as named
        DropRedundantClampsPass(qgraph, act_params, summary, keep=frozenset(keep_clamps)),
        InsertActivationQDQPass(qgraph, act_params, summary),
        AveragePoolAsConvPass(),
        QuantizeConstantOperandsPass(qgraph, act_params, summary),
        InsertWeightDQPass(
            qgraph,
            qweights,
            plan.weight_bits(qgraph, quantized_only=True),
            summary,
            config.weight_storage,
            int2,
        ),
    ]
    if config.int32_bias:
        passes.append(QuantizeBiasPass(qgraph, qweights, summary))
    passes.append(DropOrphanedInitializersPass(read_initializers(model.graph)))
    PassManager(passes, steps=1)(model)
    model.graph.sort()
    opset = needed_opset(plan, config, int2)
    key = "" if "" in model.opset_imports else "ai.onnx"
    if model.opset_imports.get(key, 0) < opset:
        raise AssertionError(f"canonicalize should have upgraded the model to opset {opset}")
    return summary


class DropOrphanedInitializersPass(InPlacePass):
    """Remove the initializers some node read before emission and none reads after it: a
    dropped Clip's bounds, a float constant replaced by its codes. ORT warns about each one at
    every session it creates (EfficientNet-Lite0 W4A8: 22 lines, one per ReLU6 bound)."""

    def __init__(self, read_before: set[str]) -> None:
        self.read_before = read_before

    def call(self, model: ir.Model) -> PassResult:
        return PassResult(model, drop_orphaned_initializers(model.graph, self.read_before))


def _quantized_part(qgraph: QuantizerGraph, plan: BitPlan) -> QuantizerGraph:
    """The quantizers a plan quantizes: float weights and float activations are left out."""
    wbits = plan.weight_bits(qgraph, quantized_only=True)
    abits = plan.act_bits(qgraph, quantized_only=True)
    return QuantizerGraph(
        {k: v for k, v in qgraph.weights.items() if k in wbits},
        {k: v for k, v in qgraph.activations.items() if k in abits},
        qgraph.groups,
        qgraph.skipped,
        qgraph.constants,
        qgraph.left_float,
    )
