"""Turn a 2-D MatMul by a constant weight plus a constant bias Add into one Gemm.

Exporters (Paddle, TF converters, TorchScript with some opsets) write a classifier as
MatMul + Add. ONNX Runtime fuses the two into a float Gemm at load, before its QDQ
fusion, and a Gemm whose bias is a float Add's constant gets no integer kernel. As a
Gemm here, the bias becomes faaq's int32 bias and the layer runs as QGemm.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import add_initializer, const_array, is_float_tensor


class FuseMatMulAddPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        modified = False
        graph = model.graph
        for mm in list(graph):
            fused = _fusable(mm)
            if fused is None:
                continue
            add, bias = fused
            gemm = ir.node("Gemm", [mm.inputs[0], mm.inputs[1], bias])
            graph.insert_after(add, gemm)
            gemm.name = mm.name  # the layer keeps its name (plans, reports, overrides name it)
            out = add.outputs[0]
            gemm.outputs[0].type, gemm.outputs[0].shape = out.type, out.shape
            ir.convenience.replace_all_uses_with(out, gemm.outputs[0], replace_graph_outputs=True)
            name = out.name
            out.name = name + "_unfused"
            gemm.outputs[0].name = name
            graph.remove([add, mm], safe=True)
            modified = True
        return PassResult(model, modified)


def _fusable(mm: ir.Node):
    """(the bias Add, its 1-D bias value) when `mm` can become a Gemm, else None."""
    if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx") or len(mm.inputs) != 2:
        return None
    a, w = mm.inputs
    if a is None or a.shape is None or len(a.shape) != 2 or w is None or not w.is_initializer():
        return None
    warr = const_array(w)
    if warr is None or warr.ndim != 2 or not is_float_tensor(w):
        return None
    y = mm.outputs[0]
    uses = list(y.uses())
    if len(uses) != 1 or y.is_graph_output() or uses[0].node.op_type != "Add":
        return None
    add = uses[0].node
    other = add.inputs[1 - uses[0].idx]
    barr = const_array(other)
    if (
        barr is None
        or barr.dtype != warr.dtype
        or barr.size != warr.shape[1]
        or barr.ndim > 2
        or (barr.ndim == 2 and barr.shape[0] != 1)
    ):
        return None
    if other.is_initializer() and barr.ndim == 1:
        return add, other
    return add, add_initializer(
        mm.graph, f"{other.name}_gemm_bias", np.ascontiguousarray(barr.reshape(-1))
    )
