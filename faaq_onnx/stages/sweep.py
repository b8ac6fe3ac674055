"""Stage 3: the phase-1 sensitivity sweep, every group x candidate measured alone.

Kept once measured, so several budgets, plans and schemes can be allocated from one sweep
(`faaq analyze`, benchmarks). The probe session is built on first use only.
"""

from __future__ import annotations

from faaq_onnx.analysis.candidates import parse_candidates
from faaq_onnx.analysis.compared import compared_model
from faaq_onnx.analysis.config_feeds import ConfigFeeds
from faaq_onnx.analysis.fisher import fisher_sensitivity, fit_available
from faaq_onnx.analysis.sensitivity import (
    AUTO,
    AUTO_FIRST,
    Prober,
    SensitivityTable,
    sensitivity,
    sweep_inputs,
)
from faaq_onnx.config import Candidate
from faaq_onnx.results import WorkerView


class SensitivitySweep:
    """The quantized configurations' feeds, the probe session and the sensitivity table."""

    def __init__(self, comp) -> None:
        self.comp = comp
        self.feeds = ConfigFeeds(comp.qgraph, comp.calibration, comp.weights, comp.config)
        self.probe: Prober | None = None
        self.table: SensitivityTable | None = None
        self.candidates: list[Candidate] | None = None
        self._measured = None

    @property
    def measured(self):
        """The float model as configurations are measured on it: its outputs where they are
        compared (a Softmax output at its logits: analysis.compared)."""
        if self._measured is None:
            self._measured = compared_model(self.comp.float_proto, self.comp.compared)
        return self._measured

    @property
    def prober(self) -> Prober:
        """The whole-model probe on the sweep's samples: with --sensitivity-samples auto, the
        count the sweep settled on (before a sweep: all of them)."""
        if self.probe is None:
            self.probe = self._prober(self._samples())
        return self.probe

    def _prober(self, samples: int | None) -> Prober:
        c = self.comp
        inputs = sweep_inputs(c.inputs, c.config, samples)
        return Prober(self.measured, c.qgraph, c.calibration, c.weights, c.config, inputs)

    def _first_prober(self) -> Prober:
        """An automatic sweep starts on its first chunk: no reference run over every sample."""
        if self.probe is None and self.comp.config.sensitivity_samples == AUTO:
            self.probe = self._prober(AUTO_FIRST)
        return self.prober

    def _samples(self) -> int | None:
        if self.comp.config.sensitivity_samples != AUTO or self.table is None:
            return None
        return self.table.meta.get("samples")

    def _settle(self) -> None:
        """After an automatic sweep, later joint measurements use the samples it settled on."""
        n = self._samples()
        if self.probe is not None and n and len(self.probe.reference[0]) != n:
            self.probe = self.probe.on(sweep_inputs(self.comp.inputs, self.comp.config, n))

    def run(
        self,
        candidates: str | list[Candidate],
        metrics=("sqnr", "kl"),
        cache_dir=None,
        fit_samples: int = 32,
    ) -> SensitivityTable:
        comp, config = self.comp, self.comp.config
        self.candidates = (
            parse_candidates(candidates) if isinstance(candidates, str) else list(candidates)
        )
        if "fit" in metrics:
            metrics = fit_available(comp.float_proto, tuple(metrics), comp.warnings)
        with comp.stage("sensitivity"):

            def fit_fn(jobs):
                return fisher_sensitivity(
                    comp.float_proto,
                    comp.qgraph,
                    self.feeds,
                    jobs,
                    comp.inputs,
                    samples=fit_samples,
                    seed=config.seed,
                )

            distributed = None
            if config.workers > 1 or config.ray_address:
                from dataclasses import replace

                from faaq_onnx.runtime.workers import distributed_measure

                def distributed(jobs, inputs):
                    worker_comp = WorkerView(comp, replace(config, ort_threads=1, progress=False))
                    worker_comp.float_proto = self.measured
                    return distributed_measure(
                        worker_comp, jobs, config.workers, config.ray_address, inputs
                    )

            self.table = sensitivity(
                self._first_prober,
                self.feeds,
                comp.inputs,
                self.measured,
                self.candidates,
                metrics,
                cache_dir,
                config.progress,
                fit_fn,
                fit_samples,
                distributed,
            )
            self._settle()
        return self.table
