"""Stage 1: load, canonicalize, discover groups, (rescale channels,) calibrate.

Everything up to calibration, done once per model and calibration set; what it leaves
(`Prepared`) is read by every later stage.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import onnx_ir as ir

from faaq_onnx.analysis.budget import Budget
from faaq_onnx.analysis.calibrate import Calibration, calibrate
from faaq_onnx.analysis.compared import compared_outputs
from faaq_onnx.analysis.discover import WEIGHT_OPS, discover_groups
from faaq_onnx.analysis.macs import with_observed_macs
from faaq_onnx.analysis.prune import prune_quantizers
from faaq_onnx.config import QuantConfig
from faaq_onnx.data import stacked_inputs
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import model_input_shapes, to_proto
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.inputs import prepare_calibration
from faaq_onnx.model_io import load_float_model
from faaq_onnx.optimize.rounding import check_interpretable
from faaq_onnx.passes.canonicalize import canonicalize
from faaq_onnx.passes.sample_axis import LiftSampleAxisPass

Stage = Callable[[str], AbstractContextManager[Any]]

VNNI_WARNING = (
    "ONNX Runtime's int8 kernels saturate uint8 x int8 products on this CPU (no VNNI): "
    "8-bit weights keep a 7-bit range here (--reduce-range off keeps 8 bits for a "
    "VNNI or GPU target)"
)


class Prepared:
    """The canonical float model, its quantizer groups and their calibration: made by running
    the front half (`stage(name)` times each step), read by every later stage."""

    def __init__(
        self,
        model_path,
        calib,
        config: QuantConfig,
        target_opset: int,
        floor: Budget | None,
        stage: Stage,
        compare: bool = False,
    ) -> None:
        from faaq_onnx.guarantees import hold_out_for_floor
        from faaq_onnx.stages.effort import hold_out_to_compare

        self.model_path, self.config = model_path, config
        self.calibration_source = "arrays (API)" if isinstance(calib, dict) else str(calib)
        self.data_free = isinstance(calib, str) and calib.split(":")[0] in ("none", "bn-stats")
        with stage("load"):
            model = load_float_model(model_path)
            user_proto = to_proto(model)
            # bad calibration data fails here, before any long work
            self.inputs, self.verify_inputs, self.data_notes = prepare_calibration(
                calib, user_proto, config
            )
            self.stacked = stacked_inputs(self.inputs, model_input_shapes(user_proto))
        held_out_note: list[str] = []
        before = len(next(iter(self.inputs.values())))
        if (
            floor is not None and floor.is_floor
        ):  # checked on samples calibration and allocator never see
            self.inputs, self.verify_inputs, self.data_notes, held_out_note = hold_out_for_floor(
                self.inputs, self.verify_inputs, self.data_notes, config.verify_samples
            )
        elif compare:  # --effort best judges two roundings on samples neither was fit to
            self.inputs, self.verify_inputs, self.data_notes, held_out_note = hold_out_to_compare(
                self.inputs, self.verify_inputs, self.data_notes, config.verify_samples
            )
        with stage("canonicalize"):
            self.model, self.warnings, self.int2 = _canonicalize(model, target_opset, config)
            # inputs fed one whole feed per sample get a sample axis; emission takes it away
            LiftSampleAxisPass(self.stacked)(self.model)
        self.warnings += self.data_notes + held_out_note
        # samples taken out of the calibration set to verify on (0: none taken)
        self.held_out_of_calibration = before - len(next(iter(self.inputs.values())))
        if config.reduce_range == "auto" and config.weights_reduce_range:
            self.warnings.append(VNNI_WARNING)
        self.float_proto = to_proto(self.model)
        with stage("discover_groups"):
            self.qgraph: QuantizerGraph = discover_groups(self.model, coverage=self.config.coverage)
        if not self.qgraph.groups:
            raise FaaqError(_nothing_to_quantize(self.model))
        self.scaling = self._scale_channels(stage)
        check_interpretable(self.float_proto, self.qgraph, config.rounding)  # before calibrating
        with stage("calibrate"):
            self.calibration: Calibration = calibrate(
                self.model, self.qgraph, self.inputs, config.batch_size, config.progress
            )
            self.qgraph = prune_quantizers(self.qgraph, self.calibration)
            # symbolic non-batch dims (attention MatMuls): the MACs of the shapes observed
            self.qgraph = with_observed_macs(self.qgraph, self.model, self.calibration)
            self.calibration.data_free = self.data_free
        # where outputs are compared (a Softmax output at its logits; an int label not at all)
        self.compared = compared_outputs(self.float_proto, self.qgraph)

    def _scale_channels(self, stage: Stage) -> dict:
        """SmoothQuant / AWQ: a data-driven rewrite of the float model, before calibration sees it."""
        from faaq_onnx.optimize.scaling import scale_channels

        config = self.config
        mode = next((m for m in ("smoothquant", "awq") if m in config.optimize), None)
        if mode is None:
            return {}
        with stage("channel_scaling"):
            bits = config.scheme.w if config.scheme.w < 32 else 4
            report = scale_channels(
                self, mode, bits, config.optimize_samples, config.smoothquant_alpha
            )
            self.float_proto = to_proto(self.model)
            self.qgraph = discover_groups(self.model, coverage=self.config.coverage)
        return report


def _nothing_to_quantize(model) -> str:
    """Why no group was found; names the weighted ops that sit in control-flow subgraphs,
    which faaq does not quantize (their tensors cannot be calibrated from outside)."""
    inside, in_loops = _weighted_in_subgraphs(model.graph)
    if inside:
        ops = ", ".join(f"{n} {op}" for op, n in sorted(inside.items()))
        if not in_loops:  # `faaq quantize` takes If branches one at a time (stages/branches.py)
            return (
                f"found nothing to quantize outside control flow: the model's weighted ops ({ops}) "
                "are all inside If branches, which only `faaq quantize` with a uniform --scheme "
                "quantizes (branch by branch); sensitivity sweeps and budgets do not reach them"
            )
        return (
            f"found nothing to quantize outside control flow: the model's weighted ops ({ops}) "
            "are all inside If/Loop/Scan subgraphs, which faaq does not quantize"
        )
    return (
        "found nothing to quantize: no Conv, Gemm, MatMul or other quantizable op with float inputs"
    )


def _weighted_in_subgraphs(graph, in_loop: bool = False) -> tuple[dict[str, int], bool]:
    """Weighted ops in the subgraphs below `graph`, by op type, and whether any sits in a Loop
    or Scan body (faaq cannot quantize those; `faaq quantize` takes If branches)."""
    counts: dict[str, int] = {}
    loops = False
    for node in graph:
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                subs = [attr.value]
            elif attr.type == ir.AttributeType.GRAPHS:
                subs = list(attr.value)
            else:
                continue
            body = in_loop or node.op_type in ("Loop", "Scan")
            for sub in subs:
                for inner in sub:
                    if inner.op_type in WEIGHT_OPS:
                        counts[inner.op_type] = counts.get(inner.op_type, 0) + 1
                        loops = loops or body
                deeper, deeper_loops = _weighted_in_subgraphs(sub, body)
                for op, n in deeper.items():
                    counts[op] = counts.get(op, 0) + n
                loops = loops or deeper_loops
    return counts, loops


def _canonicalize(model, target_opset: int, config: QuantConfig):
    """Canonical form at the opset the plan needs; int2 storage (opset 25) falls back to
    int4 containers, with a warning, where the model or this ORT cannot take it."""
    fallback = None
    options = _canon_options(config)
    if target_opset >= 25:
        from faaq_onnx.runtime.capabilities import int2_unsupported_reason

        why = int2_unsupported_reason()
        if why is None:
            try:
                model, warnings = canonicalize(model, target_opset=25, **options)
                return model, warnings, True
            except FaaqError as exc:
                why = str(exc)
        target_opset = 21
        fallback = f"2-bit weights stored in int4 containers: {why}"
    model, warnings = canonicalize(model, target_opset=target_opset, **options)
    return model, warnings + ([fallback] if fallback else []), False


def _canon_options(config: QuantConfig) -> dict:
    opt = config.optimize
    return {
        "simplify": config.simplify,
        "cle": config.cle_relu6 if "cle" in opt else None,
        "zero_biases": "bias-correction" in opt,
    }
