"""Stage 4: a bit width per group, from the sensitivity table under a budget (or one scheme
everywhere), with the cost model and, for latency budgets, the measured kernel costs."""

from __future__ import annotations

import numpy as np

from faaq_onnx.analysis.allocate import Allocation, allocate
from faaq_onnx.analysis.budget import LATENCY, Budget, CostModel
from faaq_onnx.analysis.latency import LatencyTable
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.plan import BitPlan


class AllocationStage:
    """Plans for a Compilation: allocated under a budget or uniform; holds the latency table."""

    def __init__(self, comp) -> None:
        self.comp = comp
        self.latency: LatencyTable | None = None

    def latency_table(self, ep: str = "cpu", batch: int = 1, cache_dir=None):
        from faaq_onnx.analysis.latency import build_latency_table

        comp = self.comp
        if comp.candidates is None:
            raise FaaqError(
                "choose candidates (run the sensitivity stage) before measuring latency"
            )
        with comp.stage("latency_profile"):
            self.latency = build_latency_table(
                comp, comp.candidates, ep, batch, cache_dir=cache_dir
            )
        return self.latency

    def cost_model(self, budget: Budget) -> CostModel:
        comp, config = self.comp, self.comp.config
        other = sum(
            len(t.raw_data) or t.ByteSize()
            for t in comp.float_proto.graph.initializer
            if t.name not in comp.qgraph.weights
        )
        kind = "bops" if budget.is_floor else budget.kind
        return CostModel(
            comp.qgraph,
            kind,
            other_bytes=other,
            reference=budget.reference,
            symmetric_weights=config.weight_symmetric,
            bits=budget.bits,
            min_container=self.weight_min_container,
            granularity=config.weight_granularity,
            block_size=config.block_size,
            latency=self.latency if kind in LATENCY else None,
        )

    @property
    def weight_min_container(self) -> int:
        config = self.comp.config
        cast = config.weight_storage == "cast" and config.weight_granularity != "block"
        return 2 if self.comp.int2 and cast else 4

    def allocate(
        self,
        budget: str | Budget,
        metric: str = "sqnr",
        allocator: str = "knapsack",
        labeled: tuple[np.ndarray, np.ndarray] | None = None,
        uniform_check: bool = True,
    ) -> Allocation:
        comp = self.comp
        if comp.table is None:
            raise FaaqError("run the sensitivity stage before allocating")
        budget = Budget.parse(budget) if isinstance(budget, str) else budget
        accuracy = self.labeled_accuracy(labeled) if labeled is not None else None
        with comp.stage("allocate"):
            # the probe session is built only where a plan must be measured (floors, or a table
            # measured in it anyway); FIT-only tables of cost budgets skip it
            joint = budget.is_floor or metric != "fit"
            measure = (lambda ch: comp.prober.measure(ch)) if joint else None
            return allocate(
                comp.qgraph,
                comp.table,
                comp.candidates,
                budget,
                metric,
                allocator,
                self.cost_model(budget),
                measure=measure,
                accuracy=accuracy,
                joint=joint,
                uniform_check=uniform_check,
            )

    def labeled_accuracy(self, labeled):
        from faaq_onnx.analysis.accuracy import probe_accuracy

        return probe_accuracy(self.comp, labeled)

    def uniform(self, scheme: str | Candidate) -> BitPlan:
        comp, config = self.comp, self.comp.config
        cand = Candidate.parse(scheme) if isinstance(scheme, str) else scheme
        plan = BitPlan.uniform(comp.qgraph, cand)
        if config.first_last is not None and cand != config.first_last:
            for g in comp.qgraph.edge_groups([n.name for n in comp.float_proto.graph.node]):
                plan.choices[g] = config.first_last
            plan.meta["first_last"] = str(config.first_last)
            if config.first_last_by_effort:  # the summary says who chose it
                plan.meta["first_last_by"] = "--effort best"
        return plan
