"""Multiply-accumulates per sample of each quantized op: what a bops budget weighs groups by.

Static shapes come from the graph. Where the exporter left non-batch dims symbolic (attention
score and context MatMuls of a dynamic-batch transformer export), the shapes calibration
observed fill them in (`with_observed_macs`): without them those groups cost 0 MACs and a
bops budget would hand them out for free.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_ir as ir

from faaq_onnx.groups import QuantizerGraph


def op_macs(node: ir.Node, shape_of) -> int:
    """Multiply-accumulates per sample, from the output shape and the weight shape."""
    out = shape_of(node.outputs[0])
    if out is None:
        return _matmul_macs_from_inputs(node, shape_of) if node.op_type == "MatMul" else 0
    per_sample = int(np.prod(out[1:])) if len(out) > 1 else int(np.prod(out))
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = shape_of(node.inputs[1])
        if w is None:
            return 0
        if op == "Conv":
            return per_sample * int(np.prod(w[1:]))
        # ConvTranspose weights are (C_in, C_out / group, k...): the group is in w[1] already
        x = shape_of(node.inputs[0])
        return int(np.prod(x[1:])) * int(np.prod(w[1:])) if x is not None else 0
    if op in ("Gemm", "MatMul"):
        a = shape_of(node.inputs[0])
        b = shape_of(node.inputs[1])
        if a is None or b is None:
            return 0
        if op == "Gemm":
            trans_a = node.attributes.get("transA")
            k = a[0] if trans_a is not None and trans_a.value else a[-1]
        else:
            k = a[-1]
        if len(out) <= 2:
            per_sample = int(out[-1]) if len(out) == 2 else per_sample
            per_sample *= _rows_per_sample(node, shape_of)
        return per_sample * int(k)
    if op in ("Add", "GlobalAveragePool", "AveragePool"):
        x = shape_of(node.inputs[0])
        return int(np.prod(x[1:])) if x is not None and len(x) > 1 else 0
    return 0


def _rows_per_sample(node: ir.Node, shape_of) -> int:
    """Rows of a 2-D Gemm/MatMul input that belong to one sample: 1, unless the input is a
    [batch, sequence, ..., K] tensor flattened to [batch * sequence * ..., K] by a Reshape
    (fuse_matmul_add's form of a fixed-shape transformer layer): then sequence * ...."""
    a = node.inputs[0] if node.inputs else None
    prod = a.producer() if a is not None else None
    if prod is None or prod.op_type != "Reshape" or not prod.inputs:
        return 1
    src, flat = shape_of(prod.inputs[0]), shape_of(a)
    if src is None or flat is None or len(src) < 3 or len(flat) != 2 or src[-1] != flat[-1]:
        return 1  # not rows flattened with their features kept (a CNN's [N, C, 1, 1] -> [N, C])
    return int(np.prod(src[1:-1]))


def _static_shape(v: ir.Value | None):
    if v is None:
        return None
    if v.const_value is not None:
        return tuple(v.const_value.shape)
    if v.shape is None:
        return None
    dims = list(v.shape)
    if any(not isinstance(d, int) for d in dims[1:]):
        return None
    return (1, *dims[1:]) if dims else ()


def _matmul_macs_from_inputs(node: ir.Node, shape_of) -> int:
    """A MatMul's MACs per sample from its two inputs' shapes (batch dims broadcast)."""
    a = shape_of(node.inputs[0])
    b = shape_of(node.inputs[1])
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return 0
    try:
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    except ValueError:
        return 0
    rows = int(np.prod(batch[1:])) * int(a[-2]) if batch else 1  # rank 2: a[-2] is the sample
    return rows * int(a[-1]) * int(b[-1])


def with_observed_macs(qgraph: QuantizerGraph, model: ir.Model, calibration) -> QuantizerGraph:
    """The groups' and weights' MACs recounted with the per-sample shapes calibration observed
    where the graph's own shapes are symbolic (static shapes keep precedence)."""
    stats = calibration.stats

    def shape_of(v):
        static = _static_shape(v)
        if static is not None or v is None:
            return static
        seen = stats.get(v.name)
        return None if seen is None or seen.shape is None else (1, *seen.shape)

    nodes = {n.name: n for n in model.graph}
    macs = {name: op_macs(n, shape_of) for name, n in nodes.items() if _counted(n)}
    groups = {
        k: replace(g, macs=sum(macs.get(o, 0) for o in g.ops)) for k, g in qgraph.groups.items()
    }
    weights = {
        k: replace(w, macs=sum(macs.get(o, 0) for o in w.consumers))
        for k, w in qgraph.weights.items()
    }
    if all(groups[k].macs == g.macs for k, g in qgraph.groups.items()):
        return qgraph
    return replace(qgraph, groups=groups, weights=weights)


def _counted(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx") and bool(node.outputs)
