"""Activation half of QDQ emission: drop clamps the quantizer makes redundant, then
insert one QuantizeLinear/DequantizeLinear pair per tensor of each shared scale.

Activations always live in 8-bit (or 16-bit) containers: ORT has no sub-byte
activation kernels. Widths below the container (A4, A6) get a Clip before the
QuantizeLinear that bounds them to their own range.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import add_initializer, const_array, values_by_name


class DropRedundantClampsPass(InPlacePass):
    """Remove Relu/Clip whose bounds the following quantizer's own range already enforces.

    Integer kernels expect Conv -> Q directly (QLinearConv fuses the clamp into the
    requantization), so a Relu left between them blocks fusion.
    """

    def __init__(self, qgraph, act_params: dict, summary, keep=frozenset()) -> None:
        self.qgraph, self.act_params, self.summary, self.keep = qgraph, act_params, summary, keep

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        nodes = {n.name: n for n in graph}
        modified = False
        for name, aq in self.qgraph.activations.items():
            if (
                name in self.keep
            ):  # a weight-only MatMulNBits will bypass this Q/DQ: its clamp must stay
                continue
            scale, zp, fmt = self.act_params[name][:3]
            rep_lo, rep_hi = scale * (fmt.qmin - zp), scale * (fmt.qmax - zp)
            for node_name in aq.droppable:
                node = nodes.get(node_name)
                if node is None:
                    continue
                clip_lo, clip_hi = clamp_bounds(node)
                if clip_lo is None or rep_lo < clip_lo - 1e-12 or rep_hi > clip_hi + 1e-12:
                    continue
                x, y = node.inputs[0], node.outputs[0]
                if x.is_graph_input() and y.is_graph_output():
                    continue
                was_output = y.is_graph_output()
                ir.convenience.replace_all_uses_with(y, x, replace_graph_outputs=True)
                if was_output:
                    out_name = y.name
                    y.name = out_name + "_clamped"
                    x.name = out_name
                graph.remove(node, safe=True)
                self.summary.dropped_clamps.append(node_name)
                modified = True
        return PassResult(model, modified)


class InsertActivationQDQPass(InPlacePass):
    """One Q/DQ pair per tensor of every activation quantizer, all sharing its scale."""

    def __init__(self, qgraph, act_params: dict, summary) -> None:
        self.qgraph, self.act_params, self.summary = qgraph, act_params, summary

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        values = values_by_name(graph)
        modified = False
        for name, aq in self.qgraph.activations.items():
            scale, zp, fmt = self.act_params[name][:3]
            s_val = add_initializer(graph, f"{_short(name)}_scale", np.array(scale, np.float32))
            z_val = add_initializer(
                graph, f"{_short(name)}_zero_point", np.array(zp, dtype=fmt.numpy_type)
            )
            for tensor in aq.tensors:
                v = values.get(tensor)
                if v is None or (v.producer() is None and not v.is_graph_input()):
                    continue
                uses = [(u.node, u.idx) for u in v.uses()]
                if not uses and not v.is_graph_output():
                    continue
                self._insert(graph, v, tensor, uses, scale, zp, fmt, s_val, z_val)
                modified = True
        return PassResult(model, modified)

    @staticmethod
    def _insert(graph, v, tensor, uses, scale, zp, fmt, s_val, z_val) -> None:
        new_nodes = []
        src = v
        if not fmt.fills_container:
            lo_v = add_initializer(
                graph, f"{tensor}_clip_lo", np.array(scale * (fmt.qmin - zp), np.float32)
            )
            hi_v = add_initializer(
                graph, f"{tensor}_clip_hi", np.array(scale * (fmt.qmax - zp), np.float32)
            )
            clip = ir.node("Clip", [v, lo_v, hi_v], name=f"{tensor}_clip")
            clip.outputs[0].name = f"{tensor}_clipped"
            new_nodes.append(clip)
            src = clip.outputs[0]
        qn = ir.node("QuantizeLinear", [src, s_val, z_val], name=f"{tensor}_QuantizeLinear")
        qn.outputs[0].name = f"{tensor}_quantized"
        dqn = ir.node(
            "DequantizeLinear", [qn.outputs[0], s_val, z_val], name=f"{tensor}_DequantizeLinear"
        )
        dq_out = dqn.outputs[0]
        dq_out.name = f"{tensor}_dequantized"
        dq_out.type = v.type if v.type is not None else ir.TensorType(ir.DataType.FLOAT)
        dq_out.shape = v.shape
        new_nodes += [qn, dqn]
        graph.extend(new_nodes)
        for node, idx in uses:
            node.replace_input_with(idx, dq_out)
        if v.is_graph_output():
            for i, out in enumerate(graph.outputs):
                if out is v:
                    graph.outputs[i] = dq_out
            orig = v.name
            v.name = orig + "_float"
            dq_out.name = orig


def clamp_bounds(node: ir.Node) -> tuple[float | None, float | None]:
    if node.op_type == "Relu":
        return 0.0, np.inf
    if (
        node.op_type == "Clip"
    ):  # bounds as inputs: canonicalization has upgraded the model to opset >= 13
        lo_a = (
            const_array(node.inputs[1])
            if len(node.inputs) > 1 and node.inputs[1] is not None
            else np.array(-np.inf)
        )
        hi_a = (
            const_array(node.inputs[2])
            if len(node.inputs) > 2 and node.inputs[2] is not None
            else np.array(np.inf)
        )
        if lo_a is None or hi_a is None:
            return None, None
        return float(lo_a), float(hi_a)
    return None, None


def _short(name: str) -> str:
    return name.replace("act:", "").replace("/", "_")
