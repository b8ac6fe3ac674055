"""Turn a MatMul by a constant weight plus a constant bias Add into one Gemm.

Exporters (Paddle, TF converters, TorchScript with some opsets) write a classifier as
MatMul + Add. ONNX Runtime fuses the two into a float Gemm at load, before its QDQ
fusion, and a Gemm whose bias is a float Add's constant gets no integer kernel. As a
Gemm here, the bias becomes faaq's int32 bias and the layer runs as QGemm.

A transformer exported with fixed shapes has the same pair on [batch, sequence, K]
inputs: ORT reshapes them to 2-D and fuses them into a float Gemm too (a fixed-shape BERT
block's output projection and feed-forward layers, whose outputs feed a LayerNorm or a
GELU, ran in float). With every dimension known, the pair becomes Reshape -> Gemm ->
Reshape here, as ORT would write it, and the Gemm runs as QGemm.
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
            add, bias, n_w = fused
            a, out = mm.inputs[0], add.outputs[0]
            flat = _flattened(graph, mm, a) if len(a.shape) > 2 else None
            gemm = ir.node("Gemm", [flat.outputs[0] if flat else a, mm.inputs[1], bias])
            gemm.name = mm.name  # the layer keeps its name (plans, reports, overrides name it)
            new = [n for n in (flat, gemm) if n is not None]
            if flat is not None:  # back to [batch, sequence, N]
                dims = np.array([*a.shape.numpy()[:-1], n_w], np.int64)
                shape = add_initializer(graph, f"{mm.name}_out_shape", dims)
                new.append(
                    ir.node("Reshape", [gemm.outputs[0], shape], name=f"{mm.name}_unflatten")
                )
                gemm.outputs[0].shape = ir.Shape([int(np.prod(dims[:-1])), n_w])
                gemm.outputs[0].type = out.type
                gemm.outputs[0].name = f"{out.name}_2d"
            result = new[-1].outputs[0]
            result.type = out.type
            result.shape = out.shape if flat is None else ir.Shape([int(d) for d in dims])
            graph.insert_after(add, new)
            ir.convenience.replace_all_uses_with(out, result, replace_graph_outputs=True)
            name = out.name
            out.name = name + "_unfused"
            result.name = name
            graph.remove([add, mm], safe=True)
            modified = True
        return PassResult(model, modified)


def _fusable(mm: ir.Node):
    """(the bias Add, its 1-D bias value, the weight's output width) when `mm` can become a Gemm,
    else None."""
    if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx") or len(mm.inputs) != 2:
        return None
    a, w = mm.inputs
    if a is None or a.shape is None or w is None or not w.is_initializer():
        return None
    if len(a.shape) < 2 or (len(a.shape) > 2 and not _static(a)):
        return None  # ORT fuses a rank-3 pair only with every dimension known: so do we
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
        return add, other, int(warr.shape[1])
    bias = add_initializer(
        mm.graph, f"{other.name}_gemm_bias", np.ascontiguousarray(barr.reshape(-1))
    )
    return add, bias, int(warr.shape[1])


def _static(v: ir.Value) -> bool:
    return v.shape is not None and all(isinstance(d, int) and d > 0 for d in v.shape)


def _flattened(graph: ir.Graph, mm: ir.Node, a: ir.Value) -> ir.Node:
    """Reshape [d0, ..., K] -> [d0 * ..., K] in front of the Gemm."""
    dims = [int(d) for d in a.shape.numpy()]
    shape = add_initializer(graph, f"{mm.name}_in_shape", np.array([-1, dims[-1]], np.int64))
    node = ir.node("Reshape", [a, shape], name=f"{mm.name}_flatten")
    node.outputs[0].name = f"{a.name}_{mm.name}_2d"
    node.outputs[0].shape = ir.Shape([int(np.prod(dims[:-1])), dims[-1]])
    node.outputs[0].type = a.type
    return node
