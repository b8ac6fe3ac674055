"""The compiler, stage by stage, as DESIGN.md lists them.

load ─► canonicalize ─► discover groups ─► calibrate ─► sensitivity ─► allocate
     ─► optimize weights ─► emit QDQ ─► verify

`Compilation` runs the stages of faaq_onnx.stages, each the home of its own state: the front
half (everything up to calibration) at once, the rest when asked, so that several budgets,
plans and schemes can be allocated, measured and emitted from one sensitivity sweep
(`faaq analyze`, benchmarks). `quantize()` is the one-shot path the CLI takes; what it promises
(floors, budgets) is checked on the emitted model by faaq_onnx.guarantees before anything is
written.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from faaq_onnx.analysis.allocate import Allocation
from faaq_onnx.analysis.budget import LATENCY, Budget, CostModel
from faaq_onnx.analysis.candidates import parse_candidates
from faaq_onnx.analysis.sensitivity import Prober, SensitivityTable
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.optimize.rounding import rounding_plans
from faaq_onnx.passes.emit_qdq import EmitSummary, needed_opset
from faaq_onnx.plan import BitPlan
from faaq_onnx.results import QuantizeResult, write_result
from faaq_onnx.stages.allocation import AllocationStage
from faaq_onnx.stages.effort import (
    better_of_default,
    compares,
    fit_gptq_to_float_output,
    keep_first_last_at_8_bits,
    wants_comparison,
)
from faaq_onnx.stages.emission import Emission
from faaq_onnx.stages.prepare import Prepared
from faaq_onnx.stages.sweep import SensitivitySweep
from faaq_onnx.stages.weights import WeightOptimization


def default_candidates(budget: Budget | None) -> str:
    return (
        "weights-a8"
        if budget is not None and budget.kind in ("avg-bits", "size-mb")
        else "practical"
    )


class _OnStage:
    """An attribute of the Compilation whose home is one of its stages (read and set there)."""

    def __init__(self, stage: str, attr: str | None = None) -> None:
        self.stage, self.attr = stage, attr

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = self.attr or name

    def __get__(self, comp: Any, owner: type | None = None) -> Any:
        if comp is None:
            return self
        return getattr(getattr(comp, self.stage), str(self.attr))

    def __set__(self, comp: Any, value: Any) -> None:
        setattr(getattr(comp, self.stage), str(self.attr), value)


class Compilation:
    """One model and one calibration set, compiled as far as needed.

    The stages, in order, each holding its own state: `prepared` (the canonical model, its
    groups and calibration), `optimization` (the quantized weights and their rounding),
    `sweep` (the sensitivity table), `allocation` (plans, costs, latency) and `emission`
    (building and verifying models). The analyses, optimizers and reports that read across
    stages take the Compilation and read the attributes below, which live on the stages.
    """

    # prepare
    model_path = _OnStage("prepared")
    calibration_source = _OnStage("prepared")
    data_free = _OnStage("prepared")
    inputs = _OnStage("prepared")
    stacked = _OnStage("prepared")  # inputs fed one whole feed per sample
    verify_inputs = _OnStage("prepared")
    held_out_of_calibration = _OnStage("prepared")
    data_notes = _OnStage("prepared")
    model = _OnStage("prepared")
    warnings = _OnStage("prepared")
    int2 = _OnStage("prepared")
    float_proto = _OnStage("prepared")
    qgraph = _OnStage("prepared")
    scaling = _OnStage("prepared")
    calibration = _OnStage("prepared")
    compared = _OnStage("prepared")  # {output: tensor it is compared at} (analysis.compared)
    # optimize weights
    weights = _OnStage("optimization")
    rounding = _OnStage("optimization")
    # sensitivity
    feeds = _OnStage("sweep")
    _prober = _OnStage("sweep", "probe")  # None until the probe session is first needed
    table = _OnStage("sweep")
    candidates = _OnStage("sweep")
    # allocate
    latency = _OnStage("allocation")
    # emit and verify
    confidence = _OnStage("emission")  # of verify's SQNR bound
    _matmul_choice = _OnStage("emission", "matmul_choice")

    def __init__(
        self,
        model_path,
        calib,
        config: QuantConfig | None = None,
        target_opset: int = 13,
        floor: Budget | None = None,
        compare: bool = False,
    ) -> None:
        from faaq_onnx.guarantees import confidence_of

        self.config = config or QuantConfig()
        self.timings: dict[str, float] = {}
        # bias correction's float output means per channel, per (samples, tensors): one pass each
        self.float_means: dict = {}
        self.prepared = Prepared(
            model_path, calib, self.config, target_opset, floor, self.stage, compare
        )
        self.optimization = WeightOptimization(self)
        self.sweep = SensitivitySweep(self)
        self.allocation = AllocationStage(self)
        self.emission = Emission(self, confidence_of(floor))

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
        return self.sweep.prober

    def sensitivity(
        self,
        candidates: str | list[Candidate],
        metrics=("sqnr", "kl"),
        cache_dir=None,
        fit_samples: int = 32,
    ) -> SensitivityTable:
        return self.sweep.run(candidates, metrics, cache_dir, fit_samples)

    # phase 2 -----------------------------------------------------------------
    def latency_table(self, ep: str = "cpu", batch: int = 1, cache_dir=None):
        """Measured per-group kernel costs of every candidate class (for latency budgets)."""
        return self.allocation.latency_table(ep, batch, cache_dir)

    def cost_model(self, budget: Budget) -> CostModel:
        return self.allocation.cost_model(budget)

    @property
    def weight_min_container(self) -> int:
        return self.allocation.weight_min_container

    def allocate(
        self,
        budget: str | Budget,
        metric: str = "sqnr",
        allocator: str = "knapsack",
        labeled: tuple[np.ndarray, np.ndarray] | None = None,
        uniform_check: bool = True,
    ) -> Allocation:
        return self.allocation.allocate(budget, metric, allocator, labeled, uniform_check)

    def measure(self, plan: BitPlan) -> dict[str, float]:
        """Output SQNR and KL of a plan, all groups quantized together (probe session)."""
        return self.prober.measure(plan.choices)

    def labeled_accuracy(self, labeled):
        return self.allocation.labeled_accuracy(labeled)

    def uniform(self, scheme: str | Candidate) -> BitPlan:
        """Every group at `scheme`, except the first and last weighted layers with config.first_last."""
        return self.allocation.uniform(scheme)

    # optimize weights ----------------------------------------------------------
    def optimize_rounding(self, plans: list[BitPlan], context_bits: float | None = None) -> dict:
        """AdaRound/BRECQ each plan's weights below 8 bits (once per plan), each plan in its own
        context (every layer fit to the inputs that plan feeds it); they fill the shared cache.
        GPTQ rounds uniform plans at one activation width in one pass, in the context of the
        widest width within `context_bits` (plan_rounding.shared_contexts)."""
        return self.optimization.optimize_rounding(plans, context_bits)

    def reround(self, plan: BitPlan) -> None:
        """Round an allocated mixed plan's weights again, in its own context, kept as that plan's.
        The allocator chose between weights rounded once per width in uniform models (seed 003
        §3.5); stitched, a layer sees inputs other than those it was fit to."""
        self.optimization.reround(plan)

    def bias_overrides(self, plan: BitPlan) -> dict:
        return self.optimization.bias_overrides(plan)

    def bias_check(self, plan: BitPlan) -> dict | None:
        """Which corrected biases --optimize auto kept, as measured (measure_bias_variants)."""
        return self.optimization.bias_check(plan)

    # back half -----------------------------------------------------------------
    def build(
        self, plan: BitPlan, nbits: set[str] | None = None, bias_corrected: bool = True
    ) -> tuple[onnx.ModelProto, EmitSummary]:
        """Optimize weights and emit the QDQ model of a plan (nothing verified, nothing written)."""
        return self.emission.build(plan, nbits, None if bias_corrected else {})

    def emit(self, plan: BitPlan, output=None) -> QuantizeResult:
        """Build, verify with plain ORT, report; write atomically when `output` is given."""
        return self.emission.emit(plan, output)


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
    # a copy: what this request decides (ep, --effort best's first/last, GPTQ's fit) is its own,
    # and the caller's config can serve the next request as it was given
    config = copy.copy(config) if config is not None else QuantConfig()
    config.ep = ep or config.ep
    config.latency_batch = latency_batch or config.latency_batch
    budget = _checked_request(model_path, output, plan, budget, labeled, config)
    keep_first_last_at_8_bits(config, budget, plan)
    fit_gptq_to_float_output(config, budget)
    if _network_in_branches(model_path, plan, budget):
        # the network sits inside If branches: each branch the samples take, quantized on its own
        from faaq_onnx.stages.branches import quantize_in_branches

        result = quantize_in_branches(
            model_path, calib, output, config, _target_opset(None, None, config), quantize
        )
        if output is not None:
            write_result(result, output)
        return result
    cands = (
        parse_candidates(candidates or default_candidates(budget)) if budget is not None else None
    )
    if budget is not None and config.ray_address:  # a dead address fails now, not after calibration
        from faaq_onnx.runtime.workers import check_ray_address

        check_ray_address(config.ray_address)
    # load ─► canonicalize ─► discover groups ─► calibrate
    opset = _target_opset(plan, cands, config)
    comp = Compilation(
        model_path,
        calib,
        config,
        target_opset=opset,
        floor=budget,
        compare=compares(config, budget),
    )
    check_labeled = None
    if budget is not None and budget.kind == "max-drop":  # choose with one part, check on the other
        from faaq_onnx.guarantees import split_labeled

        labeled, check_labeled = split_labeled(labeled, config.seed)
    # optimize weights (rounding of the plans sensitivity measures or that ship)
    comp.optimize_rounding(
        rounding_plans(comp, plan, cands),
        budget.value if budget is not None and budget.kind == "avg-bits" else None,
    )
    if budget is not None:
        assert cands is not None  # parsed above whenever there is a budget
        # sensitivity ─► allocate ─► re-round the allocated plan
        plan = _allocated_plan(comp, budget, cands, metric, allocator, cache_dir, labeled)
    elif plan is None:
        plan = comp.uniform(config.scheme)
    # emit QDQ ─► verify (─► every promise of the budget checked on the emitted model)
    result = comp.emit(plan)
    if budget is None and wants_comparison(config, result):
        # --effort best ─► the default rounding too ─► the better on held-out output SQNR
        del comp
        result = better_of_default(result, model_path, calib, config, plan, opset)
    if budget is not None:
        from faaq_onnx.guarantees import enforce_budget

        result = enforce_budget(
            comp,
            result,
            budget,
            metric,
            allocator,
            labeled,
            config.ep,
            config.latency_batch,
            check_labeled=check_labeled,
            output=output,
        )
        result.report["sensitivity"].update(
            {"metric": metric, "allocator": allocator, "budget": str(budget)}
        )
    if output is not None:
        write_result(result, output)
    return result


def _checked_request(
    model_path, output, plan: BitPlan | None, budget, labeled, config: QuantConfig
) -> Budget | None:
    """The budget, parsed, once the request holds together (refused in one line if not)."""
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
    return budget


def _network_in_branches(model_path, plan: BitPlan | None, budget: Budget | None) -> bool:
    """True when every weighted op sits inside If branches (a budget or a saved plan cannot
    be held there: refused in one line)."""
    from faaq_onnx.stages.branches import branch_sites

    try:
        header = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # not a readable model: load_model says why, in one line
        return False
    if not branch_sites(header):
        return False
    if plan is not None or budget is not None:
        raise FaaqError(
            "this model's weighted ops all sit inside If branches, which faaq quantizes one "
            "branch at a time with a uniform --scheme: a budget or a saved plan cannot apply"
        )
    return True


def _target_opset(plan: BitPlan | None, cands: list[Candidate] | None, config: QuantConfig) -> int:
    """The opset the canonical model needs for whatever may be emitted from it."""
    if plan is not None:
        return needed_opset(plan, config, config.int2)
    if cands is not None:
        return needed_opset(BitPlan({str(c): c for c in cands}), config, config.int2)
    return needed_opset(BitPlan({"_": config.scheme}), config, config.int2)


def _allocated_plan(
    comp: Compilation,
    budget: Budget,
    cands: list[Candidate],
    metric: str,
    allocator: str,
    cache_dir,
    labeled,
) -> BitPlan:
    """Sensitivity, (latency,) allocation under `budget`, then the plan's own re-round."""
    # FIT needs one forward/backward per sample for all groups at once; SQNR and KL
    # one probe run per group x candidate
    metrics = ("fit",) if metric == "fit" else ("sqnr", "kl")
    comp.sensitivity(cands, metrics, cache_dir)
    if budget.kind in LATENCY:
        comp.latency_table(comp.config.ep, comp.config.latency_batch, cache_dir)
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
    return plan
