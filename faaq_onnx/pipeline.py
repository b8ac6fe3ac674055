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

from faaq_onnx.budget import Budget, CostModel
from faaq_onnx.candidates import parse_candidates
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import model_input_shapes, save_atomic, to_proto
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.inputs import prepare_calibration
from faaq_onnx.passes.calibrate import Calibration, calibrate
from faaq_onnx.passes.canonicalize import canonicalize
from faaq_onnx.passes.discover_groups import discover_groups
from faaq_onnx.passes.allocate import allocate
from faaq_onnx.passes.emit_qdq import emit_qdq, needed_opset
from faaq_onnx.passes.gradient_sensitivity import fisher_sensitivity
from faaq_onnx.passes.load import load_model
from faaq_onnx.passes.quantize_weights import WeightCache, quantize_weights
from faaq_onnx.passes.sensitivity import Prober, SensitivityTable, sensitivity
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


def default_candidates(budget: Budget | None) -> str:
    return "weights-a8" if budget is not None and budget.kind in ("avg-bits", "size-mb") else "practical"


def unquantized_bytes(float_proto: onnx.ModelProto, qgraph: QuantizerGraph) -> int:
    """Bytes of initializers that stay float (biases, norms, ...): part of any model size."""
    return sum(len(t.raw_data) or t.ByteSize() for t in float_proto.graph.initializer if t.name not in qgraph.weights)


@dataclass
class MixedPrecision:
    """What the sensitivity and allocate stages need, built once per model and data."""

    prober: Prober
    table: SensitivityTable
    candidates: list[Candidate]


def run_sensitivity(float_proto, qgraph, cal, cache, config, inputs, candidates, metrics=("sqnr", "kl"),
                    cache_dir=None, fit_samples: int = 32) -> MixedPrecision:
    prober = Prober(float_proto, qgraph, cal, cache, config, inputs)

    def fit_fn(jobs):
        return fisher_sensitivity(float_proto, qgraph, prober, jobs, inputs, samples=fit_samples, seed=config.seed)

    table = sensitivity(prober, float_proto, candidates, metrics, cache_dir, config.progress, fit_fn)
    return MixedPrecision(prober, table, candidates)


def quantize(
    model_path,
    calib=None,
    output=None,
    config: QuantConfig | None = None,
    plan: BitPlan | None = None,
    budget: str | Budget | None = None,
    candidates: str | None = None,
    metric: str = "sqnr",
    allocator: str = "knapsack",
    cache_dir=None,
    labeled: tuple[np.ndarray, np.ndarray] | None = None,
) -> QuantizeResult:
    """Quantize a float ONNX model; returns the QDQ model and its report.

    `calib` is a dict of input arrays, a data path, or 'random[:N]'. With `budget`
    (e.g. 'avg-bits=4') the bit widths are allocated per group from the measured
    sensitivity; with `plan` a saved BitPlan is applied; otherwise `config.scheme`
    is used everywhere. With `output` the model is written atomically there (never
    over the input).
    """
    config = config or QuantConfig()
    if output is not None and Path(output).resolve() == Path(model_path).resolve():
        raise FaaqError("the output path is the input model: choose another -o, the input is never overwritten")
    if plan is not None and budget is not None:
        raise FaaqError("give either a plan or a budget, not both")
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    cands = parse_candidates(candidates or default_candidates(budget)) if budget is not None else None
    if plan is not None:
        plan_opset = needed_opset(plan, config)
    elif cands is not None:
        plan_opset = needed_opset(BitPlan({str(c): c for c in cands}), config)
    else:
        plan_opset = needed_opset(BitPlan({"_": config.scheme}), config)
    model, float_proto, inputs, qgraph, cal, warnings, watch = analyze_model(model_path, calib, config, plan_opset)
    cache = WeightCache(model, qgraph, config)
    mixed = None
    if budget is not None:
        with watch("sensitivity"):
            metrics = ("sqnr", "kl", "fit") if metric == "fit" else ("sqnr", "kl")
            mixed = run_sensitivity(float_proto, qgraph, cal, cache, config, inputs, cands, metrics, cache_dir)
    with watch("allocate"):
        if mixed is not None:
            costs = CostModel(qgraph, "bops" if budget.is_floor else budget.kind,
                              other_bytes=unquantized_bytes(float_proto, qgraph), reference=budget.reference,
                              symmetric_weights=config.weight_symmetric)
            accuracy = None
            if labeled is not None:
                accuracy = labeled_accuracy(float_proto, qgraph, mixed.prober, labeled, config)
            plan = allocate(qgraph, mixed.table, cands, budget, metric, allocator, costs,
                            measure=mixed.prober.measure, accuracy=accuracy).plan
        elif plan is None:
            plan = BitPlan.uniform(qgraph, config.scheme)
        plan.check_against(qgraph)
    with watch("optimize_weights"):
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
    if mixed is not None:
        report["sensitivity"] = {"metric": metric, "allocator": allocator, "budget": str(budget),
                                 "candidates": [str(c) for c in cands], **mixed.table.meta}
    if output is not None:
        save_atomic(quant_proto, output)
        report["output"] = str(output)
    return QuantizeResult(quant_proto, report, plan, qgraph, watch.times)


def labeled_accuracy(float_proto, qgraph, prober: Prober, labeled, config: QuantConfig):
    """top-1 of a plan on labeled data, through a second probe session (None = float)."""
    from faaq_onnx.probe import build_probe
    from faaq_onnx.runtime.probe_session import ProbeSession

    x, y = labeled
    name = next(iter(prober.session.inputs))
    session = ProbeSession(build_probe(float_proto, qgraph), {name: x.astype(np.float32)}, list(qgraph.activations),
                           config.batch_size)
    memo: dict = {}

    def accuracy(choices):
        key = None if choices is None else tuple(sorted((g, str(c)) for g, c in choices.items()))
        if key not in memo:
            outs = session.run() if choices is None else session.run(*prober.feeds(choices))
            memo[key] = float(np.mean(outs[0].reshape(len(y), -1).argmax(1) == y))
        return memo[key]

    return accuracy
