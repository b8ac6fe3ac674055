"""The sensitivity probe: one graph in which any quantization configuration is data.

Every quantized weight becomes an overridable graph input (feed the fake-quantized
weight or nothing), and every activation quantizer becomes a fake-quant subgraph
whose scale, zero point, integer range and on/off switch are graph inputs. Phase 1
and phase 2 then run in ONE ONNX Runtime session: a new configuration is new data,
not a new graph or a new session (DESIGN.md, sensitivity performance rule).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.quant.affine import onnx_fake_quant

PARAM_SUFFIX = "__fq_params"  # [scale, zero_point, qmin, qmax]
_BIG = 3.0e38
# "Off" is a power-of-two scale so small that x / s * s == x exactly and x / s is
# already an integer in float32 for every |x| > 2**-77: no switch op is needed.
_OFF_SCALE = 2.0**-100


def param_name(act: str) -> str:
    return act.replace("act:", "fq:") + PARAM_SUFFIX


def disabled_params() -> np.ndarray:
    return np.array([_OFF_SCALE, 0.0, -_BIG, _BIG], np.float32)


def probe_feeds(activations, weights=None, act_params=None) -> dict[str, np.ndarray]:
    """What a probe run is fed: every activation quantizer of `activations` switched off
    unless `act_params` ({activation: params}) sets it, and `weights` ({name: values})."""
    feeds = {param_name(a): disabled_params() for a in activations}
    feeds.update({param_name(a): p for a, p in (act_params or {}).items()})
    feeds.update(weights or {})
    return feeds


def enabled_params(scale: float, zp: int, qmin: int, qmax: int) -> np.ndarray:
    return np.array([scale, zp, qmin, qmax], np.float32)


def root_tensors(proto: onnx.ModelProto, tensors: list[str]) -> list[str]:
    """Tensors of a shared scale not produced by a pass-through op from the same set.

    Relu, MaxPool, Reshape, ... map values on the quantization grid onto the grid, so
    fake-quantizing the roots alone gives what QDQ on every member gives.
    """
    from faaq_onnx.analysis.discover import PASS_THROUGH

    members = set(tensors)
    producer = {o: n for n in proto.graph.node for o in n.output}
    roots = []
    for t in tensors:
        n = producer.get(t)
        if n is not None and n.op_type in PASS_THROUGH and n.input and n.input[0] in members:
            continue
        roots.append(t)
    return roots


def build_probe(proto: onnx.ModelProto, qgraph: QuantizerGraph) -> onnx.ModelProto:
    """A copy of the float model with fake-quant hooks on every quantizer.

    Weights and their layers' biases (fed rounded as the emitted model stores them, quant.bias)
    become graph inputs whose initializer is the default, so a run may feed other values or none.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    g = probe.graph
    inits = {t.name: t for t in g.initializer}
    existing_inputs = {i.name for i in g.input}
    biases = [wq.bias for wq in qgraph.weights.values() if wq.bias]
    for wname in dict.fromkeys([*qgraph.weights, *biases]):
        if wname in inits and wname not in existing_inputs:
            t = inits[wname]
            g.input.append(helper.make_tensor_value_info(wname, t.data_type, list(t.dims)))

    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    outputs = {o.name for o in g.output}
    new_nodes: list[onnx.NodeProto] = []
    renamed_outputs: dict[str, str] = {}
    for act, aq in qgraph.activations.items():
        pname = param_name(act)
        g.input.append(helper.make_tensor_value_info(pname, TensorProto.FLOAT, [4]))
        p = {k: f"{pname}/{k}" for k in ("scale", "zp", "qmin", "qmax")}
        for i, k in enumerate(("scale", "zp", "qmin", "qmax")):
            idx = f"{pname}/idx{i}"
            g.initializer.append(helper.make_tensor(idx, TensorProto.INT64, [], [i]))
            new_nodes.append(helper.make_node("Gather", [pname, idx], [p[k]], axis=0))
        for t in root_tensors(proto, aq.tensors):
            if t not in consumers and t not in outputs:
                continue
            y = f"{t}__fq"
            new_nodes += onnx_fake_quant(
                helper, t, p["scale"], p["zp"], p["qmin"], p["qmax"], y, prefix=y
            )
            for node, i in consumers.get(t, []):
                node.input[i] = y
            if t in outputs:
                renamed_outputs[t] = y
    for o in g.output:
        if o.name in renamed_outputs:
            new_nodes.append(
                helper.make_node("Identity", [renamed_outputs[o.name]], [o.name + "__probe_out"])
            )
            o.name = o.name + "__probe_out"
    g.node.extend(new_nodes)
    _toposort(g)
    return probe


def _toposort(g: onnx.GraphProto) -> None:
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending = list(g.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError("probe graph has a cycle or a missing input")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
