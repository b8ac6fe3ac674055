"""Phase 1 from the float model's own activations: each group's configurations run only the
part of the network after that group.

A group's quantizers change nothing upstream of them, so every configuration of a group
shares the float tensors in front of it. One pass of the float model in graph order
(runtime.segments.SegmentedRun) leaves, at each group, the tensors still to be read (the
cut); the group's configurations then run, from that cut to the outputs, a probe with that
group's hooks alone (no other fake-quant nodes to pass through switched off). Summed over the
groups this costs about half a float run of the model per configuration, and the measured
SQNR and KL are those of `Prober.measure` (same feeds, same samples), which the tests check.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from tqdm.auto import tqdm

from faaq_onnx.analysis.metrics import (
    kendall_tau,
    output_errors,
    output_metrics,
    ratio_db,
    weighted_kendall_tau,
)
from faaq_onnx.analysis.probe import build_probe, param_name, probe_feeds
from faaq_onnx.graph import prefix_model, reader_index
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.runtime.runner import run_batches
from faaq_onnx.runtime.segments import SegmentedRun
from faaq_onnx.runtime.session import light_model, make_session


class SuffixSweep:
    """Measures (group, candidate) jobs from cuts of one float pass of `float_proto`; the
    Prober gives the feeds, the reference outputs, the samples and the batch size."""

    def __init__(self, prober, float_proto: onnx.ModelProto) -> None:
        self.prober, self.float = prober, float_proto
        # probes and suffixes are built per group from the graph alone: the weights go to each
        # session as arrays (a copy of ResNet-50's 100 MB per group took 6 s of its sweep)
        self.light, self.arrays = light_model(float_proto)
        self.session = prober.session  # the whole-model ProbeSession
        self.nodes = list(float_proto.graph.node)
        self.readers = reader_index(self.nodes)
        # per-sample SQNR ratios and output KL of each job: chunks of samples merge by concatenation
        self.per_sample: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def measure(self, jobs: list, progress: bool = False) -> dict[tuple[str, str], dict]:
        """{(group name, str(candidate)): {"sqnr_db", "kl"}} for every job."""
        by_group: dict[str, list] = {}
        for g, c in jobs:
            by_group.setdefault(g.name, []).append(c)
        groups = {g.name: g for g, _ in jobs}
        touched = {name: self._touched(g) for name, g in groups.items()}
        order = sorted(groups, key=lambda name: min(touched[name], default=0))
        run = SegmentedRun(
            self.float, self.session.inputs, self.session.batch_size, threads=self.session.threads
        )
        out: dict[tuple[str, str], dict] = {}
        bar = tqdm(total=len(jobs), desc="sensitivity", disable=not progress, unit="config")
        for name in order:
            group = groups[name]
            probe = build_probe(self.light, _only(self.prober.qgraph, group))
            for t in _entry(probe, group):
                run.get(t, lazy=True)  # kept for the suffix runs, read a batch at a time
            if run.done & touched[name]:  # a node the group changes ran in float
                for c in by_group[name]:  # (a group spread far apart): the whole probe
                    outs = self.prober.outputs({name: c})
                    self.per_sample[(name, str(c))] = output_errors(self.prober.reference, outs)
                    out[(name, str(c))] = output_metrics(*self.per_sample[(name, str(c))])
                    bar.update(1)
                continue
            outputs = [o.name for o in probe.graph.output]
            suffix = prefix_model(probe, outputs, given=run.cut())
            # every optimization (NCHWc convs: 1.6x the "extended" level on ResNet-18 here)
            session = make_session(suffix, threads=self.session.threads, arrays=self.arrays)
            data = {i.name: run.kept[i.name] for i in suffix.graph.input if i.name in run.kept}
            for c in by_group[name]:
                self.per_sample[(name, str(c))] = self._measure(session, data, outputs, group, c)
                out[(name, str(c))] = output_metrics(*self.per_sample[(name, str(c))])
                bar.update(1)
        bar.close()
        return out

    def _touched(self, group) -> set[int]:
        """Float-model nodes that read the group's weights or quantized activations."""
        tensors = set(group.weights)
        for a in group.activations:
            tensors |= set(self.prober.qgraph.activations[a].tensors)
        return {i for t in tensors for i in self.readers.get(t, [])}

    def split_half_tau(self) -> float | None:
        return split_half_tau(self.per_sample)

    def _measure(self, session, data, outputs, group, cand) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample SQNR ratios and KL of one configuration (at the batch the cut declares where
        the model fixes one: SegmentedRun.cut)."""
        weights, acts = self.prober.feeds({group.name: cand})
        names = {i.name for i in session.get_inputs() + session.get_overridable_initializers()}
        feeds = {
            k: v
            for k, v in probe_feeds(group.activations, weights, acts).items()
            if k in names and k not in data
        }
        ref = self.prober.reference
        errors = []
        for start, outs in run_batches(
            session, data, self.session.batch_size, outputs, extra_feeds=feeds
        ):
            errors.append(output_errors([r[start : start + len(outs[0])] for r in ref], outs))
        return np.concatenate([e[0] for e in errors]), np.concatenate([e[1] for e in errors])


def split_half_tau(per_sample: dict, weighted: bool = False) -> float | None:
    """Kendall tau between the jobs' SQNR on the first and on the second half of the samples:
    how stable the sweep's ranking is at this many samples (None: too few to split). `weighted`:
    the most damaging configurations' order counts most (weighted_kendall_tau on the noise)."""
    if len(per_sample) < 3:
        return None
    n = len(next(iter(per_sample.values()))[0])
    if n < 4:
        return None
    halves = [
        [ratio_db(float(np.mean(r[part]))) for r, _ in per_sample.values()]
        for part in (slice(0, n // 2), slice(n // 2, None))
    ]
    if weighted:  # the lowest SQNR first
        return round(weighted_kendall_tau(*(-np.asarray(h) for h in halves)), 3)
    return round(kendall_tau(*halves), 3)


def _only(qgraph: QuantizerGraph, group) -> QuantizerGraph:
    """The quantizers of one group: its probe carries no other hooks (a float run elsewhere)."""
    return QuantizerGraph(
        weights={w: qgraph.weights[w] for w in group.weights},
        activations={a: qgraph.activations[a] for a in group.activations},
        groups={group.name: group},
    )


def _entry(probe: onnx.ModelProto, group) -> list[str]:
    """The float tensors the group's quantizers read in its probe: inputs of the nodes that read
    its weights or quantizer parameters which do not themselves depend on those."""
    nodes = list(probe.graph.node)
    readers = reader_index(nodes)
    names = set(group.weights)
    for a in group.activations:
        p = param_name(a)
        names |= {f"{p}/{k}" for k in ("scale", "zp", "qmin", "qmax")}
    direct = sorted({i for t in names for i in readers.get(t, [])})
    changed = _downstream(nodes, readers, direct)
    fixed = {t.name for t in probe.graph.initializer} | set(group.weights)
    params = tuple(param_name(a) for a in group.activations)
    entry = [
        t
        for i in direct
        for t in nodes[i].input
        if t and t not in changed and t not in fixed and not t.startswith(params)
    ]
    return sorted(set(entry))


def _downstream(nodes, readers, start: Iterable[int]) -> set[str]:
    """Every tensor computed from the outputs of the nodes `start`."""
    seen: set[int] = set()
    stack = list(start)
    tensors: set[str] = set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        for t in nodes[i].output:
            if t and t not in tensors:
                tensors.add(t)
                stack.extend(readers.get(t, []))
    return tensors
