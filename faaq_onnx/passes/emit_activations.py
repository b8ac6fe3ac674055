"""Activation half of QDQ emission: drop clamps the quantizer makes redundant, then
insert one QuantizeLinear/DequantizeLinear pair per tensor of each shared scale.

Activations always live in 8-bit (or 16-bit) containers: ORT has no sub-byte
activation kernels. Widths below the container (A4, A6) live in a uint8 and get an
integer Clip between QuantizeLinear and DequantizeLinear that bounds their codes to
their own range. There it leaves op -> Q and DQ -> op adjacent, so ORT still fuses
the ops around it into QLinearConv/QGemm (a float Clip in front of the Q would run
the op in float); a uint8 container because ORT's x86 kernels only take int8
activations once it has turned an adjacent Q/DQ pair into uint8 itself.
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
            zp_code, bounds = container_codes(fmt, zp)
            s_val = add_initializer(graph, f"{_short(name)}_scale", np.array(scale, np.float32))
            z_val = add_initializer(graph, f"{_short(name)}_zero_point", zp_code)
            clip_vals = None
            if bounds is not None:
                clip_vals = tuple(
                    add_initializer(graph, f"{_short(name)}_{end}_code", code)
                    for end, code in zip(("lowest", "highest"), bounds, strict=True)
                )
            for tensor in aq.tensors:
                v = values.get(tensor)
                if v is None or (v.producer() is None and not v.is_graph_input()):
                    continue
                uses = [(u.node, u.idx) for u in v.uses()]
                if not uses and not v.is_graph_output():
                    continue
                self._insert(graph, v, tensor, uses, s_val, z_val, clip_vals)
                modified = True
        return PassResult(model, modified)

    @staticmethod
    def _insert(graph, v, tensor, uses, s_val, z_val, clip_vals) -> None:
        qn = ir.node("QuantizeLinear", [v, s_val, z_val], name=f"{tensor}_QuantizeLinear")
        qn.outputs[0].name = f"{tensor}_quantized"
        new_nodes = [qn]
        codes = qn.outputs[0]
        if clip_vals is not None:
            clip = ir.node("Clip", [codes, *clip_vals], name=f"{tensor}_clip")
            clip.outputs[0].name = f"{tensor}_quantized_clipped"
            new_nodes.append(clip)
            codes = clip.outputs[0]
        dqn = ir.node("DequantizeLinear", [codes, s_val, z_val], name=f"{tensor}_DequantizeLinear")
        dq_out = dqn.outputs[0]
        dq_out.name = f"{tensor}_dequantized"
        dq_out.type = v.type if v.type is not None else ir.TensorType(ir.DataType.FLOAT)
        dq_out.shape = v.shape
        new_nodes.append(dqn)
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


def container_codes(fmt, zp) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The zero point in the container a format's activations are stored in, and, for widths
    below the container, the lowest and highest codes the integer Clip keeps.

    A narrow signed format moves to uint8 by adding 128 to every code (zero point included):
    (q + 128 - (zp + 128)) * scale dequantizes to the same value.
    """
    if fmt.fills_container:
        return np.array(zp, dtype=fmt.numpy_type), None
    offset = 128 if fmt.signed else 0

    def code(q) -> np.ndarray:
        return np.array(int(q) + offset, dtype=np.uint8)

    return code(zp), (code(fmt.qmin), code(fmt.qmax))


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
