"""Fold a constant scale (Mul) or shift (Add) behind a Conv (or ConvTranspose) into its weight
and bias.

Paddle writes BatchNorm-like per-channel or scalar affines as Mul/Add with constants after a
Conv (PP-OCRv4's "learnable affine" blocks; a bias-free Conv plus an Add of its bias). Left
in place they run in float between the Conv's QuantizeLinear and the next op; ONNX Runtime's
own float optimizer folds them (ConvMulFusion, ConvAddFusion), but only where no
QuantizeLinear sits in between. Folded here, before discovery, the Conv's output is the
affine's output: one op, one quantizer, an integer kernel.

Conv(x, W, b) * s + t = Conv(x, W * s, b * s + t) for s, t constant per output channel.
tf2onnx leaves the same behind a layout Transpose (Conv -> Transpose to NHWC -> Mul/Add of a
constant along the last axis: Keras MobileNetV3's BatchNorms); the constant is then per channel
of the axis the Transpose moves the channels to, and folds the same way.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import add_initializer, const_array, only_reader


class FoldConvAffinePass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        changed = True
        while changed:  # Conv -> Mul -> Add folds one op per round
            changed = False
            for conv in list(graph):
                found = _foldable(conv)
                if found is None:
                    continue
                op, per_channel, via = found
                _fold(graph, conv, op, per_channel, via)
                changed = modified = True
        return PassResult(model, modified)


def _per_channel(
    arr: np.ndarray | None, channels: int, rank: int, axis: int = 1
) -> np.ndarray | None:
    """`arr` as one value per output channel, when it broadcasts against a Conv output of
    `rank` dims (channels on `axis`) as a scalar or along the channel axis only; else None."""
    if arr is None or arr.dtype.kind != "f" or arr.ndim > rank:
        return None
    if arr.size == 1:
        return np.full(channels, float(arr.reshape(-1)[0]), np.float64)
    shape = (1,) * (rank - arr.ndim) + arr.shape  # numpy's broadcasting aligns the last axes
    if shape[axis] == channels and all(d == 1 for i, d in enumerate(shape) if i != axis):
        return arr.reshape(-1).astype(np.float64)
    return None


def _out_channels(conv: ir.Node, warr: np.ndarray) -> tuple[int, int]:
    """(output channels, their axis in the weight): Conv weights are (C_out, C_in/g, k...),
    ConvTranspose weights (C_in, C_out/g, k...)."""
    if conv.op_type == "Conv":
        return warr.shape[0], 0
    group = conv.attributes.get("group")
    return warr.shape[1] * (group.value if group is not None else 1), 1


def _foldable(conv: ir.Node) -> tuple[ir.Node, np.ndarray, ir.Node | None] | None:
    """(the Mul or Add behind `conv`, its constant per output channel, the layout Transpose
    between them or None) when it folds."""
    if (
        conv.op_type not in ("Conv", "ConvTranspose")
        or conv.domain not in ("", "ai.onnx")
        or len(conv.inputs) < 2
    ):
        return None
    w = conv.inputs[1]
    if w is None or not w.is_initializer() or len(list(w.uses())) != 1:
        return None
    warr = const_array(w)
    if warr is None or warr.dtype.kind != "f":
        return None
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if bias is not None and (
        not bias.is_initializer() or len(list(bias.uses())) != 1 or const_array(bias) is None
    ):
        return None
    y = conv.outputs[0]
    op, via, at = only_reader(y), None, 1
    if op is not None and op.op_type == "Transpose" and op.domain in ("", "ai.onnx"):
        perm = op.attributes.get("perm")
        if perm is None or len(perm.value) != warr.ndim:
            return None
        via, at = op, list(perm.value).index(1)  # where the Transpose puts the channels
        op = only_reader(op.outputs[0])
    if op is None or op.op_type not in ("Mul", "Add") or op.domain not in ("", "ai.onnx"):
        return None
    if len(op.inputs) != 2:
        return None
    read = (via or conv).outputs[0]
    other = op.inputs[1] if op.inputs[0] is read else op.inputs[0]
    channels, axis = _out_channels(conv, warr)
    per_channel = _per_channel(const_array(other), channels, warr.ndim, at)
    if per_channel is None or (y.shape is not None and len(y.shape) != warr.ndim):
        return None
    if op.op_type == "Mul" and axis == 1 and channels != warr.shape[1]:
        return None  # a grouped ConvTranspose's output channels are not one weight axis
    return op, per_channel, via


def _fold(
    graph: ir.Graph, conv: ir.Node, op: ir.Node, c: np.ndarray, via: ir.Node | None = None
) -> None:
    w = conv.inputs[1]
    assert w is not None
    warr = const_array(w)
    assert warr is not None
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    channels, axis = _out_channels(conv, warr)
    barr = np.zeros(channels) if bias is None else const_array(bias).astype(np.float64)
    if op.op_type == "Mul":
        shape = [1] * warr.ndim
        shape[axis] = -1
        new_w = warr * c.reshape(shape).astype(warr.dtype)
        new_b = barr * c
    else:
        new_w, new_b = warr, barr + c
    w.const_value = ir.tensor(np.ascontiguousarray(new_w), name=w.name)
    b_value = np.ascontiguousarray(new_b.astype(warr.dtype))
    if bias is None:
        if len(conv.inputs) < 3:
            conv.resize_inputs(3)
        conv.replace_input_with(2, add_initializer(graph, f"{w.name}_bias", b_value))
    else:
        bias.const_value = ir.tensor(b_value, name=bias.name)
    out, folded = op.outputs[0], (via or conv).outputs[0]
    folded.type, folded.shape = out.type, out.shape
    ir.convenience.replace_all_uses_with(out, folded, replace_graph_outputs=True)
    name = out.name
    graph.remove(op, safe=True)
    folded.name = name  # the tensor keeps the name readers and reports know it by
