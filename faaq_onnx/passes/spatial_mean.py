"""Write a mean over every spatial axis as GlobalAveragePool.

The dynamo exporter writes a CNN's `x.mean((2, 3), keepdim=True)` and adaptive average
pooling to 1x1 as ReduceMean over the spatial axes. ORT has an integer kernel for
GlobalAveragePool (QLinearGlobalAveragePool) but none for ReduceMean, so left as written
the pooling runs in float and the residual Add in front of it gets no QLinearAdd either
(its output would feed no quantized op). The same mean as GlobalAveragePool (followed by a
Flatten where the ReduceMean dropped the reduced axes) quantizes like the TorchScript
export of the same network.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import const_array, is_float_tensor, known_rank, only_reader


class SpatialMeanToGlobalPoolPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        modified = False
        graph = model.graph
        for node in list(graph):
            keepdims = _spatial_mean(node)
            if keepdims is None:
                modified |= _nhwc_mean_to_pool(graph, node)
                continue
            x, y = node.inputs[0], node.outputs[0]
            if y.is_graph_output():
                continue  # the user's output keeps the op that makes it
            pool = ir.node("GlobalAveragePool", [x], name=node.name)
            pool.outputs[0].name = f"{y.name}_pooled"
            new = [pool]
            if not keepdims:  # [N, C, 1, ..., 1] -> [N, C], as the ReduceMean wrote it
                flat = ir.node(
                    "Flatten", [pool.outputs[0]], {"axis": 1}, name=f"{node.name}_flatten"
                )
                flat.outputs[0].name = f"{y.name}_flat"
                new.append(flat)
            out = new[-1].outputs[0]
            out.shape, out.type = y.shape, y.type
            graph.insert_before(node, new)
            ir.convenience.replace_all_uses_with(y, out)
            graph.remove(node, safe=True)
            modified = True
        return PassResult(model, modified)


def _nhwc_mean_to_pool(graph: ir.Graph, node: ir.Node) -> bool:
    """tf2onnx's squeeze-excite on an NHWC map: ReduceMean over axes 1, 2 (keepdims) -> the
    layout Transpose to NCHW -> Conv. The same as Transpose -> GlobalAveragePool, which has an
    integer kernel (the mean of the NHWC map runs in float between a DQ and a Q otherwise:
    Keras MobileNetV3, in faaq's model and ORT's quantizer's alike)."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
        return False
    x, y = node.inputs[0] if node.inputs else None, node.outputs[0]
    if x is None or known_rank(x) != 4 or not (x.dtype is None or is_float_tensor(x)):
        return False
    keep = node.attributes.get("keepdims")
    if _axes(node, 4) != [1, 2] or (keep is not None and not keep.value):
        return False
    t = only_reader(y)
    perm = t.attributes.get("perm") if t is not None and t.op_type == "Transpose" else None
    if perm is None or list(perm.value) != [0, 3, 1, 2] or t.outputs[0].is_graph_output():
        return False
    nchw = ir.node("Transpose", [x], {"perm": [0, 3, 1, 2]}, name=f"{node.name}_nchw")
    nchw.outputs[0].name = f"{x.name}_nchw"
    pool = ir.node("GlobalAveragePool", [nchw.outputs[0]], name=node.name)
    pool.outputs[0].name = f"{t.outputs[0].name}_pooled"
    pool.outputs[0].shape, pool.outputs[0].type = t.outputs[0].shape, t.outputs[0].type
    graph.insert_before(node, [nchw, pool])
    ir.convenience.replace_all_uses_with(t.outputs[0], pool.outputs[0])
    graph.remove([t, node], safe=True)
    return True


def _axes(node: ir.Node, rank: int) -> list[int] | None:
    """A ReduceMean's axes (attribute, or constant input from opset 18), sorted, non-negative
    for `rank`; None where not constant or not given (a mean over everything, batch and
    channels included)."""
    attr = node.attributes.get("axes")
    if attr is not None:
        axes = list(attr.value)
    elif len(node.inputs) > 1 and node.inputs[1] is not None:
        arr = const_array(node.inputs[1])
        if arr is None:
            return None
        axes = [int(a) for a in arr.reshape(-1)]
    else:
        return None
    return sorted(a % rank for a in axes)


def _spatial_mean(node: ir.Node) -> bool | None:
    """keepdims of a ReduceMean over every axis after the channel axis of a float tensor of
    rank 3 or more, else None."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
        return None
    x = node.inputs[0] if node.inputs else None
    if x is None or not (x.dtype is None or is_float_tensor(x)):
        return None  # GlobalAveragePool takes float tensors only
    rank = _rank(x)
    if rank is None or rank < 3:
        return None
    if _axes(node, rank) != list(range(2, rank)):
        return None
    keep = node.attributes.get("keepdims")
    return bool(keep.value) if keep is not None else True


_ELEMENTWISE = {
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "BatchNormalization",
    "Add",
    "Mul",
    "Sub",
    "Div",
}


def _rank(x: ir.Value, depth: int = 0) -> int | None:
    """x's rank as known_rank tells it, else through the elementwise ops that made it (back to
    a shape or a Conv). None when nothing tells."""
    rank = known_rank(x)
    prod = x.producer()
    if rank is not None or prod is None or depth > 16:
        return rank
    if prod.op_type not in _ELEMENTWISE or prod.domain not in ("", "ai.onnx"):
        return None
    ins = prod.inputs[:1] if prod.op_type in ("Clip", "BatchNormalization") else prod.inputs
    ranks = [
        _rank(v, depth + 1) if v.const_value is None else len(v.shape or ())
        for v in ins
        if v is not None
    ]
    return max(ranks) if ranks and all(r is not None for r in ranks) else None
