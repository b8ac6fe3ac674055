"""The compiler, stage by stage, as DESIGN.md lists them.

load ─► canonicalize ─► discover groups ─► calibrate ─► sensitivity ─► allocate
     ─► optimize weights ─► emit QDQ ─► verify

`Compilation` holds the front half (everything up to calibration) and, once asked,
the phase-1 sensitivity table, so that several budgets, plans and schemes can be
allocated, measured and emitted from one sweep (`faaq analyze`, benchmarks).
`quantize()` is the one-shot path the CLI takes; what it promises (floors, budgets)
is checked on the emitted model by faaq_onnx.guarantees before anything is written.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from faaq_onnx.analysis.allocate import Allocation, allocate
from faaq_onnx.analysis.budget import LATENCY, Budget, CostModel
from faaq_onnx.analysis.calibrate import calibrate
from faaq_onnx.analysis.candidates import parse_candidates
from faaq_onnx.analysis.discover import discover_groups
from faaq_onnx.analysis.fisher import fisher_sensitivity, fit_available
from faaq_onnx.analysis.latency import matmul_nbits_nodes
from faaq_onnx.analysis.prune import prune_quantizers
from faaq_onnx.analysis.sensitivity import (
    ConfigFeeds,
    Prober,
    SensitivityTable,
    sensitivity,
)
from faaq_onnx.analysis.verify import verify
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import to_proto
from faaq_onnx.inputs import prepare_calibration
from faaq_onnx.model_io import load_model
from faaq_onnx.optimize.plan_rounding import PlanRounding
from faaq_onnx.optimize.rounding import check_interpretable, rounding_plans
from faaq_onnx.weight_cache import WeightCache, quantize_weights
from faaq_onnx.passes.canonicalize import canonicalize
from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
from faaq_onnx.passes.emit_qdq import EmitSummary, emit_qdq, needed_opset
from faaq_onnx.plan import BitPlan, choices_key
from faaq_onnx.results import (
    BIG_MODEL_BYTES,
    QuantizeResult,
    WorkerView,
    spill_to_disk,
    write_result,
)


def default_candidates(budget: Budget | None) -> str:
    return (
        "weights-a8"
        if budget is not None and budget.kind in ("avg-bits", "size-mb")
        else "practical"
    )


class Compilation:
    """One model and one calibration set, compiled as far as needed."""

    def __init__(
        self,
        model_path,
        calib,
        config: QuantConfig | None = None,
        target_opset: int = 13,
        floor: Budget | None = None,
    ) -> None:
        self.model_path = model_path
        self.config = config or QuantConfig()
        self.calibration_source = "arrays (API)" if isinstance(calib, dict) else str(calib)
        self.data_free = isinstance(calib, str) and calib.split(":")[0] in ("none", "bn-stats")
        self.timings: dict[str, float] = {}
        with self.stage("load"):
            model = load_model(model_path)
            # bad calibration data fails here, before any long work
            self.inputs, self.verify_inputs, self.data_notes = prepare_calibration(
                calib, to_proto(model), self.config
            )
        from faaq_onnx.guarantees import confidence_of, hold_out_for_floor

        held_out_note = []
        if (
            floor is not None and floor.is_floor
        ):  # checked on samples calibration and allocator never see
            self.inputs, self.verify_inputs, self.data_notes, held_out_note = hold_out_for_floor(
                self.inputs, self.verify_inputs, self.data_notes, self.config.verify_samples
            )
        self.confidence = confidence_of(floor)  # of verify's SQNR bound
        with self.stage("canonicalize"):
            self.model, self.warnings, self.int2 = self._canonicalize(model, target_opset)
        self.warnings += self.data_notes + held_out_note
        if self.config.reduce_range == "auto" and self.config.weights_reduce_range:
            self.warnings.append(
                "ONNX Runtime's int8 kernels saturate uint8 x int8 products on this CPU (no VNNI): "
                "8-bit weights keep a 7-bit range here (--reduce-range off keeps 8 bits for a "
                "VNNI or GPU target)"
            )
        self.float_proto = to_proto(self.model)
        with self.stage("discover_groups"):
            self.qgraph = discover_groups(self.model)
        if not self.qgraph.groups:
            raise FaaqError(
                "found nothing to quantize: no Conv, Gemm, MatMul or other quantizable op with float inputs"
            )
        self.scaling = self._scale_channels(target_opset)
        check_interpretable(
            self.float_proto, self.qgraph, self.config.rounding
        )  # before calibrating
        with self.stage("calibrate"):
            self.calibration = calibrate(
                self.model, self.qgraph, self.inputs, self.config.batch_size, self.config.progress
            )
            self.qgraph = prune_quantizers(self.qgraph, self.calibration)
            self.calibration.data_free = self.data_free
        self.weights = WeightCache(self.model, self.qgraph, self.config)
        self.rounding = PlanRounding(self)
        self._bias_cache: dict = {}
        self._matmul_choice: dict = {}
        self.feeds = ConfigFeeds(self.qgraph, self.calibration, self.weights, self.config)
        self._prober: Prober | None = None
        self.table: SensitivityTable | None = None
        self.candidates: list[Candidate] | None = None
        self.latency = None

    def _canonicalize(self, model, target_opset: int):
        """Canonical form at the opset the plan needs; int2 storage (opset 25) falls back to
        int4 containers, with a warning, where the model or this ORT cannot take it."""
        fallback = None
        if target_opset >= 25:
            from faaq_onnx.runtime.capabilities import int2_unsupported_reason

            why = int2_unsupported_reason()
            if why is None:
                try:
                    model, warnings = canonicalize(model, target_opset=25, **self._canon_options())
                    return model, warnings, True
                except FaaqError as exc:
                    why = str(exc)
            target_opset = 21
            fallback = f"2-bit weights stored in int4 containers: {why}"
        model, warnings = canonicalize(model, target_opset=target_opset, **self._canon_options())
        return model, warnings + ([fallback] if fallback else []), False

    def _canon_options(self) -> dict:
        opt = self.config.optimize
        return {
            "simplify": self.config.simplify,
            "cle": self.config.cle_relu6 if "cle" in opt else None,
            "zero_biases": "bias-correction" in opt,
        }

    def _scale_channels(self, target_opset: int) -> dict:
        """SmoothQuant / AWQ: a data-driven rewrite of the float model, before calibration sees it."""
        from faaq_onnx.optimize.scaling import scale_channels

        mode = next((m for m in ("smoothquant", "awq") if m in self.config.optimize), None)
        if mode is None:
            return {}
        with self.stage("channel_scaling"):
            bits = self.config.scheme.w if self.config.scheme.w < 32 else 4
            report = scale_channels(
                self, mode, bits, self.config.optimize_samples, self.config.smoothquant_alpha
            )
            self.float_proto = to_proto(self.model)
            self.qgraph = discover_groups(self.model)
        return report

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)

    # phase 1 -----------------------------------------------------------------
    @property
    def prober(self) -> Prober:
        if self._prober is None:
            self._prober = Prober(
                self.float_proto,
                self.qgraph,
                self.calibration,
                self.weights,
                self.config,
                self.inputs,
            )
        return self._prober

    def sensitivity(
        self,
        candidates: str | list[Candidate],
        metrics=("sqnr", "kl"),
        cache_dir=None,
        fit_samples: int = 32,
    ) -> SensitivityTable:
        self.candidates = (
            parse_candidates(candidates) if isinstance(candidates, str) else list(candidates)
        )
        if "fit" in metrics:
            metrics = fit_available(self.float_proto, tuple(metrics), self.warnings)
        with self.stage("sensitivity"):

            def fit_fn(jobs):
                return fisher_sensitivity(
                    self.float_proto,
                    self.qgraph,
                    self.feeds,
                    jobs,
                    self.inputs,
                    samples=fit_samples,
                    seed=self.config.seed,
                )

            distributed = None
            if self.config.workers > 1 or self.config.ray_address:
                from dataclasses import replace

                from faaq_onnx.runtime.workers import distributed_measure

                def distributed(jobs):
                    worker_comp = WorkerView(
                        self, replace(self.config, ort_threads=1, progress=False)
                    )
                    return distributed_measure(
                        worker_comp, jobs, self.config.workers, self.config.ray_address
                    )

            self.table = sensitivity(
                lambda: self.prober,
                self.feeds,
                self.inputs,
                self.float_proto,
                self.candidates,
                metrics,
                cache_dir,
                self.config.progress,
                fit_fn,
                fit_samples,
                distributed,
            )
        return self.table

    # phase 2 -----------------------------------------------------------------
    def latency_table(self, ep: str = "cpu", batch: int = 1, cache_dir=None):
        """Measured per-group kernel costs of every candidate class (for latency budgets)."""
        from faaq_onnx.analysis.latency import build_latency_table

        if self.candidates is None:
            raise FaaqError(
                "choose candidates (run the sensitivity stage) before measuring latency"
            )
        with self.stage("latency_profile"):
            self.latency = build_latency_table(
                self, self.candidates, ep, batch, cache_dir=cache_dir
            )
        return self.latency

    def cost_model(self, budget: Budget) -> CostModel:
        other = sum(
            len(t.raw_data) or t.ByteSize()
            for t in self.float_proto.graph.initializer
            if t.name not in self.qgraph.weights
        )
        kind = "bops" if budget.is_floor else budget.kind
        return CostModel(
            self.qgraph,
            kind,
            other_bytes=other,
            reference=budget.reference,
            symmetric_weights=self.config.weight_symmetric,
            bits=budget.bits,
            min_container=self.weight_min_container,
            granularity=self.config.weight_granularity,
            block_size=self.config.block_size,
            latency=self.latency if kind in LATENCY else None,
        )

    @property
    def weight_min_container(self) -> int:
        cast = self.config.weight_storage == "cast" and self.config.weight_granularity != "block"
        return 2 if self.int2 and cast else 4

    def allocate(
        self,
        budget: str | Budget,
        metric: str = "sqnr",
        allocator: str = "knapsack",
        labeled: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Allocation:
        if self.table is None:
            raise FaaqError("run the sensitivity stage before allocating")
        budget = Budget.parse(budget) if isinstance(budget, str) else budget
        accuracy = self.labeled_accuracy(labeled) if labeled is not None else None
        with self.stage("allocate"):
            # the probe session is built only where a plan must be measured (floors, or a table
            # measured in it anyway); FIT-only tables of cost budgets skip it
            joint = budget.is_floor or metric != "fit"
            measure = (lambda ch: self.prober.measure(ch)) if joint else None
            return allocate(
                self.qgraph,
                self.table,
                self.candidates,
                budget,
                metric,
                allocator,
                self.cost_model(budget),
                measure=measure,
                accuracy=accuracy,
                joint=joint,
            )

    def measure(self, plan: BitPlan) -> dict[str, float]:
        """Output SQNR and KL of a plan, all groups quantized together (probe session)."""
        return self.prober.measure(plan.choices)

    def labeled_accuracy(self, labeled):
        from faaq_onnx.analysis.accuracy import probe_accuracy

        return probe_accuracy(self, labeled)

    def uniform(self, scheme: str | Candidate) -> BitPlan:
        """Every group at `scheme`, except the first and last weighted layers with config.first_last."""
        cand = Candidate.parse(scheme) if isinstance(scheme, str) else scheme
        plan = BitPlan.uniform(self.qgraph, cand)
        if self.config.first_last is not None and cand != self.config.first_last:
            for g in self.qgraph.edge_groups([n.name for n in self.float_proto.graph.node]):
                plan.choices[g] = self.config.first_last
            plan.meta["first_last"] = str(self.config.first_last)
        return plan

    # optimize weights ----------------------------------------------------------
    def optimize_rounding(self, plans: list[BitPlan]) -> dict:
        """AdaRound/BRECQ each plan's weights below 8 bits (once per plan), each plan in its own
        context (every layer fit to the inputs that plan feeds it); they fill the shared cache."""
        return self.rounding.optimize(plans)

    def reround(self, plan: BitPlan) -> None:
        """Round an allocated mixed plan's weights again, in its own context, kept as that plan's.
        The allocator chose between weights rounded once per width in uniform models (seed 003
        §3.5); stitched, a layer sees inputs other than those it was fit to."""
        self.rounding.reround(plan)

    def bias_overrides(self, plan: BitPlan) -> dict:
        if "bias-correction" not in self.config.optimize:
            return {}
        from faaq_onnx.optimize.bias_correction import bias_corrections

        key = choices_key(plan.choices)
        if key not in self._bias_cache:
            with self.stage("bias_correction"):
                self._bias_cache[key] = bias_corrections(self, plan, self.config.optimize_samples)
        return self._bias_cache[key]

    # back half -----------------------------------------------------------------
    def build(
        self, plan: BitPlan, nbits: set[str] | None = None
    ) -> tuple[onnx.ModelProto, EmitSummary]:
        """Optimize weights and emit the QDQ model of a plan (nothing verified, nothing written)."""
        plan.check_against(self.qgraph)
        if needed_opset(plan, self.config, self.int2) > self.model.opset_imports.get("", 0):
            raise FaaqError(
                f"this plan needs opset {needed_opset(plan, self.config, self.int2)}: "
                "create the Compilation with that target_opset"
            )
        with self.rounding.applied(plan):
            return self._build(plan, nbits)

    def _build(self, plan: BitPlan, nbits: set[str] | None) -> tuple[onnx.ModelProto, EmitSummary]:
        with self.stage("optimize_weights"):
            qweights = quantize_weights(self.weights, plan)
        biases = self.bias_overrides(plan)
        nbits = matmul_nbits_nodes(self, plan) if nbits is None else nbits
        keep = {a for g in self.qgraph.groups.values() if set(g.ops) & nbits for a in g.activations}
        with self.stage("emit"):
            qmodel = ir.from_proto(self.float_proto)
            for name, value in biases.items():
                qmodel.graph.initializers[name].const_value = ir.tensor(value, name=name)
            emitted = emit_qdq(
                qmodel,
                self.qgraph,
                plan,
                self.calibration,
                self.config,
                qweights,
                self.int2,
                keep_clamps=keep,
            )
            proto = to_proto(qmodel)
            emitted.matmulnbits = []
            if nbits:
                proto, emitted.matmulnbits = convert_to_matmulnbits(
                    proto, drop_activation_qdq=True, nodes=nbits
                )
        return proto, emitted

    def emit(self, plan: BitPlan, output=None) -> QuantizeResult:
        """Build, verify with plain ORT, report; write atomically when `output` is given."""
        from faaq_onnx.report import quantize_report

        proto, emitted = self.build(plan)
        from faaq_onnx.external_data import external_bytes, release

        release()  # the float weights have been read: their pages need not stay mapped
        if external_bytes(self.float_proto) > BIG_MODEL_BYTES:
            # a big model's quantized weights go to a data file ORT maps, rather than staying in
            # this process and being copied into every session; rounding to nearest is redone if needed
            proto = spill_to_disk(proto)
            self.weights.forget_nearest()
        with self.stage("verify"):
            # SQNR against the model the user gave (its file), not the rewritten float model
            verification = verify(
                self.float_proto,
                proto,
                self.verify_inputs,
                emitted.__dict__,
                self.config.batch_size,
                reference=str(self.model_path),
                confidence=self.confidence,
            )
        report = quantize_report(self, plan, emitted, verification)
        result = QuantizeResult(proto, report, plan, self.qgraph, dict(self.timings))
        if output is not None:
            write_result(result, output)
        return result


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
    ep: str | None = None,
    latency_batch: int | None = None,
) -> QuantizeResult:
    """Quantize a float ONNX model; returns the QDQ model and its report.

    `calib` is a dict of input arrays, a data path, or 'random[:N]'. With `budget`
    (e.g. 'avg-bits=4') bit widths are allocated per group from the measured
    sensitivity; with `plan` a saved BitPlan is applied; otherwise `config.scheme`
    is used everywhere. With `output` the model is written atomically there (never
    over the input), and only once every promise of the budget holds on it.
    """
    from faaq_onnx.guarantees import enforce_budget

    config = config or QuantConfig()
    config.ep = ep or config.ep
    config.latency_batch = latency_batch or config.latency_batch
    ep, latency_batch = config.ep, config.latency_batch
    if output is not None and Path(output).resolve() == Path(model_path).resolve():
        raise FaaqError(
            "the output path is the input model: choose another -o, the input is never overwritten"
        )
    if plan is not None and budget is not None:
        raise FaaqError("give either a plan or a budget, not both")
    if config.first_last is not None and (plan is not None or budget is not None):
        raise FaaqError(
            "--first-last applies to a uniform --scheme; a budget allocates every layer itself"
        )
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    if budget is not None and budget.kind == "max-drop" and labeled is None:
        raise FaaqError("a max-drop budget needs labeled data (--labels-data FILE with x and y)")
    cands = (
        parse_candidates(candidates or default_candidates(budget)) if budget is not None else None
    )
    if budget is not None and config.ray_address:  # a dead address fails now, not after calibration
        from faaq_onnx.runtime.workers import check_ray_address

        check_ray_address(config.ray_address)
    if plan is not None:
        opset = needed_opset(plan, config, config.int2)
    elif cands is not None:
        opset = needed_opset(BitPlan({str(c): c for c in cands}), config, config.int2)
    else:
        opset = needed_opset(BitPlan({"_": config.scheme}), config, config.int2)
    comp = Compilation(model_path, calib, config, target_opset=opset, floor=budget)
    check_labeled = None
    if budget is not None and budget.kind == "max-drop":  # choose with one part, check on the other
        from faaq_onnx.guarantees import split_labeled

        labeled, check_labeled = split_labeled(labeled, config.seed)
    comp.optimize_rounding(rounding_plans(comp, plan, cands))
    if budget is not None:
        # FIT needs one forward/backward per sample for all groups at once; SQNR and KL
        # one probe run per group x candidate
        metrics = ("fit",) if metric == "fit" else ("sqnr", "kl")
        comp.sensitivity(cands, metrics, cache_dir)
        if budget.kind in LATENCY:
            comp.latency_table(ep, latency_batch, cache_dir)
        try:
            alloc = comp.allocate(budget, metric, allocator, labeled)
            plan = alloc.plan
            plan.meta.setdefault("objective", alloc.objective)
        except FaaqError:
            if not budget.is_floor:
                raise
            # the probe says no plan meets the floor: let the emitted model have the last word
            from faaq_onnx.guarantees import _extreme_plan

            plan = _extreme_plan(comp, budget)
        comp.reround(plan)
    elif plan is None:
        plan = comp.uniform(config.scheme)
    result = comp.emit(plan)
    if budget is not None:
        result = enforce_budget(
            comp,
            result,
            budget,
            metric,
            allocator,
            labeled,
            ep,
            latency_batch,
            check_labeled=check_labeled,
            output=output,
        )
        result.report["sensitivity"].update(
            {"metric": metric, "allocator": allocator, "budget": str(budget)}
        )
    if output is not None:
        write_result(result, output)
    return result
