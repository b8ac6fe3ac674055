"""Fold a constant zero Pad into the Conv that reads it.

TF-style SAME padding reaches ONNX as an explicit Pad in front of strided and depthwise
Convs. Left in place, the Pad runs on its own before every such Conv; folded into the
Conv's `pads`, the padding is free. Only what Conv can express is folded: constant mode
with a zero value, non-negative pads, nothing on the batch and channel axes, a Pad read
by Convs alone, Convs without auto_pad. tf2onnx pads in NHWC, in front of the layout
Transpose before the Conv (Keras' ZeroPadding2D and 'same' strides: Pad -> Transpose -> Conv);
the pads are then carried through the Transpose's permutation.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import const_array, only_reader


class FoldPadIntoConvPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        modified = False
        graph = model.graph
        for pad in list(graph):
            spatial = _spatial_pads(pad)
            if spatial is None:
                modified |= _fold_through_transpose(graph, pad)
                continue
            y = pad.outputs[0]
            if not _pad_the_convs(y, spatial):
                continue
            ir.convenience.replace_all_uses_with(y, pad.inputs[0])
            graph.remove(pad, safe=True)
            modified = True
        return PassResult(model, modified)


def _pad_the_convs(y: ir.Value, spatial: list[int]) -> bool:
    """Add `spatial` ([begin..., end...]) to the pads of every Conv reading `y`, where all its
    readers are Convs that take them (and `y` is no graph output); whether it did."""
    readers = [u.node for u in y.uses()]
    rank = len(spatial) // 2
    if not readers or y.is_graph_output() or not all(_takes_pads(n, rank) for n in readers):
        return False
    for conv in readers:
        new = [int(a + b) for a, b in zip(_conv_pads(conv, rank), spatial)]
        conv.attributes["pads"] = ir.AttrInt64s("pads", new)
    return True


def _fold_through_transpose(graph: ir.Graph, pad: ir.Node) -> bool:
    """Pad -> Transpose -> Convs: the Transpose reads the unpadded tensor and the Convs pad."""
    full = _zero_pads(pad)
    t = only_reader(pad.outputs[0])
    if full is None or t is None:
        return False
    perm = t.attributes.get("perm") if t.op_type == "Transpose" else None
    rank = len(full) // 2
    if perm is None or t.domain not in ("", "ai.onnx") or len(perm.value) != rank:
        return False
    begin = [full[p] for p in perm.value]
    end = [full[rank + p] for p in perm.value]
    z = t.outputs[0]
    if any(begin[:2]) or any(end[:2]) or not _pad_the_convs(z, begin[2:] + end[2:]):
        return False
    t.replace_input_with(0, pad.inputs[0])
    z.shape = None  # unpadded now: shape inference at the end of canonicalization says
    graph.remove(pad, safe=True)
    return True


def _zero_pads(pad: ir.Node) -> list[int] | None:
    """[begin..., end...] over every axis of a constant zero Pad, else None."""
    if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx") or len(pad.inputs) < 2:
        return None
    mode = pad.attributes.get("mode")
    if mode is not None and mode.value != "constant":
        return None
    if len(pad.inputs) > 2 and pad.inputs[2] is not None:
        value = const_array(pad.inputs[2])
        if value is None or np.any(value != 0):
            return None
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        return None  # axes input (opset 18): rare, left alone
    pads = const_array(pad.inputs[1])
    if pads is None or pads.ndim != 1 or len(pads) % 2 or len(pads) < 6 or np.any(pads < 0):
        return None
    return [int(p) for p in pads]


def _spatial_pads(pad: ir.Node) -> list[int] | None:
    """[begin..., end...] over the spatial axes of a Pad Conv can absorb, else None."""
    pads = _zero_pads(pad)
    if pads is None:
        return None
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if any(begin[:2]) or any(end[:2]):
        return None
    return begin[2:] + end[2:]


def _takes_pads(node: ir.Node, rank: int) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return False
    auto_pad = node.attributes.get("auto_pad")
    if auto_pad is not None and auto_pad.value not in ("NOTSET", ""):
        return False
    return node.inputs[0] is not None and len(_conv_pads(node, rank)) == 2 * rank


def _conv_pads(conv: ir.Node, rank: int) -> list[int]:
    pads = conv.attributes.get("pads")
    return list(pads.value) if pads is not None else [0] * (2 * rank)
