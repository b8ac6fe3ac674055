"""Stage 5: emit a plan's QDQ model (MatMulNBits where measured faster) and verify it with
plain ONNX Runtime against the model the user gave."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from faaq_onnx.analysis.asymmetric_weights import (
    ASYMMETRIC_TAIL,
    ASYMMETRIC_WEIGHTS,
    asymmetric_integer_weights,
)
from faaq_onnx.analysis.latency import matmul_nbits_nodes
from faaq_onnx.analysis.verify import measured_latency, verify
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import to_proto
from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
from faaq_onnx.passes.emit_qdq import EmitSummary, emit_qdq, needed_opset
from faaq_onnx.passes.sample_axis import DropSampleAxisPass
from faaq_onnx.plan import BitPlan
from faaq_onnx.results import BIG_MODEL_BYTES, QuantizeResult, spill_to_disk, write_result
from faaq_onnx.runtime.kernels import record_left_float


class Emission:
    """Builds and verifies plans; holds the MatMulNBits kernel choices measured per plan and
    the confidence verification states its SQNR bound at."""

    def __init__(self, comp, confidence: float) -> None:
        self.comp = comp
        self.confidence = confidence
        self.matmul_choice: dict = {}

    def build(
        self,
        plan: BitPlan,
        nbits: set[str] | None = None,
        biases: dict | None = None,
    ) -> tuple[onnx.ModelProto, EmitSummary]:
        """The plan's QDQ model with `biases` in place of the float ones: None, the plan's corrected
        biases; {} none (a model built only to be timed: its graph, and so its speed, is the
        same); others, the variants measure_bias_variants compares."""
        comp = self.comp
        plan.check_against(comp.qgraph)
        opset = needed_opset(plan, comp.config, comp.int2)
        if opset > comp.model.opset_imports.get("", 0):
            raise FaaqError(
                f"this plan needs opset {opset}: create the Compilation with that target_opset"
            )
        with comp.rounding.applied(plan):
            return self._build(plan, nbits, comp.bias_overrides(plan) if biases is None else biases)

    def _build(
        self, plan: BitPlan, nbits: set[str] | None, biases: dict
    ) -> tuple[onnx.ModelProto, EmitSummary]:
        comp = self.comp
        qweights = comp.optimization.quantized(plan)
        widened = {}
        for w, layer in comp.feeds.int32_layers(plan.choices, biases=biases).items():
            if layer.widened:  # its bias would not fit int32 at the cache's scale
                widened[w] = layer.widened
                qweights[w] = layer.weight
        nbits = matmul_nbits_nodes(comp, plan) if nbits is None else nbits
        keep = {a for g in comp.qgraph.groups.values() if set(g.ops) & nbits for a in g.activations}
        with comp.stage("emit"):
            qmodel = ir.from_proto(comp.float_proto)
            for name, value in biases.items():
                qmodel.graph.initializers[name].const_value = ir.tensor(value, name=name)
            emitted = emit_qdq(
                qmodel,
                comp.qgraph,
                plan,
                comp.calibration,
                comp.config,
                qweights,
                comp.int2,
                keep_clamps=keep,
            )
            emitted.widened_for_bias = widened
            DropSampleAxisPass(comp.stacked)(qmodel)  # the user's inputs, as they were
            proto = to_proto(qmodel)
            if nbits:
                proto, emitted.matmulnbits = convert_to_matmulnbits(
                    proto, drop_activation_qdq=True, nodes=nbits
                )
            record_left_float(proto, comp.qgraph.left_float)
        return proto, emitted

    def emit(self, plan: BitPlan, output=None) -> QuantizeResult:
        from faaq_onnx.external_data import external_bytes, release
        from faaq_onnx.report import quantize_report

        comp = self.comp
        proto, emitted = self.build(plan)  # records why ops stay float (faaq inspect --kernels)
        release()  # the float weights have been read: their pages need not stay mapped
        if external_bytes(comp.float_proto) > BIG_MODEL_BYTES:
            # a big model's quantized weights go to a data file ORT maps, rather than staying in
            # this process and being copied into every session; rounding to nearest is redone if needed
            proto = spill_to_disk(proto)
            comp.weights.forget_nearest()
        with comp.stage("verify"):
            # SQNR against the model the user gave (its file), not the rewritten float model
            verification = verify(
                comp.float_proto,
                proto,
                comp.verify_inputs,
                emitted.__dict__,
                comp.config.batch_size,
                reference=str(comp.model_path),
                confidence=self.confidence,
                compared=comp.compared,
            )
        if comp.config.measure_latency:
            with comp.stage("latency_check"):
                verification["latency"] = measured_latency(
                    str(comp.model_path),
                    comp.float_proto,
                    proto,
                    comp.verify_inputs,
                    comp.config.ep,
                    comp.config.latency_batch,
                )
        slow = asymmetric_integer_weights(proto)
        if slow:
            note = ASYMMETRIC_WEIGHTS.format(n=len(slow))
            comp.warnings[:] = [w for w in comp.warnings if not w.endswith(ASYMMETRIC_TAIL)]
            comp.warnings.append(note)
        report = quantize_report(comp, plan, emitted, verification)
        result = QuantizeResult(proto, report, plan, comp.qgraph, dict(comp.timings))
        if output is not None:
            write_result(result, output)
        return result
