"""Cross-layer equalization (Nagel et al. 2019, seed 001): data-free, function-preserving.

For Conv1 -> [Relu] -> Conv2 where the tensor between them feeds nothing else, output
channel c of Conv1 is divided by s_c and input channel c of Conv2 multiplied by s_c,
s_c = sqrt(r1_c / r2_c) (r = each side's weight range for that channel), so both sides
end with the same per-channel range and per-channel or per-tensor grids waste less.
Relu is positively homogeneous, so the function is unchanged. Depthwise convolutions
(group == channels) take part on either side: their channel c is one group. Clip(0, b)
(ReLU6) is not homogeneous; with `relu6="replace"` it becomes Relu, the DFQ recipe,
which changes the function where activations exceed b (the report says so); by default
such pairs are left alone. Chains (conv -> dw -> conv) converge over a few sweeps.

onnxsim 0.8.1 ships a CLE pass, but it declines depthwise convolutions (group must be
1), which is where MobileNet-style models need equalization most.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import const_array

SWEEPS = 4


class CrossLayerEqualizationPass(InPlacePass):
    def __init__(self, relu6: str = "keep") -> None:
        if relu6 not in ("keep", "replace"):
            raise ValueError(relu6)
        self.relu6 = relu6
        self.pairs = 0
        self.replaced_clips: list[str] = []

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        pairs = [p for p in (self._pair(n) for n in graph) if p is not None]
        if not pairs:
            return PassResult(model, False)
        if self.relu6 == "replace":
            for _, act, _ in pairs:
                if (
                    act is not None
                    and act.op_type == "Clip"
                    and act.name not in self.replaced_clips
                ):
                    self._clip_to_relu(graph, act)
            pairs = [p for p in (self._pair(n) for n in graph) if p is not None]
        for _ in range(SWEEPS):
            for conv1, act, conv2 in pairs:
                if act is None or act.op_type == "Relu":
                    _equalize(graph, conv1, conv2)
        self.pairs = sum(1 for _, act, _ in pairs if act is None or act.op_type == "Relu")
        return PassResult(model, True)

    def _pair(self, conv1: ir.Node):
        if conv1.op_type != "Conv" or not _const_conv(conv1):
            return None
        y = conv1.outputs[0]
        if len(y.uses()) != 1 or y.is_graph_output():
            return None
        nxt = next(iter(y.uses())).node
        act = None
        if nxt.op_type in ("Relu", "Clip"):
            if nxt.op_type == "Clip" and not self._equalizable_clip(nxt):
                return None
            act = nxt
            z = act.outputs[0]
            if len(z.uses()) != 1 or z.is_graph_output():
                return None
            nxt = next(iter(z.uses())).node
        if (
            nxt.op_type != "Conv"
            or not _const_conv(nxt)
            or next(iter((act or conv1).outputs[0].uses())).idx != 0
        ):
            return None
        return conv1, act, nxt

    def _equalizable_clip(self, clip: ir.Node) -> bool:
        lo = (
            const_array(clip.inputs[1])
            if len(clip.inputs) > 1 and clip.inputs[1] is not None
            else None
        )
        return self.relu6 == "replace" and lo is not None and float(lo) == 0.0

    def _clip_to_relu(self, graph, clip: ir.Node) -> None:
        relu = ir.node("Relu", [clip.inputs[0]], name=clip.name)
        ir.convenience.replace_nodes_and_values(
            graph, clip, [clip], [relu], [clip.outputs[0]], [relu.outputs[0]]
        )
        self.replaced_clips.append(clip.name)


def _const_conv(node: ir.Node) -> bool:
    w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return w is not None and w.ndim >= 3 and len(node.inputs[1].uses()) == 1


def _group(node: ir.Node) -> int:
    g = node.attributes.get("group")
    return 1 if g is None else int(g.value)


def _equalize(graph, conv1: ir.Node, conv2: ir.Node) -> None:
    w1, w2 = (
        const_array(conv1.inputs[1]).astype(np.float64),
        const_array(conv2.inputs[1]).astype(np.float64),
    )
    c = w1.shape[0]
    g2 = _group(conv2)
    if g2 == 1:
        if w2.shape[1] != c:
            return
        r2 = np.abs(w2).max(axis=tuple(i for i in range(w2.ndim) if i != 1))
    elif g2 == c and w2.shape[0] == c and w2.shape[1] == 1:  # depthwise: channel c is group c
        r2 = np.abs(w2).reshape(c, -1).max(1)
    else:
        return
    r1 = np.abs(w1).reshape(c, -1).max(1)
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones(c)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    shape1 = (c,) + (1,) * (w1.ndim - 1)
    _set(graph, conv1, 1, (w1 / s.reshape(shape1)).astype(np.float32))
    if len(conv1.inputs) > 2 and conv1.inputs[2] is not None:
        b = const_array(conv1.inputs[2])
        if b is not None and len(conv1.inputs[2].uses()) == 1:
            _set(graph, conv1, 2, (b / s).astype(np.float32))
    shape2 = (1, c, *(1,) * (w2.ndim - 2)) if g2 == 1 else (c, *(1,) * (w2.ndim - 1))
    _set(graph, conv2, 1, (w2 * s.reshape(shape2)).astype(np.float32))


def _set(graph, node: ir.Node, idx: int, array: np.ndarray) -> None:
    value = node.inputs[idx]
    value.const_value = ir.tensor(array, name=value.name)
