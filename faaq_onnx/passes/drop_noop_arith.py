"""Drop arithmetic that changes nothing: x·1, x/1, x+0, x−0.

Exporters write them (PaddlePaddle's Swish is x·Sigmoid(1·x)). ORT's optimizer removes
them at load time, but only after quantization has been decided: a Mul by one between a
quantized tensor and a Sigmoid hides that the Sigmoid reads the quantized tensor, so the
Swish around it would stay float (coverage.with_products_between_quantized). Only a
constant of one element whose broadcast cannot change the other operand's shape goes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import const_array, is_float_tensor, known_rank

_NEUTRAL = {"Mul": (1.0, (0, 1)), "Div": (1.0, (1,)), "Add": (0.0, (0, 1)), "Sub": (0.0, (1,))}


class DropNoopArithmeticPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        modified = False
        graph = model.graph
        for node in list(graph):
            kept = _kept_operand(node)
            if kept is None:
                continue
            y = node.outputs[0]
            if y.is_graph_output():
                continue
            ir.convenience.replace_all_uses_with(y, kept)
            graph.remove(node, safe=True)
            modified = True
        return PassResult(model, modified)


def _kept_operand(node: ir.Node) -> ir.Value | None:
    """The operand a neutral op passes through unchanged, else None."""
    if node.op_type not in _NEUTRAL or node.domain not in ("", "ai.onnx"):
        return None
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    neutral, positions = _NEUTRAL[node.op_type]
    for i in positions:
        c, x = node.inputs[i], node.inputs[1 - i]
        arr = const_array(c)
        if arr is None or arr.size != 1 or not is_float_tensor(x) or x.dtype != c.dtype:
            continue
        if float(np.asarray(arr).reshape(-1)[0]) != neutral or x.const_value is not None:
            continue
        rank = known_rank(x)
        if arr.ndim == 0 or (rank is not None and rank >= arr.ndim):
            return x
    return None
