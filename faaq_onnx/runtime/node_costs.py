"""Measured cost of every node of a model, attributed back to the nodes of the input graph.

The latency budget needs to know what each quantizer group costs under each kernel
choice on the target machine. ORT's profiler times the nodes of the graph it really
runs (after fusion: QLinearConv, FusedConv, ...); this module runs that profile and
maps each executed node back to the node of our graph it came from, by name, by the
'<name>_token_N' suffix of fused nodes, or by the tensor it produces.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import onnx

from faaq_onnx.runtime.profile import aggregate_trace
from faaq_onnx.runtime.session import make_session


@dataclass
class NodeCosts:
    """Median microseconds per run, per node of the *input* graph (unmapped time in `other_us`)."""

    per_node_us: dict[str, float]
    other_us: float
    wall_ms: float  # median session.run time, profiling off

    def to_dict(self) -> dict:
        return {"per_node_us": self.per_node_us, "other_us": self.other_us, "wall_ms": self.wall_ms}

    @classmethod
    def from_dict(cls, d: dict) -> NodeCosts:
        return cls(dict(d["per_node_us"]), float(d["other_us"]), float(d["wall_ms"]))


def measure_node_costs(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    ep: str = "cpu",
    runs: int = 20,
    warmup: int = 5,
    threads: int | None = None,
) -> NodeCosts:
    tmp = tempfile.mkdtemp(prefix="faaq-nodecost-")
    try:
        opt_path = os.path.join(tmp, "optimized.onnx")
        plain = make_session(model, ep=ep, threads=threads, optimized_model_path=opt_path)
        for _ in range(warmup):
            plain.run(None, feeds)
        wall = []
        for _ in range(runs):
            t0 = time.perf_counter()
            plain.run(None, feeds)
            wall.append(time.perf_counter() - t0)
        del plain
        optimized = onnx.load(opt_path, load_external_data=False)
        prof = make_session(model, ep=ep, threads=threads, profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(warmup + runs):
            prof.run(None, feeds)
        with open(prof.end_profiling()) as f:
            events = json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    trace = aggregate_trace(events, skip_runs=warmup, top=10**9)
    executed = {n["node"]: n["ms_per_run"] * 1e3 for n in trace["top_nodes"]}
    owner = map_executed_to_original(model, optimized)
    per_node: dict[str, float] = {}
    other = 0.0
    for name, us in executed.items():
        orig = owner.get(name)
        if orig is None:
            other += us
        else:
            per_node[orig] = per_node.get(orig, 0.0) + us
    return NodeCosts(per_node, other, float(np.median(wall)) * 1e3)


def map_executed_to_original(
    original: onnx.ModelProto, optimized: onnx.ModelProto
) -> dict[str, str]:
    """{executed node name: input-graph node name} for every executed node we can place."""
    orig_names = {n.name for n in original.graph.node if n.name}
    producer = {o: n.name for n in original.graph.node for o in n.output if n.name}
    out: dict[str, str] = {}
    for n in optimized.graph.node:
        if n.name in orig_names:
            out[n.name] = n.name
            continue
        base = n.name.split("_token_")[0] if "_token_" in n.name else n.name.split("_nchwc")[0]
        if base in orig_names:
            out[n.name] = base
            continue
        prefix = n.name
        while "/" in prefix and prefix not in orig_names:  # fusions named '<node>/MatMulAddFusion'
            prefix = prefix.rsplit("/", 1)[0]
        if prefix in orig_names:
            out[n.name] = prefix
            continue
        if base in producer:  # NCHWc convs are named after the tensor they produce
            out[n.name] = producer[base]
            continue
        for o in n.output:  # a fused node keeps the output name of the node it replaced
            if o in producer:
                out[n.name] = producer[o]
                break
    return out
