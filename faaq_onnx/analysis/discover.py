"""Find the quantizers a model needs and the groups that must share a bit width.

Which tensors get quantized follows what integer kernels need: the data inputs and
the outputs of compute ops (Conv, Gemm, MatMul, Add, Concat, pooling), so that
ONNX Runtime can fuse DQ→op→Q into QLinearConv, QGemm, QLinearAdd, ... Tensors joined
by data-movement ops (Pad, Reshape, Transpose, Slice, Split, MaxPool, ...) share one
scale, so quantization follows the graph through them and no requantization sits in
between. A Conv's output is always quantized, whatever reads it: QLinearConv needs a
QuantizeLinear after the Conv, and exporters put activation functions ORT has no integer
kernel for (HardSwish, HardSigmoid·Mul, SiLU) right behind Convs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir

from faaq_onnx.analysis.coverage import (
    OUTPUT_QUANTIZED,
    UNARY_INTEGER,
    after_float_norm,
    chosen_ops,
    gelu_products,
    input_preprocessing,
    left_float,
)
from faaq_onnx.analysis.macs import _static_shape, op_macs
from faaq_onnx.graph import is_float_activation, is_float_tensor
from faaq_onnx.groups import (
    ActivationQuantizer,
    QuantizerGraph,
    QuantizerGroup,
    WeightQuantizer,
)

WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
ACTIVATION_OPS = {"Add", "Concat", "GlobalAveragePool", "AveragePool", "MatMul", "Mul"}
# ops whose outputs are values of their first input (or clamps of them): on a quantization
# grid in, on the same grid out, so input and outputs share one scale
PASS_THROUGH = {
    "Relu",
    "Clip",
    "MaxPool",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Pad",
    "Slice",
    "Split",
    "Gather",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "GlobalMaxPool",
    "Resize",
}
CLAMPS = {"Relu", "Clip"}


def passes_grid_through(node: ir.Node) -> bool:
    """True when `node` maps values on a grid onto the same grid (see PASS_THROUGH).

    A constant Pad must pad with zero (always on the grid); Resize only in nearest mode
    (interpolation makes values between grid points)."""
    if node.op_type not in PASS_THROUGH or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Pad":
        mode = node.attributes.get("mode")
        if mode is None or mode.value == "constant":
            value = node.inputs[2] if len(node.inputs) > 2 else None
            if value is not None:
                arr = value.const_value
                return arr is not None and float(np.asarray(arr.numpy()).reshape(-1)[0]) == 0.0
    if node.op_type == "Resize":
        mode = node.attributes.get("mode")
        return mode is None or mode.value == "nearest"
    return True


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def add(self, x: str) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: str) -> str:
        self.add(x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def components(self) -> dict[str, list[str]]:
        comps: dict[str, list[str]] = defaultdict(list)
        for x in self.parent:
            comps[self.find(x)].append(x)
        return comps


def _weight_input(node: ir.Node) -> int | None:
    """Index of the constant float weight a compute node multiplies by, if any."""
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        idx = [1]
    elif node.op_type == "MatMul":
        idx = [1, 0]
    else:
        return None
    for i in idx:
        v = node.inputs[i] if i < len(node.inputs) else None
        if v is not None and v.is_initializer() and is_float_tensor(v):
            arr = v.const_value
            if arr is not None and len(arr.shape) >= 2:
                return i
    return None


def constant_operands(node: ir.Node, coverage: str = "gain") -> list[int]:
    """Inputs of an Add or Mul that are small float constants (a scale or shift, scalar or
    per channel, that nothing folded away: Paddle's affine after HardSwish, an attention
    scale, a transformer's bias). ORT's QLinearAdd/QLinearMul take them as one more uint8
    input (emit_constants.py). Under coverage "gain" an Add's constant counts only over a
    feature map: a transformer's bias Add stays float there."""
    if coverage == "gain" and node.op_type == "Add" and not _feature_map(node.outputs[0]):
        return []
    if node.op_type not in ("Add", "Mul"):
        return []
    out = []
    for i, v in enumerate(node.inputs):
        if v is None or not (v.is_initializer() or v.const_value is not None):
            continue
        arr = v.const_value
        if arr is not None and is_float_tensor(v) and arr.size <= _MAX_CONSTANT_OPERAND:
            out.append(i)
    return out if len(out) < len(node.inputs) else []


_MAX_CONSTANT_OPERAND = 1 << 16


def _feature_map(v: ir.Value | None) -> bool:
    """A tensor of rank 4 or more: a convolutional feature map."""
    return v is not None and v.shape is not None and len(v.shape) >= 4


def weight_axes(node: ir.Node, shape: tuple[int, ...], index: int) -> tuple[int | None, int | None]:
    """(output-channel axis, reduction axis) of a weight, for per-channel and blocked scales."""
    op = node.op_type
    if op == "Conv":
        return 0, 1
    if op == "ConvTranspose":
        return (
            (1, 0)
            if node.attributes.get("group") is None or node.attributes["group"].value == 1
            else (None, 0)
        )
    if op == "Gemm":
        trans_b = node.attributes.get("transB")
        return (0, 1) if trans_b is not None and trans_b.value else (1, 0)
    if op == "MatMul":
        if len(shape) != 2:
            return None, len(shape) - 2 if index == 1 else None
        return (1, 0) if index == 1 else (0, 1)
    return None, None


def discover_groups(model: ir.Model, shape_of=None, coverage: str = "gain") -> QuantizerGraph:
    """The quantizers of `model` and their groups.

    `coverage` "gain" quantizes only the ops whose integer kernel removes float work; "ort"
    every op ORT's own quantizer puts on an integer kernel (see coverage.py)."""
    graph = model.graph
    shape_of = shape_of or _static_shape
    uf = _UnionFind()
    needed: set[str] = set()
    compute_nodes: list[tuple[ir.Node, int | None, list[ir.Value]]] = []
    skipped: list[str] = []
    deferred: list[tuple[ir.Node, int | None, list[ir.Value]]] = []
    gelu, normed = gelu_products(graph), after_float_norm(graph)

    for node in graph:
        if node.domain not in ("", "ai.onnx"):
            continue
        op = node.op_type
        widx = _weight_input(node) if op in WEIGHT_OPS else None
        if widx is not None:
            data = [v for i, v in enumerate(node.inputs[:2]) if i != widx]
            if op == "Conv" or op == "ConvTranspose" or op == "Gemm":
                data = [node.inputs[0]]
            if not all(is_float_activation(v) for v in data):
                skipped.append(f"{node.name}: {op} whose data input is not a float activation")
                continue
        elif op in ACTIVATION_OPS or (coverage == "ort" and op in UNARY_INTEGER):
            consts = constant_operands(node, coverage)
            data = [v for i, v in enumerate(node.inputs) if v is not None and i not in consts]
            if op in ("GlobalAveragePool", "AveragePool") or op in UNARY_INTEGER:
                data = data[:1]
            if op == "MatMul" and not all(is_float_activation(v) for v in data):
                skipped.append(
                    f"{node.name}: MatMul weight is not a float initializer of rank >= 2"
                )
                continue
            if not data or not all(is_float_activation(v) for v in data):
                continue  # e.g. Add of a bias constant: leave it in float
            if coverage == "gain" and (
                (op == "Mul" and (not _feature_map(node.outputs[0]) or id(node) in gelu))
                or id(node) in normed
            ):
                deferred.append((node, widx, data))  # decided once the rest is known
                continue
        else:
            if op in WEIGHT_OPS:
                skipped.append(f"{node.name}: {op} without a constant float weight")
            continue
        if not node.outputs or not is_float_activation(node.outputs[0]):
            continue
        compute_nodes.append((node, widx, data))

    clamp_nodes = _join_pass_through(graph, uf)
    considered = list(compute_nodes)
    preprocessing = input_preprocessing(compute_nodes, uf)
    compute_nodes = chosen_ops(compute_nodes, deferred, uf, coverage, preprocessing)
    for node, _widx, data in compute_nodes:
        for v in data:
            needed.add(v.name)
            uf.add(v.name)
        if node.op_type in OUTPUT_QUANTIZED or (
            coverage == "ort" and node.op_type not in WEIGHT_OPS and node.op_type != "MatMul"
        ):
            needed.add(node.outputs[0].name)
            uf.add(node.outputs[0].name)
        if node.op_type == "Concat":
            for v in data:
                uf.union(v.name, node.outputs[0].name)

    constants = {
        node.name: consts
        for node, _, _ in compute_nodes
        if (consts := constant_operands(node, coverage))
    }
    comps = uf.components()
    activations: dict[str, ActivationQuantizer] = {}
    tensor_to_act: dict[str, str] = {}
    values = {v.name: v for v in _all_values(graph)}
    order = {n.name: i for i, n in enumerate(graph)}
    for _root, members in sorted(comps.items()):
        if not any(m in needed for m in members):
            continue
        members = sorted(members, key=lambda m: _producer_index(values.get(m), order))
        droppable = [clamp_nodes[m].name for m in members if m in clamp_nodes]
        range_tensors = [m for m in members if not _only_clamped(values.get(m))]
        name = f"act:{members[0]}"
        activations[name] = ActivationQuantizer(name, members, range_tensors or members, droppable)
        for m in members:
            tensor_to_act[m] = name

    unquantized = left_float(
        graph,
        compute_nodes,
        considered,
        deferred,
        set(tensor_to_act),
        coverage,
        preprocessing,
        gelu,
        normed,
    )
    read_by_ops = {tensor_to_act[v.name] for _, _, data in compute_nodes for v in data}
    weights: dict[str, WeightQuantizer] = {}
    guf = _UnionFind()
    node_kind: dict[str, str] = {}
    node_macs: dict[str, int] = {}
    for node, widx, data in compute_nodes:
        key = f"op:{node.name}"
        guf.add(key)
        macs = op_macs(node, shape_of)
        node_macs[node.name] = macs
        act_names = [tensor_to_act[v.name] for v in data]
        for a in act_names:
            guf.union(key, a)
        out_act = tensor_to_act.get(node.outputs[0].name)
        if (
            (node.op_type in OUTPUT_QUANTIZED or coverage == "ort")
            and out_act is not None
            and out_act not in read_by_ops
        ):
            guf.union(key, out_act)  # an output only this op's group decides
        if widx is not None:
            wv = node.inputs[widx]
            shape = tuple(wv.const_value.shape.numpy())  # a constant's dims are ints
            if wv.name in weights:
                weights[wv.name].consumers.append(node.name)
                weights[wv.name].macs += macs
            else:
                ch, blk = weight_axes(node, shape, widx)
                bias = None
                if (
                    node.op_type in ("Conv", "Gemm", "ConvTranspose")
                    and len(node.inputs) > 2
                    and node.inputs[2] is not None
                    and node.inputs[2].is_initializer()
                ):
                    bias = node.inputs[2].name
                weights[wv.name] = WeightQuantizer(
                    wv.name,
                    [node.name],
                    node.op_type,
                    shape,
                    ch,
                    blk,
                    macs,
                    bias,
                    act_names[0] if act_names else None,
                )
            guf.union(key, f"w:{wv.name}")
            kind = {"Conv": "conv", "ConvTranspose": "conv", "Gemm": "gemm", "MatMul": "matmul"}[
                node.op_type
            ]
        else:
            kind = {
                "MatMul": "attention",
                "Add": "eltwise",
                "Mul": "eltwise",
                "Concat": "concat",
                "GlobalAveragePool": "pool",
                "AveragePool": "pool",
                "Sigmoid": "eltwise",
                "Softmax": "eltwise",
                "LeakyRelu": "eltwise",
            }[node.op_type]
        node_kind[node.name] = kind

    groups: dict[str, QuantizerGroup] = {}
    for members in guf.components().values():
        ops = sorted((m[3:] for m in members if m.startswith("op:")), key=lambda n: order.get(n, 0))
        if not ops:
            continue
        ws = sorted(m[2:] for m in members if m.startswith("w:"))
        acts = sorted(m for m in members if m.startswith("act:"))
        kinds = [node_kind[o] for o in ops]
        kind = next((k for k in ("attention", "conv", "gemm", "matmul") if k in kinds), kinds[0])
        name = f"g:{ops[0]}"
        groups[name] = QuantizerGroup(
            name,
            kind,
            ops,
            ws,
            acts,
            sum(node_macs[o] for o in ops),
            sum(weights[w].size for w in ws),
        )
    groups = dict(sorted(groups.items(), key=lambda kv: order.get(kv[1].ops[0], 0)))
    return QuantizerGraph(weights, activations, groups, skipped, constants, unquantized)


def _join_pass_through(graph: ir.Graph, uf: _UnionFind) -> dict[str, ir.Node]:
    """Union the input and outputs of every grid-preserving op; returns {output: clamp node}.

    A clamp shares its input's grid only where nothing else needs the values it removes: then
    the grid is the clamped range and emission drops the clamp. Where another op reads the
    unclamped tensor too (NASNet: a Conv's output into a Relu and into an Add), the clamp
    stays in any case; its output gets a grid of its own ([0, max] for a Relu, finer than the
    shared one), and ORT folds a Relu into the QuantizeLinear behind it (48 float Relus
    between a DQ and a Q in Keras NASNetMobile otherwise)."""
    clamp_nodes: dict[str, ir.Node] = {}
    for node in graph:
        if not node.inputs or not node.outputs or not passes_grid_through(node):
            continue
        x = node.inputs[0]
        if not is_float_activation(x):
            continue
        if node.op_type in CLAMPS and not _only_clamped(x):
            continue
        for y in node.outputs:
            if y is not None and is_float_activation(y):
                uf.union(x.name, y.name)
                if node.op_type in CLAMPS:
                    clamp_nodes[y.name] = node
    return clamp_nodes


def _only_clamped(x: ir.Value | None) -> bool:
    """Whether every reader of `x` is a clamp, or an op that only moves or selects its values
    (a layout Transpose, a Reshape: tf2onnx's Conv -> Transpose -> Relu) whose outputs reach
    nothing but clamps: the values a clamp removes matter to no one, and only the clamped
    values set the grid."""
    if x is None or x.is_graph_output():
        return False
    readers = [use.node for use in x.uses()]
    return bool(readers) and all(
        n.op_type in CLAMPS
        or (
            passes_grid_through(n)
            and n.inputs[0] is x
            and all(o is None or _only_clamped(o) for o in n.outputs)
        )
        for n in readers
    )


def _all_values(graph: ir.Graph):
    yield from graph.inputs
    for node in graph:
        yield from (o for o in node.outputs if o is not None)


def _producer_index(v: ir.Value | None, order: dict[str, int]) -> int:
    if v is None or v.producer() is None:
        return -1
    return order.get(v.producer().name, -1)
