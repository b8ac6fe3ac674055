"""Phase 1: how much each quantizer group hurts the network output (seed 003 §3.1).

For every group and candidate, that group alone is quantized and the network output
is compared with the float output over the calibration inputs:
- SQNR in dB (seed 003 eq. 3),
- KL divergence of the output distribution (seed 000's "flow" divergence),
- a gradient-weighted error (label-free Fisher, FIT-style), where autograd is at hand.
All configurations run in one ONNX Runtime session (see faaq_onnx.analysis.probe). Results are
cached on disk keyed by model, data and settings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from faaq_onnx.analysis.calibrate import Calibration
from faaq_onnx.analysis.candidates import group_candidates
from faaq_onnx.analysis.config_feeds import ConfigFeeds
from faaq_onnx.analysis.metrics import output_errors, output_metrics
from faaq_onnx.analysis.probe import build_probe
from faaq_onnx.config import AUTO, Candidate, QuantConfig
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.outputs import write_json_atomic
from faaq_onnx.runtime.probe_session import ProbeSession
from faaq_onnx.weight_cache import WeightCache

METRICS = ("sqnr", "kl", "fit")


@dataclass
class SensitivityTable:
    """metric values per group and candidate: table[group][str(candidate)][metric]."""

    table: dict[str, dict[str, dict[str, float]]]
    meta: dict = field(default_factory=dict)

    def damage(self, group: str, cand: Candidate, metric: str) -> float:
        """An additive 'how much worse' score (lower is better) for the allocator."""
        entry = self.table[group][str(cand)]
        if metric == "sqnr":
            return float(10 ** (-entry["sqnr_db"] / 10))
        if metric == "kl":
            return float(entry["kl"])
        if metric == "fit":
            return float(entry["fit"])
        raise KeyError(metric)

    def has(self, metric: str) -> bool:
        key = "sqnr_db" if metric == "sqnr" else metric
        return all(key in e for g in self.table.values() for e in g.values())

    def ranking(self, cand: Candidate | None, metric: str) -> list[str]:
        """Groups from most to least sensitive at one candidate (default: each group's lowest)."""

        def score(g):
            c = cand if cand is not None and str(cand) in self.table[g] else self._lowest(g)
            return self.damage(g, c, metric)

        return sorted(self.table, key=score, reverse=True)

    def _lowest(self, g: str) -> Candidate:
        return min((Candidate.parse(c) for c in self.table[g]), key=lambda c: (c.w, c.a))

    def to_dict(self) -> dict:
        return {"table": self.table, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> SensitivityTable:
        return cls(d["table"], d.get("meta", {}))

    def to_markdown(self, metric_order=("sqnr_db", "kl", "fit")) -> str:
        cands = sorted(
            {c for g in self.table.values() for c in g},
            key=lambda c: Candidate.parse(c).w * 100 + Candidate.parse(c).a,
        )
        lines = [
            "| group | "
            + " | ".join(f"{c} {m}" for c in cands for m in metric_order if self._any(c, m))
            + " |"
        ]
        lines.append("|---|" + "---|" * (len(lines[0].split("|")) - 3))
        for g, row in self.table.items():
            cells = []
            for c in cands:
                for m in metric_order:
                    if not self._any(c, m):
                        continue
                    v = row.get(c, {}).get(m)
                    cells.append(
                        "" if v is None else (f"{v:.2f}" if m == "sqnr_db" else f"{v:.3g}")
                    )
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def _any(self, c, m) -> bool:
        return any(m in g.get(c, {}) for g in self.table.values())


# the first chunk: two halves of 4 samples. EfficientNet-Lite0's SQNR ranking from 8 samples agrees
# with 256's at tau 0.974 (split-half 0.933: the sweep stops there, 10 s against 15 s at 16); on
# ResNet-20 8 samples split at 0.88 and the sweep goes on to 32 as before
# (benchmarks/bench_sweep_samples.py, docs/techniques/sensitivity.md)
AUTO_FIRST = 8
AUTO_TAU = 0.9  # seed 003 Fig. 2d: SQNR rankings from disjoint subsets agree to about this


def sweep_inputs(
    inputs: dict[str, np.ndarray], config: QuantConfig, samples: int | None = None
) -> dict[str, np.ndarray]:
    """The calibration inputs the sensitivity sweep measures on (--sensitivity-samples, or
    `samples` once an automatic sweep has settled on a count; auto alone: all of them)."""
    n = samples or (None if config.sensitivity_samples == AUTO else config.sensitivity_samples)
    return {k: v[:n] for k, v in inputs.items()} if n else inputs


def auto_chunks(total: int) -> list[int]:
    """Sample counts an automatic sweep stops at to check its ranking: 8, 16, 32... total.
    Each step doubles, so the split-half check compares the samples swept so far with the
    ones just added."""
    bounds, n = [], AUTO_FIRST
    while n < total:
        bounds.append(n)
        n *= 2
    return [*bounds, total]


class Prober(ConfigFeeds):
    """Everything needed to measure a configuration: probe session, weights, ranges."""

    def __init__(
        self,
        float_proto: onnx.ModelProto,
        qgraph: QuantizerGraph,
        cal: Calibration,
        cache: WeightCache,
        config: QuantConfig,
        inputs: dict[str, np.ndarray],
    ) -> None:
        super().__init__(qgraph, cal, cache, config)
        # larger batches amortize the per-run weight feeds; 64 measured best on 2 cores
        self.session = ProbeSession(
            build_probe(float_proto, qgraph),
            inputs,
            list(qgraph.activations),
            max(config.batch_size, 64),
            threads=config.ort_threads,
        )
        self.reference = self.session.run()

    def on(self, inputs: dict[str, np.ndarray]) -> Prober:
        """The same probe session measuring on other samples (a chunk of an automatic sweep)."""
        other = copy.copy(self)
        other.session = copy.copy(self.session)
        other.session.inputs = inputs
        other.reference = other.session.run()
        return other

    def outputs(self, choices: dict[str, Candidate]) -> list[np.ndarray]:
        return self.session.run(*self.feeds(choices))

    def measure(
        self, choices: dict[str, Candidate], overrides: dict[str, np.ndarray] | None = None
    ) -> dict[str, float]:
        """Output SQNR and KL of a configuration; `overrides`: float biases (corrected ones)
        instead of the model's, rounded as the emitted model rounds them."""
        weights, acts = self.feeds(choices, overrides)
        outs = self.session.run(weights, acts)
        return output_metrics(*output_errors(self.reference, outs))


def sweep_key(
    float_proto: onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    config: QuantConfig,
    cands: list[Candidate],
    metrics: tuple[str, ...],
    fit_samples: int | None = None,
    weights_key: str = "",
) -> str:
    """Everything a table depends on: model, data, settings, candidates, metrics, the
    number of Fisher samples (when FIT is measured), how weights were rounded, whether
    8-bit weights keep a 7-bit range here, and the ONNX Runtime version."""
    h = hashlib.sha256()
    h.update(float_proto.SerializeToString(deterministic=True))
    for k in sorted(inputs):
        h.update(k.encode())
        arr = inputs[k]
        h.update(
            arr.fingerprint()
            if hasattr(arr, "fingerprint")
            else np.ascontiguousarray(arr).tobytes()
        )
    settings = config.to_dict()
    for k in (
        "progress",
        "verify_samples",
        "scheme",
        "preset",
    ):  # preset: already in the inputs hashed above
        settings.pop(k, None)
    fit = fit_samples if "fit" in metrics else None
    # what "auto" resolved to on this machine, and the runtime that measured: a table made where
    # 8-bit weights keep a 7-bit range (no VNNI) is not one for a machine where they keep 8
    from faaq_onnx.runtime.capabilities import ort_version

    machine = [config.weights_reduce_range, ort_version()]
    h.update(
        json.dumps(
            # v6: a Softmax's logits compared less their mean (analysis.compared); v5: histograms
            # on zero-aligned power-of-two bins (observers); v4: each weight width rounded with
            # its most precise activations (rounding_plans)
            [settings, [str(c) for c in cands], list(metrics), fit, weights_key, machine, "v6"],
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(
        os.environ.get(
            "FAAQ_CACHE_DIR",
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "faaq",
        )
    )


def sensitivity(
    get_prober,
    feeds: ConfigFeeds,
    inputs: dict[str, np.ndarray],
    float_proto: onnx.ModelProto,
    cands: list[Candidate],
    metrics=("sqnr", "kl", "fit"),
    cache_dir: Path | None = None,
    progress: bool = False,
    fit_fn=None,
    fit_samples: int | None = None,
    distributed=None,
) -> SensitivityTable:
    """Measure every group x candidate alone; reuse a cached table when one matches.

    `get_prober()` builds the probe session only when SQNR or KL are measured: a FIT-only
    table needs no ORT run at all. `distributed(jobs, inputs)`, when given, measures them on
    workers: {job: (per-sample SQNR ratios, per-sample KL)}."""
    auto = feeds.config.sensitivity_samples == AUTO
    inputs = sweep_inputs(inputs, feeds.config)
    key = sweep_key(
        float_proto, inputs, feeds.config, cands, tuple(metrics), fit_samples, feeds.cache.key()
    )
    path = (
        Path(cache_dir or default_cache_dir()) / f"sensitivity-{key}.json"
        if cache_dir is not False
        else None
    )
    if path is not None and path.exists():
        cached = SensitivityTable.from_dict(json.loads(path.read_text()))
        cached.meta["cached"] = str(path)
        return cached
    jobs = [(g, c) for g in feeds.qgraph.groups.values() for c in group_candidates(g, cands)]
    table: dict[str, dict[str, dict[str, float]]] = {
        g.name: {str(c): {} for c in group_candidates(g, cands)}
        for g in feeds.qgraph.groups.values()
    }
    available = int(len(next(iter(inputs.values()))))
    stability, samples = None, available
    if "sqnr" in metrics or "kl" in metrics:  # one probe run per group x candidate
        if distributed is not None:
            measure = lambda chunk: distributed(jobs, chunk)  # noqa: E731
        else:  # each group's configurations from the float tensors in front of it
            measure = _serial(get_prober(), float_proto, jobs, progress)
        chunks = auto_chunks(samples) if auto else [samples]
        measured, stability, samples, plateau = sweep_chunks(measure, inputs, chunks)
        for g, c in jobs:
            entry = dict(measured[(g.name, str(c))])
            if "kl" not in metrics:
                entry.pop("kl")
            if "sqnr" not in metrics:
                entry.pop("sqnr_db")
            table[g.name][str(c)] = entry
    meta = {
        "samples": samples,
        "candidates": [str(c) for c in cands],
        "metrics": list(metrics),
        "configs": len(jobs),
        "key": key,
    }
    if stability is not None:  # Kendall tau of the SQNR ranking, first half vs second half
        meta["ranking_tau_halves"] = stability
    if auto and stability is not None:
        # weighted_tau: stopped where more samples no longer steadied the ranking
        meta["samples_auto"] = {
            "available": available,
            "first": AUTO_FIRST,
            "tau": AUTO_TAU,
            **({"weighted_tau": plateau} if plateau is not None else {}),
        }
    if "fit" in metrics and fit_fn is not None:
        fit, why = fit_fn(jobs)
        if fit is None:
            meta["fit_unavailable"] = why
        else:
            meta["fit_samples"] = fit_samples
            for (g, c), v in fit.items():
                table[g][str(c)]["fit"] = v
    result = SensitivityTable(table, meta)
    if path is not None:
        write_json_atomic(path, result.to_dict())
    return result


def _serial(prober: Prober, float_proto: onnx.ModelProto, jobs, progress: bool):
    """Measures the jobs on a chunk of samples in this process (SuffixSweep); the prober's own
    samples need no second reference run."""
    from faaq_onnx.analysis.suffix_sweep import SuffixSweep

    def measure(chunk: dict) -> dict:
        n = len(next(iter(chunk.values())))
        mine = prober.session.inputs
        own = len(prober.reference[0]) == n and all(
            k in mine and np.array_equal(np.asarray(v), np.asarray(mine[k]))
            for k, v in chunk.items()
        )
        sweep = SuffixSweep(prober if own else prober.on(chunk), float_proto)
        sweep.measure(jobs, progress)
        return sweep.per_sample

    return measure


def sweep_chunks(measure, inputs: dict, chunks: list[int]):
    """The sweep on the first chunks[0] samples, then up to chunks[1], ... until the SQNR ranking
    of the first half of the samples swept agrees with the second half's (Kendall tau >=
    AUTO_TAU): a configuration costs about one float run per sample, and a stable ranking
    needs no more samples. `measure(chunk inputs)` gives {job: (SQNR ratios, KL)} per sample.

    Also stops where doubling the samples left tau no higher and the tau that weighs the most
    damaging configurations most (split_half_tau weighted) holds: what still disagrees is the
    order of near-lossless ones, which more samples do not settle and the allocator hardly
    reads. PP-OCRv4's recognizer, 371 configurations: tau 0.78 / 0.75 / 0.80 / 0.76 at 8 / 16 /
    32 / 64 samples (its 8-bit configurations' SQNRs of 33 to 92 dB rank at tau 0.5-0.6 between
    halves), weighted 0.89 / 0.91 / 0.92 / 0.91: it stops at 16 instead of sweeping all 64.

    Returns ({job: metrics}, the last split-half tau, the samples used, the weighted tau where
    that stopped it, else None)."""
    from faaq_onnx.analysis.suffix_sweep import split_half_tau

    per_sample: dict = {}
    start, tau, previous, plateau = 0, None, None, None
    for stop in chunks:
        chunk = (
            inputs
            if (start, stop) == (0, chunks[-1])
            else {k: v[start:stop] for k, v in inputs.items()}
        )
        for key, (ratios, kls) in measure(chunk).items():
            old = per_sample.get(key)
            per_sample[key] = (
                (ratios, kls)
                if old is None
                else (np.concatenate([old[0], ratios]), np.concatenate([old[1], kls]))
            )
        start, tau = stop, split_half_tau(per_sample)
        if tau is None or tau >= AUTO_TAU:
            break
        if previous is not None and tau <= previous and stop < chunks[-1]:
            weighted = split_half_tau(per_sample, weighted=True)
            if weighted is not None and weighted >= AUTO_TAU:
                plateau = weighted
                break
        previous = tau
    return {k: output_metrics(*v) for k, v in per_sample.items()}, tau, start, plateau
