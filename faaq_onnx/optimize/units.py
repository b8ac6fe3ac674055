"""Reconstruction units: the pieces of the graph whose output rounding optimization matches.

AdaRound reconstructs one weighted layer at a time (with the Relu/Clip that follows it,
as the paper's asymmetric reconstruction does); BRECQ reconstructs blocks, found from
the graph: a block is what lies between two residual Adds (a ResNet basic block, a
transformer sublayer). Each unit knows its nodes, the activation tensors entering it
and the tensor leaving it, so its inputs and targets can be taken from ONNX Runtime
and its forward pass run in torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper

from faaq_onnx.graph import ancestor_nodes
from faaq_onnx.groups import QuantizerGraph

CLAMPS = ("Relu", "Clip")


@dataclass
class Unit:
    name: str
    nodes: list[str]  # node names, topological order
    inputs: list[str]  # activation tensors entering the unit
    output: str  # the tensor whose value the reconstruction matches
    weights: list[str] = field(default_factory=list)  # quantized weights inside
    activations: list[str] = field(
        default_factory=list
    )  # activation quantizers inside (BRECQ learns them)


def _index(proto: onnx.ModelProto):
    producer = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def layer_units(proto: onnx.ModelProto, qgraph: QuantizerGraph) -> list[Unit]:
    """One unit per weighted node (in graph order), with a single trailing Relu/Clip."""
    producer, consumers = _index(proto)
    inits = {t.name for t in proto.graph.initializer}
    by_name = {n.name: n for n in proto.graph.node}
    units = []
    for node in proto.graph.node:
        weights = [
            w
            for w in node.input
            if w in qgraph.weights and node.name in qgraph.weights[w].consumers
        ]
        if not weights:
            continue
        nodes, out = [node.name], node.output[0]
        readers = consumers.get(out, [])
        if len(readers) == 1 and readers[0].op_type in CLAMPS and out not in _graph_outputs(proto):
            nodes.append(readers[0].name)
            out = readers[0].output[0]
        ins = [i for i in node.input if i and i not in inits and i not in weights]
        units.append(Unit(f"layer:{node.name}", nodes, ins, out, weights))
    del by_name, producer
    return units


def block_units(proto: onnx.ModelProto, qgraph: QuantizerGraph) -> list[Unit]:
    """Blocks between residual Adds; each ends at an Add (plus its trailing clamp)."""
    producer, consumers = _index(proto)
    inits = {t.name for t in proto.graph.initializer}
    outputs = _graph_outputs(proto)
    graph_inputs = {i.name for i in proto.graph.input} - inits
    cuts: list[str] = []
    for node in proto.graph.node:
        if node.op_type == "Add" and all(i not in inits and i in producer for i in node.input):
            out = node.output[0]
            readers = consumers.get(out, [])
            if len(readers) == 1 and readers[0].op_type in CLAMPS and out not in outputs:
                out = readers[0].output[0]
            cuts.append(out)
    cuts += [o for o in outputs if o not in cuts]
    order = {n.name: i for i, n in enumerate(proto.graph.node)}
    done: set[str] = set()
    units = []
    for cut in cuts:
        members = {
            n.name for n in ancestor_nodes([cut], producer, stop=set(cuts) - {cut} | graph_inputs)
        } - done
        if not members:
            continue
        done |= members
        names = sorted(members, key=order.__getitem__)
        produced = {
            o for n in names for o in next(x for x in proto.graph.node if x.name == n).output
        }
        ins = []
        for n in names:
            for i in next(x for x in proto.graph.node if x.name == n).input:
                if i and i not in inits and i not in produced and i not in ins:
                    ins.append(i)
        weights = [w for w, wq in qgraph.weights.items() if any(c in members for c in wq.consumers)]
        acts = [a for a, aq in qgraph.activations.items() if any(t in produced for t in aq.tensors)]
        units.append(Unit(f"block:{cut}", names, ins, cut, weights, acts))
    return units


def _graph_outputs(proto: onnx.ModelProto) -> set[str]:
    return {o.name for o in proto.graph.output}


def unit_model(proto: onnx.ModelProto, unit: Unit) -> onnx.ModelProto:
    """The unit as a standalone graph (for the torch interpreter)."""
    wanted = set(unit.nodes)
    nodes = [n for n in proto.graph.node if n.name in wanted]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in proto.graph.initializer if t.name in used]
    g = helper.make_graph(
        nodes,
        unit.name,
        [helper.make_empty_tensor_value_info(i) for i in unit.inputs],
        [helper.make_empty_tensor_value_info(unit.output)],
        inits,
    )
    m = helper.make_model(g, opset_imports=list(proto.opset_import))
    m.ir_version = proto.ir_version
    return m
