"""Which optional ops are worth a quantizer: those whose quantization buys an integer kernel.

Weighted ops always are. Add, Concat, pooling and Mul pay off only inside a quantized
region: their output must feed another quantized op, or ORT runs them as DQ -> float op -> Q,
which adds work and error instead of removing it.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from faaq_onnx.config import COVERAGES
from faaq_onnx.graph import is_float_activation, is_float_tensor, only_reader

# ops whose integer kernel (QLinearConv) needs a QuantizeLinear on the output
OUTPUT_QUANTIZED = {"Conv", "ConvTranspose"}
# ops ORT's CPU EP runs as an integer kernel when Q/DQ surround them (QLinear*, QGemm)
ORT_INTEGER_CAPABLE = {
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Concat",
    "AveragePool",
    "GlobalAveragePool",
    "Sigmoid",
    "Softmax",
    "LeakyRelu",
    "Where",
}
QUANTIZED_TYPES = "Conv, ConvTranspose, Gemm, MatMul, Add, Mul, Concat and pooling"
# one-input ops with a QLinear kernel (QLinearSigmoid, QLinearSoftmax, QLinearLeakyRelu):
# quantized under coverage "ort" only (with "gain" they stay with the float ops around them)
UNARY_INTEGER = {"Sigmoid", "Softmax", "LeakyRelu"}

ComputeNode = tuple[ir.Node, int | None, list[ir.Value]]  # (node, weight index, data inputs)


def chosen_ops(
    compute_nodes: list[ComputeNode],
    products: list[ComputeNode],
    uf: Any,
    coverage: str,
    preprocessing: frozenset[int] = frozenset(),
) -> list[ComputeNode]:
    """The ops that get quantizers, by coverage policy.

    "ort": every candidate, as ONNX Runtime's own quantizer does, so every op ORT runs on an
    integer kernel runs on one in faaq's model too (the user's baseline, op for op).
    "gain": only where the integer kernel removes float work (worth_quantizing), plus the
    products wholly inside the quantized region; never the model's own `preprocessing` (node
    ids: input_preprocessing)."""
    if coverage == "ort":
        return _in_order(compute_nodes + products)
    if coverage != "gain":
        raise ValueError(f"coverage must be one of {', '.join(COVERAGES)}, not {coverage!r}")
    kept = worth_quantizing([c for c in compute_nodes if id(c[0]) not in preprocessing], uf)
    return with_products_between_quantized(kept, products, uf)


def worth_quantizing(compute_nodes: list[ComputeNode], uf: Any) -> list[ComputeNode]:
    """Keep the ops whose quantization buys an integer kernel.

    Weighted ops and activation x activation MatMuls always have one (their integer
    kernels may produce float). Add, Concat and pooling only pay off when their output
    feeds another quantized op (QLinearAdd -> QLinearConv); a residual Add in front of
    a LayerNormalization would only add Q/DQ work and error (transformer outliers).
    """
    always = [c for c in compute_nodes if _always(c)]
    optional = [c for c in compute_nodes if not _always(c)]
    kept = list(always)
    changed = True
    while changed:
        changed = False
        inputs = {uf.find(v.name) for _, _, data in kept for v in data}
        for c in list(optional):
            if uf.find(c[0].outputs[0].name) in inputs:
                kept.append(c)
                optional.remove(c)
                changed = True
    return _in_order(kept)


def _always(c: ComputeNode) -> bool:
    """Weighted ops and activation x activation MatMuls: an integer kernel whatever is around."""
    return c[1] is not None or c[0].op_type == "MatMul"


def input_preprocessing(compute_nodes: list[ComputeNode], uf: Any) -> frozenset[int]:
    """Ids of the optional ops that compute on the graph inputs alone, before anything quantized.

    A model's own input normalization (Keras' Rescaling and Normalization layers through
    tf2onnx: Mul, Add, Mul on the NHWC image) quantized costs a QuantizeLinear on the raw
    input, a requantization after every op and QLinear kernels slower than the float ones
    (per-channel constants broadcast along a channel axis of 3); float, the first quantizer
    sits where the first Conv reads the result. EfficientNetB0 through tf2onnx: W8A8 at 0.99x
    the float model's latency against 1.09x with the three ops quantized (interleaved). A tensor a
    weighted op reads is quantized anyway: what reads it is not preprocessing."""
    read_by_always = {uf.find(v.name) for c in compute_nodes if _always(c) for v in c[2]}
    compute = {id(c[0]) for c in compute_nodes}
    found: set[int] = set()
    memo: dict[int, bool] = {}

    def raw(v: ir.Value) -> bool:
        if id(v) not in memo:
            prod = v.producer()
            memo[id(v)] = uf.find(v.name) not in read_by_always and (
                v.is_graph_input()
                or (
                    prod is not None
                    and (id(prod) not in compute or id(prod) in found)
                    and all(raw(x) for x in prod.inputs if x is not None and is_float_activation(x))
                )
            )
        return memo[id(v)]

    for node, _, data in _in_order([c for c in compute_nodes if not _always(c)]):
        if data and all(raw(v) for v in data):
            found.add(id(node))
    return frozenset(found)


def with_products_between_quantized(
    kept: list[ComputeNode], muls: list[ComputeNode], uf: Any
) -> list[ComputeNode]:
    """Add the Muls below rank 4 that sit wholly inside the quantized region.

    A transformer block in a CNN (PP-OCRv4's SVTR) multiplies tensors that are quantized
    anyway: Swish x·Sigmoid(x) between a Conv and a MatMul, a constant attention scale.
    ORT's QLinearMul (and QLinearSigmoid) then replaces DQ -> float Mul -> Q. Only when every
    input is already quantized for another op (or is the Sigmoid of such a tensor), and the
    product feeds a quantized op, so no new tensor of the float network gets a grid: a
    BERT GELU, x·(1 + erf(x/√2))·0.5 on a bias Add's output, stays float.
    """
    kept, muls = list(kept), list(muls)
    changed = True
    while changed and muls:
        changed = False
        read = {uf.find(v.name) for _, _, data in kept for v in data}
        quantized = read | {
            uf.find(n.outputs[0].name) for n, _, _ in kept if n.op_type in OUTPUT_QUANTIZED
        }
        for c in list(muls):
            node, _, data = c
            if uf.find(node.outputs[0].name) not in read:
                continue
            if all(uf.find(v.name) in quantized or _sigmoid_of(v, quantized, uf) for v in data):
                kept.append(c)
                muls.remove(c)
                changed = True
    return _in_order(kept)


def gelu_products(graph: ir.Graph) -> frozenset[int]:
    """Ids of the Muls that make a GELU of an Erf or a Tanh: after erf(x/√2) + 1 (or the tanh
    form's 1 + tanh(...)), the chain of products with x and 0.5 in whatever order the exporter
    wrote them (TorchScript x·a·0.5, dynamo x·(0.5·a), Hugging Face (x·0.5)·a).

    ORT fuses that float pattern into one Gelu (or FastGelu) kernel. Quantizers on its products,
    which a GELU over NHWC maps gets as a feature map's Muls, break the fusion: ConvNeXt-style
    blocks ran QLinearMul, Div and Erf apart, slower than float. So these Muls are products
    that stay float unless their inputs are quantized for other ops (never, inside a GELU)."""
    found: set[int] = set()
    for node in graph:
        if node.op_type not in ("Erf", "Tanh") or not node.outputs:
            continue
        add = only_reader(node.outputs[0])
        if add is None or add.op_type != "Add" or not _has_constant(add):
            continue
        v = add.outputs[0]
        while (mul := only_reader(v)) is not None and mul.op_type == "Mul":
            found.add(id(mul))
            for other in mul.inputs:  # (x·0.5), multiplied in last
                prod = other.producer() if other is not None and other is not v else None
                if prod is not None and prod.op_type == "Mul" and _has_constant(prod):
                    found.add(id(prod))
            v = mul.outputs[0]
    return frozenset(found)


NORMALIZATIONS = {"InstanceNormalization", "GroupNormalization", "LayerNormalization"}
_LAYOUT_ONLY = {"Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Identity"}


def after_float_norm(graph: ir.Graph) -> frozenset[int]:
    """Ids of the Muls and Adds that carry a normalization's float output on to the next
    quantized op: through layout ops, the products and sums with a constant (a GroupNorm's
    affine, exported as InstanceNormalization -> Reshape -> Mul γ -> Add β) and the SiLU right
    after them (x·Sigmoid(x)).

    ORT has no integer normalization, so its output is float; quantizing the chain behind it
    only moves the QuantizeLinear up and runs QLinearMul/QLinearAdd/QLinearSigmoid where float
    ops (the SiLU fused into one kernel) are faster: a GroupNorm + SiLU block before a 3x3 Conv
    took 0.83-0.89x the time with the chain float (benchmarks/out/norm_chain.md)."""
    found: set[int] = set()
    for node in graph:
        if node.op_type not in NORMALIZATIONS or not node.outputs:
            continue
        frontier = [node.outputs[0]]
        while frontier:
            v = frontier.pop()
            for use in list(v.uses()):
                n = use.node
                if id(n) in found:
                    continue
                if n.op_type in _LAYOUT_ONLY and n.inputs and n.inputs[0] is v:
                    frontier.append(n.outputs[0])
                elif n.op_type in ("Mul", "Add") and _has_constant(n):
                    found.add(id(n))
                    frontier.append(n.outputs[0])
                elif n.op_type == "Sigmoid":  # SiLU: v · Sigmoid(v)
                    for u in n.outputs[0].uses():
                        if u.node.op_type == "Mul" and v in u.node.inputs:
                            found.add(id(u.node))
    return frozenset(found)


def _feeds_float_products(node: ir.Node, kept_ids: set[int]) -> bool:
    """Every reader of the node's output is a Mul that gets no quantizers."""
    uses = list(node.outputs[0].uses()) if node.outputs else []
    return bool(uses) and all(u.node.op_type == "Mul" and id(u.node) not in kept_ids for u in uses)


def _rank_at_least(v: ir.Value | None, rank: int) -> bool:
    return v is not None and v.shape is not None and len(v.shape) >= rank


def _has_constant(node: ir.Node) -> bool:
    return any(v is not None and v.const_value is not None for v in node.inputs)


def _sigmoid_of(v: ir.Value, quantized: set[str], uf: Any) -> bool:
    prod = v.producer()
    return (
        prod is not None
        and prod.op_type == "Sigmoid"
        and prod.inputs[0] is not None
        and uf.find(prod.inputs[0].name) in quantized
    )


def _in_order(chosen: list[ComputeNode]) -> list[ComputeNode]:
    """`chosen` in graph order (ONNX nodes are topologically sorted by position)."""
    graph = chosen[0][0].graph if chosen else None
    if graph is None:
        return list(chosen)
    order = {id(n): i for i, n in enumerate(graph)}
    return sorted(chosen, key=lambda c: order.get(id(c[0]), 0))


def left_float(
    graph: ir.Graph,
    kept: list[ComputeNode],
    considered: list[ComputeNode],
    products: list[ComputeNode],
    quantized: set[str],
    coverage: str = "gain",
    preprocessing: frozenset[int] = frozenset(),
    gelu: frozenset[int] = frozenset(),
    normed: frozenset[int] = frozenset(),
) -> dict[str, str]:
    """Why each op ORT could run on an integer kernel gets no quantizer from faaq, by node name.
    `gelu` and `normed`: the node ids gelu_products and after_float_norm found (discovery's).

    ORT's own quantizer puts Q/DQ around every such op; faaq only where the integer kernel
    removes float work (see worth_quantizing). The kernel report names these ops with the
    reason, so a float op in the written model is a decision the user can read, not a gap.
    An op with `quantized` tensors in and out is left out: ORT fuses it (x·Sigmoid(x)'s Sigmoid).
    """
    hint = "; --coverage ort quantizes it as ORT does" if coverage == "gain" else ""
    kept_ids = {id(c[0]) for c in kept}
    considered_ids = {id(c[0]) for c in considered}
    product_ids = {id(c[0]) for c in products}
    out: dict[str, str] = {}
    for node in graph:
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or op not in ORT_INTEGER_CAPABLE:
            continue
        if id(node) in kept_ids or not node.name:
            continue
        activations = [v for v in node.inputs if v is not None and is_float_activation(v)]
        float_constants = [
            v
            for v in node.inputs
            if v is not None and is_float_tensor(v) and not is_float_activation(v)
        ]
        if not activations or (
            all(v.name in quantized for v in activations)
            and not (op == "Concat" and float_constants)  # ORT fuses no Concat of a float constant
            and any(o is not None and o.name in quantized for o in node.outputs)
        ):
            continue  # nothing a quantizer could read, or Q/DQ on both sides: an integer kernel
        if id(node) in preprocessing:
            out[node.name] = (
                f"left float by faaq: {op} computes on the graph inputs alone (the model's own "
                "preprocessing): the first quantizer sits after it, where a weighted op reads it"
                + hint
            )
        elif op == "Sigmoid" and _feeds_float_products(node, kept_ids):
            out[node.name] = (
                "left float by faaq: the Sigmoid of a SiLU (x·Sigmoid(x)) whose product stays "
                "float, with which ORT fuses it (QuickGelu)" + hint
            )
        elif id(node) in normed:
            out[node.name] = (
                f"left float by faaq: {op} carries a normalization's float output (ORT has no "
                "integer one) to the next quantized op: a GroupNorm's affine, the SiLU after it; "
                "quantized, the chain would run slower integer kernels and requantize at each op"
                + hint
            )
        elif id(node) in gelu:
            out[node.name] = (
                "left float by faaq: a product inside a GELU (x·(1 + erf(x/√2))·0.5): ORT fuses the "
                "float GELU into one Gelu kernel, which quantizers on its products would break"
                + hint
            )
        elif (
            op in ("Add", "Mul")
            and len(activations) < len([v for v in node.inputs if v is not None])
            and (coverage != "gain" or not _rank_at_least(node.outputs[0], 4))
        ):
            out[node.name] = (
                f"left float by faaq: {op} of a constant to a tensor that is not a feature map "
                "(a bias, a norm's scale or shift) stays with the float ops around it" + hint
                if coverage == "gain"
                else f"left float by faaq: {op} of a constant that is not a small float tensor "
                f"(a uint8 operand of QLinear{op} holds at most 65,536 values)"
            )
        elif id(node) in product_ids:
            out[node.name] = (
                "left float by faaq: a product below rank 4 gets quantizers only when its inputs "
                "are quantized for other ops and its output feeds one (a GELU's products stay float)"
                + hint
            )
        elif id(node) in considered_ids:
            readers = sorted(
                {u.node.op_type for o in node.outputs if o is not None for u in o.uses()}
            )
            read_by = ", ".join(readers) if readers else "the graph output"
            out[node.name] = (
                f"left float by faaq: its output feeds no quantized op (read by {read_by}), so "
                "Q/DQ around it would add rounding error and no integer work" + hint
            )
        elif op in ("Conv", "Gemm", "MatMul"):
            continue  # discovery's own `skipped` list says why
        elif op == "Concat":  # a Concat gets quantizers only when every input is an activation
            out[node.name] = (
                "left float by faaq: a Concat with a constant input (a class token, a fixed "
                "embedding) gets no quantizers" + hint
            )
        else:
            out[node.name] = (
                f"left float by faaq: it puts no quantizers around {op} "
                f"(only {QUANTIZED_TYPES}"
                + (", Sigmoid, Softmax and LeakyRelu" if coverage == "ort" else "")
                + " get them)"
                + hint
            )
    return out
