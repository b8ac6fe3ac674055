"""Constant operands of quantized Add/Mul, as uint8 initializers behind a DequantizeLinear.

ORT's QLinearAdd/QLinearMul need every input dequantized from uint8, a constant one too
(ORT's own quantizer does the same). A scale or shift over a feature map that nothing folded
away (Paddle's affine after HardSwish, before a padded depthwise Conv) would otherwise keep
the op, and the ops quantized around it, in float. The constant gets its own per-tensor
grid over [min(c, 0), max(c, 0)]: a scalar lands exactly on it, a vector within half a step
(which the sensitivity probe, quantizing activations and weights only, does not model).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import add_initializer, const_array, quantizer_behind

QMAX = 255  # uint8, the activation container ORT's x86 integer kernels take


def constant_grid(arr: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(uint8 codes, scale, zero point) of a constant on a grid that holds 0 and its range."""
    lo, hi = min(float(arr.min()), 0.0), max(float(arr.max()), 0.0)
    scale = (hi - lo) / QMAX if hi > lo else 1.0
    zp = int(np.clip(round(-lo / scale), 0, QMAX))
    codes = np.clip(np.round(arr / scale) + zp, 0, QMAX).astype(np.uint8)
    return codes, scale, zp


class QuantizeConstantOperandsPass(InPlacePass):
    """DQ(uint8 constant) for each constant operand (qgraph.constants) of an Add/Mul whose
    other inputs are quantized at 8 bits or fewer (A16 runs in float on ORT: left alone)."""

    def __init__(self, qgraph, act_params: dict, summary) -> None:
        self.qgraph, self.act_params, self.summary = qgraph, act_params, summary

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        nodes = {n.name: n for n in graph}
        fmt_of = {
            t: self.act_params[name][2]
            for name, aq in self.qgraph.activations.items()
            for t in aq.tensors
        }
        modified = False
        for node_name, indices in self.qgraph.constants.items():
            node = nodes.get(node_name)
            if node is None:
                continue
            fmts = [
                fmt_of.get(_source(v) or "") for i, v in enumerate(node.inputs) if i not in indices
            ]
            if not fmts or any(f is None or f.bits > 8 for f in fmts):
                continue
            # the container the other inputs live in: uint8, or int8 (codes and zero point - 128)
            shift = (
                128 if all(f is not None and f.signed and f.fills_container for f in fmts) else 0
            )
            for i in indices:
                value = node.inputs[i]
                arr = const_array(value)
                if value is None or arr is None:
                    continue
                codes, scale, zp = constant_grid(np.asarray(arr, np.float32))
                ctype = np.int8 if shift else np.uint8
                codes = (codes.astype(np.int16) - shift).astype(ctype)
                base = f"{node_name}_const{i}"
                dq = ir.node(
                    "DequantizeLinear",
                    [
                        add_initializer(graph, f"{base}_quantized", codes),
                        add_initializer(graph, f"{base}_scale", np.array(scale, np.float32)),
                        add_initializer(graph, f"{base}_zero_point", np.array(zp - shift, ctype)),
                    ],
                    name=f"{base}_DequantizeLinear",
                )
                dq.outputs[0].name = f"{base}_dequantized"
                dq.outputs[0].type, dq.outputs[0].shape = value.type, value.shape
                graph.insert_before(node, dq)
                node.replace_input_with(i, dq.outputs[0])  # the float constant, now read by
                # no one, goes with emission's other orphans (emit_qdq.DropOrphanedInitializersPass)
                self.summary.constant_operands.append(f"{node_name}:{i}")
                modified = True
        return PassResult(model, modified)


def _source(v: ir.Value | None) -> str | None:
    """The float tensor an input was quantized from (its quantizer names that tensor): what
    the QuantizeLinear behind its DequantizeLinear reads; the input itself otherwise."""
    if v is None:
        return None
    dq = v.producer()
    q = quantizer_behind(dq) if dq is not None and dq.op_type == "DequantizeLinear" else None
    return q.inputs[0].name if q is not None and q.inputs[0] is not None else v.name
