"""The compiler, stage by stage, as DESIGN.md lists them.

load ─► canonicalize ─► discover groups ─► calibrate ─► sensitivity ─► allocate
     ─► optimize weights ─► emit QDQ ─► verify
"""

from __future__ import annotations

import onnx_ir as ir
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import model_input_shapes, save_atomic, to_proto
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.inputs import prepare_calibration
from faaq_onnx.passes.calibrate import Calibration, calibrate
from faaq_onnx.passes.canonicalize import canonicalize
from faaq_onnx.passes.discover_groups import discover_groups
from faaq_onnx.passes.emit_qdq import emit_qdq, needed_opset
from faaq_onnx.passes.load import load_model
from faaq_onnx.passes.quantize_weights import WeightCache, quantize_weights
from faaq_onnx.passes.verify import verify
from faaq_onnx.plan import BitPlan


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    report: dict
    plan: BitPlan
    qgraph: QuantizerGraph
    timings: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, stage: str):
        watch = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                watch.times[stage] = round(time.perf_counter() - self.t0, 3)

        return _Ctx()


def analyze_model(model_path, calib, config: QuantConfig, target_opset: int = 13):
    """The shared front half: load, canonicalize, discover groups, calibrate."""
    watch = _Stopwatch()
    with watch("load"):
        model = load_model(model_path)
    with watch("canonicalize"):
        model, warnings = canonicalize(model, target_opset=target_opset, simplify=config.simplify)
    float_proto = to_proto(model)
    inputs = prepare_calibration(calib, float_proto, config)
    with watch("discover_groups"):
        qgraph = discover_groups(model)
    if not qgraph.groups:
        raise FaaqError("found nothing to quantize: no Conv, Gemm, MatMul or other quantizable op with float inputs")
    with watch("calibrate"):
        cal = calibrate(model, qgraph, inputs, config.batch_size, config.progress)
    return model, float_proto, inputs, qgraph, cal, warnings, watch


def quantize(
    model_path,
    calib=None,
    output=None,
    config: QuantConfig | None = None,
    plan: BitPlan | None = None,
) -> QuantizeResult:
    """Quantize a float ONNX model; returns the QDQ model and its report.

    `calib` is a dict of input arrays, a data path, or 'random[:N]'. With `output`
    the model is written atomically there (never over the input).
    """
    config = config or QuantConfig()
    if output is not None and Path(output).resolve() == Path(model_path).resolve():
        raise FaaqError("the output path is the input model: choose another -o, the input is never overwritten")
    plan_opset = needed_opset(plan, config) if plan is not None else needed_opset(
        BitPlan({"_": config.scheme}), config)
    model, float_proto, inputs, qgraph, cal, warnings, watch = analyze_model(model_path, calib, config, plan_opset)

    with watch("allocate"):
        if plan is None:
            plan = BitPlan.uniform(qgraph, config.scheme)
        plan.check_against(qgraph)
    with watch("optimize_weights"):
        cache = WeightCache(model, qgraph, config)
        qweights = quantize_weights(cache, plan)
    with watch("emit"):
        qmodel = ir.from_proto(float_proto)
        emitted = emit_qdq(qmodel, qgraph, plan, cal, config, qweights)
        quant_proto = to_proto(qmodel)
    with watch("verify"):
        held = {k: v[: config.verify_samples] for k, v in inputs.items()}
        verification = verify(float_proto, quant_proto, held, emitted.__dict__, config.batch_size)
    report = {
        "model": str(model_path),
        "config": config.to_dict(),
        "plan": plan.to_dict(),
        "avg_weight_bits": plan.avg_weight_bits(qgraph),
        "groups": len(qgraph.groups),
        "weight_quantizers": len(qgraph.weights),
        "activation_quantizers": len(qgraph.activations),
        "skipped": qgraph.skipped,
        "dropped_clamps": emitted.dropped_clamps,
        "int32_biases": len(emitted.int32_biases),
        "verify": verification,
        "warnings": warnings,
        "timings_s": watch.times,
        "calibration_samples": int(len(next(iter(inputs.values())))),
    }
    if output is not None:
        save_atomic(quant_proto, output)
        report["output"] = str(output)
    return QuantizeResult(quant_proto, report, plan, qgraph, watch.times)
