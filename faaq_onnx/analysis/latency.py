"""What each quantizer group costs in time under each candidate kernel, measured.

The allocator's latency budget (`latency=1.1` relative to the all-W8A8 model, or
`latency-ms=...`) needs per-group costs that match the target, not bit counts:
with packed weights cast to int8, W2..W8 at A8 all run the same int8 kernel and cost
the same; A16 runs float kernels between Q/DQ pairs; a weight-only MatMulNBits has
its own kernel. So each *kernel class* among the candidates is emitted once as a
uniform model, profiled with ORT's profiler on the chosen EP and batch, and every
executed node is attributed to the group it belongs to (analysis of the emitted
graph, runtime.node_costs for the mapping). Tables are cached per model x EP x batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from faaq_onnx.analysis.discover import PASS_THROUGH
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.plan import choices_key


def kernel_class(c: Candidate, config: QuantConfig) -> str:
    """Candidates that run the same kernels share a class (and one profile)."""
    if c.is_float:
        return "float"
    if c.weight_only:
        return f"weight-only-w{c.w}"
    if config.weight_granularity == "block":
        w = f"block-w{c.w}"
    elif config.weight_storage == "dequant" and c.w <= 4:
        w = f"dq-w{c.w}"
    else:
        w = "int8w"  # cast-stored or 8-bit container: the kernel is int8 whatever the bits
    a = "a16" if c.a > 8 else ("a8" if c.a == 8 else f"a{c.a}-clip")
    return f"{w}/{a}"


@dataclass
class LatencyTable:
    """Microseconds per run: group_us[group][class], plus what no group owns, per class."""

    group_us: dict[str, dict[str, float]]
    other_us: dict[str, float]
    wall_ms: dict[str, float]
    classes: dict[str, str]  # str(candidate) -> class
    meta: dict = field(default_factory=dict)

    def cost(self, group: str, cand: Candidate) -> float:
        return self.group_us[group][self.classes[str(cand)]]

    def plan_ms(self, choices: dict[str, Candidate], reference: Candidate) -> float:
        """Estimated latency of a plan: group costs plus the reference model's fixed overhead."""
        ref = self.classes[str(reference)]
        overhead_us = self.wall_ms[ref] * 1e3 - sum(self.group_us[g][ref] for g in self.group_us)
        return (overhead_us + sum(self.cost(g, c) for g, c in choices.items())) / 1e3

    def to_dict(self) -> dict:
        return {
            "group_us": self.group_us,
            "other_us": self.other_us,
            "wall_ms": self.wall_ms,
            "classes": self.classes,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LatencyTable:
        return cls(d["group_us"], d["other_us"], d["wall_ms"], d["classes"], d.get("meta", {}))


def attribute_nodes(emitted: onnx.ModelProto, qgraph: QuantizerGraph) -> dict[str, str]:
    """{node of the emitted QDQ graph: group} for every node whose time a group should carry.

    A group carries its compute ops, the Q/DQ/Clip/Cast that feed them (its activations'
    and its weights' quantizers, found by following their outputs forward), and the
    pass-through ops (Relu) fused into its ops (found by following inputs back).
    """
    op_group = {op: g.name for g in qgraph.groups.values() for op in g.ops}
    producer = {o: n for n in emitted.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in emitted.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    quantizer_ops = {"QuantizeLinear", "DequantizeLinear", "Clip", "Cast"}
    out: dict[str, str] = {}
    for n in emitted.graph.node:
        if n.name in op_group:
            out[n.name] = op_group[n.name]
        elif n.op_type in quantizer_ops:
            g = _first_group_downstream(n, consumers, op_group, quantizer_ops | PASS_THROUGH)
            if g is not None:
                out[n.name] = g
        elif n.op_type in PASS_THROUGH and n.input:
            src = producer.get(n.input[0])
            while (
                src is not None
                and src.name not in op_group
                and src.op_type in (PASS_THROUGH | quantizer_ops)
                and src.input
            ):
                src = producer.get(src.input[0])
            if src is not None and src.name in op_group:
                out[n.name] = op_group[src.name]
    return out


def _first_group_downstream(node, consumers, op_group, walk_through, depth: int = 6) -> str | None:
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for o in n.output:
                for c in consumers.get(o, []):
                    if c.name in op_group:
                        return op_group[c.name]
                    if c.op_type in walk_through:
                        nxt.append(c)
        frontier = nxt
    return None


def latency_key(
    float_proto: onnx.ModelProto,
    config: QuantConfig,
    cands: list[Candidate],
    ep: str,
    batch: int,
    threads: int | None,
) -> str:
    h = hashlib.sha256(float_proto.SerializeToString(deterministic=True))
    settings = {
        k: v
        for k, v in config.to_dict().items()
        if k not in ("progress", "verify_samples", "scheme", "preset")
    }  # preset: data, not kernels
    h.update(
        json.dumps(
            [settings, sorted(str(c) for c in cands), ep, batch, threads, os.cpu_count(), "v1"],
            sort_keys=True,
            default=str,
        ).encode()
    )
    return h.hexdigest()[:24]


def build_latency_table(
    comp,
    cands: list[Candidate],
    ep: str = "cpu",
    batch: int = 1,
    runs: int = 20,
    threads: int | None = None,
    cache_dir=None,
) -> LatencyTable:
    """Profile one uniform model per kernel class among `cands` (and W8A8, the reference)."""
    from faaq_onnx.analysis.sensitivity import default_cache_dir
    from faaq_onnx.runtime.node_costs import measure_node_costs

    cands = sorted(set(cands) | {Candidate(8, 8)}, key=lambda c: (c.w, c.a))
    key = latency_key(comp.float_proto, comp.config, cands, ep, batch, threads)
    path = (
        None
        if cache_dir is False
        else Path(cache_dir or default_cache_dir()) / f"latency-{key}.json"
    )
    if path is not None and path.exists():
        table = LatencyTable.from_dict(json.loads(path.read_text()))
        table.meta["cached"] = str(path)
        return table
    classes = {str(c): kernel_class(c, comp.config) for c in cands}
    reps: dict[str, Candidate] = {}
    for c in cands:
        reps.setdefault(classes[str(c)], c)
    feeds = _batch_feeds(comp.inputs, batch)
    group_us: dict[str, dict[str, float]] = {g: {} for g in comp.qgraph.groups}
    other_us, wall_ms = {}, {}
    for cls, rep in reps.items():
        proto, _ = comp.build(comp.uniform(rep))
        costs = measure_node_costs(proto, feeds, ep=ep, runs=runs, threads=threads)
        owner = attribute_nodes(proto, comp.qgraph)
        other = costs.other_us
        for node, us in costs.per_node_us.items():
            g = owner.get(node)
            if g is None:
                other += us
            else:
                group_us[g][cls] = group_us[g].get(cls, 0.0) + us
        for g in group_us:
            group_us[g].setdefault(cls, 0.0)
        other_us[cls], wall_ms[cls] = other, costs.wall_ms
    table = LatencyTable(
        group_us,
        other_us,
        wall_ms,
        classes,
        {"ep": ep, "batch": batch, "runs": runs, "threads": threads, "key": key},
    )
    if path is not None:
        from faaq_onnx.outputs import write_json_atomic

        write_json_atomic(path, table.to_dict())
    return table


def _batch_feeds(inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    out = {}
    for k, v in inputs.items():
        head = np.asarray(v[:batch])
        reps = -(-batch // max(len(head), 1))
        out[k] = np.ascontiguousarray(np.concatenate([head] * reps)[:batch] if reps > 1 else head)
    return out


def matmul_kernel_choice(comp, plan, already: set[str]) -> dict:
    """Per group with MatMul/Gemm weights at W*A8: int8 kernels or weight-only MatMulNBits, whichever
    ORT runs faster on the target (config.ep, config.latency_batch), measured on the two forms."""
    from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
    from faaq_onnx.runtime.node_costs import measure_node_costs

    ops = {n.name: n.op_type for n in comp.float_proto.graph.node}
    groups = [
        g
        for g in comp.qgraph.groups.values()
        if g.weights
        and plan.choices[g.name].w <= 8
        and plan.choices[g.name].a <= 8
        and any(ops.get(o) in ("MatMul", "Gemm") for o in g.ops)
    ]
    wanted = {o for g in groups for o in g.ops if ops.get(o) in ("MatMul", "Gemm")} - already
    if not wanted:
        return {"nbits_nodes": set(), "groups": {}}
    int8_proto, _ = comp.build(plan, nbits=set(already))
    nbits_proto, converted = convert_to_matmulnbits(
        int8_proto, drop_activation_qdq=True, nodes=wanted
    )
    feeds = _batch_feeds(comp.inputs, comp.config.latency_batch)
    costs = {}
    for form, proto in (("int8", int8_proto), ("nbits", nbits_proto)):
        c = measure_node_costs(proto, feeds, ep=comp.config.ep)
        owner = attribute_nodes(proto, comp.qgraph)
        per_group: dict[str, float] = {}
        for node, us in c.per_node_us.items():
            if owner.get(node):
                per_group[owner[node]] = per_group.get(owner[node], 0.0) + us
        costs[form] = per_group
    chosen, report = set(), {}
    for g in groups:
        a, b = costs["int8"].get(g.name, 0.0), costs["nbits"].get(g.name, 0.0)
        nodes = {o for o in g.ops if o in converted}
        pick = "nbits" if nodes and b < a else "int8"
        report[g.name] = {"int8_us": round(a, 2), "nbits_us": round(b, 2), "choice": pick}
        if pick == "nbits":
            chosen |= nodes
    return {
        "nbits_nodes": chosen,
        "groups": report,
        "ep": comp.config.ep,
        "batch": comp.config.latency_batch,
    }


def matmul_nbits_nodes(comp, plan) -> set[str]:
    """MatMul/Gemm nodes emitted as weight-only MatMulNBits: those of weight-only groups, and of
    W*A8 groups when --matmul-kernel is nbits, or auto and ORT measured MatMulNBits faster."""
    out: set[str] = set()
    ops = {n.name: n.op_type for n in comp.float_proto.graph.node}
    for g in comp.qgraph.groups.values():
        c = plan.choices[g.name]
        if not g.weights or c.w > 8:
            continue
        if c.weight_only or (c.a <= 8 and comp.config.matmul_kernel == "nbits"):
            out |= {o for o in g.ops if ops.get(o) in ("MatMul", "Gemm")}
    if comp.config.matmul_kernel == "auto":
        key = choices_key(plan.choices)
        if key not in comp._matmul_choice:
            with comp.stage("latency_profile"):
                comp._matmul_choice[key] = matmul_kernel_choice(comp, plan, out)
        out |= comp._matmul_choice[key]["nbits_nodes"]
    return out
