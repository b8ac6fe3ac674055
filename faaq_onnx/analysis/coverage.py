"""Which optional ops are worth a quantizer: those whose quantization buys an integer kernel.

Weighted ops always are. Add, Concat, pooling and Mul pay off only inside a quantized
region: their output must feed another quantized op, or ORT runs them as DQ -> float op -> Q,
which adds work and error instead of removing it.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

# ops whose integer kernel (QLinearConv) needs a QuantizeLinear on the output
OUTPUT_QUANTIZED = {"Conv", "ConvTranspose"}

ComputeNode = tuple[ir.Node, int | None, list[ir.Value]]  # (node, weight index, data inputs)


def worth_quantizing(compute_nodes: list[ComputeNode], uf: Any) -> list[ComputeNode]:
    """Keep the ops whose quantization buys an integer kernel.

    Weighted ops and activation x activation MatMuls always have one (their integer
    kernels may produce float). Add, Concat and pooling only pay off when their output
    feeds another quantized op (QLinearAdd -> QLinearConv); a residual Add in front of
    a LayerNormalization would only add Q/DQ work and error (transformer outliers).
    """
    always = [c for c in compute_nodes if c[1] is not None or c[0].op_type == "MatMul"]
    optional = [c for c in compute_nodes if c not in always]
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
