"""Emit a standard QDQ model with packed low-bit weights.

Weights become integer initializers (int4/uint4 packed two per byte by ONNX's 4-bit
types, int8/uint8, int16) behind DequantizeLinear; activations get a
QuantizeLinear/DequantizeLinear pair per tensor of each shared scale; biases of
integer-kernel Conv/Gemm become int32 so ORT fuses QLinearConv/QGemm. Relu/Clip
whose clamp the quantizer already applies are removed, as integer kernels expect.
Widths with no ONNX type keep their own range inside the next container type (a
Clip before the QuantizeLinear bounds activations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from faaq_onnx.config import QuantConfig
from faaq_onnx.graph import add_initializer, const_array
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.passes.calibrate import Calibration
from faaq_onnx.plan import BitPlan
from faaq_onnx.weight_quant import QuantizedWeight

INT32_BIAS_OPS = {"Conv", "Gemm"}


@dataclass
class EmitSummary:
    weights: dict[str, dict] = field(default_factory=dict)
    activations: dict[str, dict] = field(default_factory=dict)
    dropped_clamps: list[str] = field(default_factory=list)
    int32_biases: list[str] = field(default_factory=list)


def needed_opset(plan: BitPlan, config: QuantConfig) -> int:
    """The lowest default-domain opset that has every type and layout the plan uses."""
    w_bits = {c.w for c in plan.choices.values()}
    a_bits = {c.a for c in plan.choices.values()}
    if config.weight_granularity == "block" or any(b <= 4 or b > 8 for b in w_bits) or any(b > 8 for b in a_bits):
        return 21
    return 13


def emit_qdq(model: ir.Model, qgraph: QuantizerGraph, plan: BitPlan, calib: Calibration, config: QuantConfig,
             qweights: dict[str, QuantizedWeight]) -> EmitSummary:
    """Rewrite `model` in place into its QDQ form."""
    graph = model.graph
    summary = EmitSummary()
    values = _values_by_name(graph)
    act_bits = plan.act_bits(qgraph)
    act_params = {}
    for name, aq in qgraph.activations.items():
        scale, zp, fmt, lo, hi = calib.activation_params(aq, act_bits[name], config.act_symmetric,
                                                         config.act_range, config.percentile)
        act_params[name] = (scale, zp, fmt)
        summary.activations[name] = {"bits": fmt.bits, "type": str(fmt), "scale": scale, "zero_point": zp,
                                     "range": [lo, hi], "tensors": list(aq.tensors)}

    # 1. Relu/Clip the quantizer clamp makes redundant
    removed: set[str] = set()
    nodes = {n.name: n for n in graph}
    for name, aq in qgraph.activations.items():
        scale, zp, fmt = act_params[name]
        rep_lo, rep_hi = scale * (fmt.qmin - zp), scale * (fmt.qmax - zp)
        # weight-only MatMulNBits bypasses activation Q/DQ later: the Relu must stay then
        for node_name in [] if config.weight_only_matmul else aq.droppable:
            node = nodes.get(node_name)
            if node is None:
                continue
            clip_lo, clip_hi = _clamp_bounds(node)
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
            removed.add(y.name)
            summary.dropped_clamps.append(node_name)
    values = _values_by_name(graph)

    # 2. activation Q/DQ pairs
    act_scale: dict[int, float] = {}  # id of a DequantizeLinear output -> its scale
    for name, aq in qgraph.activations.items():
        scale, zp, fmt = act_params[name]
        s_val = add_initializer(graph, f"{_short(name)}_scale", np.array(scale, np.float32))
        z_val = add_initializer(graph, f"{_short(name)}_zero_point", np.array(zp, dtype=fmt.numpy_type))
        for tensor in aq.tensors:
            v = values.get(tensor)
            if v is None or (v.producer() is None and not v.is_graph_input()):
                continue
            uses = [(u.node, u.idx) for u in v.uses()]
            if not uses and not v.is_graph_output():
                continue
            new_nodes = []
            src = v
            if not fmt.fills_container:
                lo_v = add_initializer(graph, f"{tensor}_clip_lo", np.array(scale * (fmt.qmin - zp), np.float32))
                hi_v = add_initializer(graph, f"{tensor}_clip_hi", np.array(scale * (fmt.qmax - zp), np.float32))
                clip = ir.node("Clip", [v, lo_v, hi_v], name=f"{tensor}_clip")
                clip.outputs[0].name = f"{tensor}_clipped"
                new_nodes.append(clip)
                src = clip.outputs[0]
            qn = ir.node("QuantizeLinear", [src, s_val, z_val], name=f"{tensor}_QuantizeLinear")
            qn.outputs[0].name = f"{tensor}_quantized"
            dqn = ir.node("DequantizeLinear", [qn.outputs[0], s_val, z_val], name=f"{tensor}_DequantizeLinear")
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
            act_scale[id(dq_out)] = scale

    # 3. weights and int32 biases
    nodes = {n.name: n for n in graph}
    wbits = plan.weight_bits(qgraph)
    for wname, wq in qgraph.weights.items():
        qw = qweights[wname]
        v = values.get(wname)
        if v is None:
            continue
        base = wname.replace("/", "_")
        q_val = add_initializer(graph, f"{base}_quantized", qw.q.astype(qw.fmt.numpy_type))
        s_val = add_initializer(graph, f"{base}_scale", qw.scale.astype(np.float32))
        z_val = add_initializer(graph, f"{base}_zero_point", qw.zero_point.astype(qw.fmt.numpy_type))
        attrs = {}
        if qw.axis is not None:
            attrs["axis"] = int(qw.axis)
        if qw.block_size:
            attrs["block_size"] = int(qw.block_size)
        dqn = ir.node("DequantizeLinear", [q_val, s_val, z_val], attributes=attrs, name=f"{base}_DequantizeLinear")
        dqn.outputs[0].name = f"{base}_dequantized"
        dqn.outputs[0].type = v.type
        dqn.outputs[0].shape = v.shape
        graph.extend([dqn])
        for use in list(v.uses()):
            if use.node.name in wq.consumers:
                use.node.replace_input_with(use.idx, dqn.outputs[0])
        if not v.uses() and not v.is_graph_output():
            graph.initializers.pop(wname, None)
        summary.weights[wname] = {
            "bits": wbits[wname], "type": str(qw.fmt), "container_bits": qw.fmt.container_bits,
            "granularity": "block" if qw.block_size else ("per-channel" if qw.axis is not None else "per-tensor"),
            "elements": int(qw.q.size), "stored_bytes": int(qw.stored_bytes), "float_bytes": int(qw.q.size * 4),
        }
        if config.int32_bias and wq.bias and len(wq.consumers) == 1:
            _int32_bias(graph, nodes.get(wq.consumers[0]), wq, qw, act_scale, summary)
    graph.sort()
    _set_opset(model, needed_opset(plan, config))
    return summary


def _int32_bias(graph, node, wq, qw: QuantizedWeight, act_scale: dict[int, float], summary) -> None:
    """int32 bias with scale s_x * s_w: the form ORT's QLinearConv/QGemm fusion takes."""
    if node is None or node.op_type not in INT32_BIAS_OPS or qw.block_size or qw.fmt.bits > 8:
        return
    if qw.zero_point.any() or qw.axis not in (None, wq.channel_axis):
        return
    s_x = act_scale.get(id(node.inputs[0]))
    if s_x is None:
        return
    b_val = node.inputs[2]
    b = const_array(b_val)
    if b is None or len(b_val.uses()) != 1 or b.ndim != 1:
        return
    s_w = np.broadcast_to(qw.scale.astype(np.float64).reshape(-1), b.shape)
    bias_scale = (s_x * s_w).astype(np.float32)
    bq = np.clip(np.rint(b / np.maximum(bias_scale, 1e-30)), -(2**31), 2**31 - 1).astype(np.int32)
    base = b_val.name.replace("/", "_")
    q_val = add_initializer(graph, f"{base}_quantized", bq)
    s_val = add_initializer(graph, f"{base}_scale", bias_scale)
    z_val = add_initializer(graph, f"{base}_zero_point", np.zeros(b.shape, np.int32))
    dqn = ir.node("DequantizeLinear", [q_val, s_val, z_val], attributes={"axis": 0}, name=f"{base}_DequantizeLinear")
    dqn.outputs[0].name = f"{base}_dequantized"
    dqn.outputs[0].type = b_val.type
    dqn.outputs[0].shape = b_val.shape
    graph.extend([dqn])
    node.replace_input_with(2, dqn.outputs[0])
    if not b_val.uses():
        graph.initializers.pop(b_val.name, None)
    summary.int32_biases.append(b_val.name)


def _clamp_bounds(node: ir.Node) -> tuple[float | None, float | None]:
    if node.op_type == "Relu":
        return 0.0, np.inf
    if node.op_type == "Clip":
        lo = hi = None
        if "min" in node.attributes or "max" in node.attributes:  # opset < 11
            lo = node.attributes["min"].value if "min" in node.attributes else -np.inf
            hi = node.attributes["max"].value if "max" in node.attributes else np.inf
            return float(lo), float(hi)
        lo_a = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else np.array(-np.inf)
        hi_a = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else np.array(np.inf)
        if lo_a is None or hi_a is None:
            return None, None
        return float(lo_a), float(hi_a)
    return None, None


def _values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    out = {v.name: v for v in graph.inputs}
    out.update(graph.initializers)
    for node in graph:
        for o in node.outputs:
            if o is not None and o.name:
                out[o.name] = o
    return out


def _short(name: str) -> str:
    return name.replace("act:", "").replace("/", "_")


def _set_opset(model: ir.Model, opset: int) -> None:
    key = "" if "" in model.opset_imports else "ai.onnx"
    if model.opset_imports.get(key, 0) < opset:
        raise AssertionError(f"canonicalize should have upgraded the model to opset {opset}")
