"""Weights ORT's CPU EP runs on a slow path: asymmetric ones on integer kernels.

A QLinearConv/QGemm whose weight has nonzero zero points is an integer kernel all the same, so
the kernel report calls it one; ORT's CPU EP runs it far slower than the symmetric form
(benchmarks/out/asymmetric_weights.md), and the summary says so. Asymmetric weights of up to 6
bits (the default below 7 bits) are emitted with zero point 0 (emit_weights' offset codes) and
never land here; 7- and 8-bit ones asked for with --weight-asymmetric do.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from faaq_onnx.graph import through_cast

ASYMMETRIC_TAIL = "leave --weight-asymmetric out (asymmetric only up to 6 bits) for speed"
ASYMMETRIC_WEIGHTS = (
    "{n} weighted op(s) quantized for integer kernels have 7- or 8-bit weights with nonzero zero "
    "points (--weight-asymmetric): ONNX Runtime's CPU EP runs such QLinearConv/QGemm on a slow path "
    "(EfficientNet-Lite0 W8A8 35x, ResNet-56 1.8x the latency of the same model with symmetric "
    "weights); " + ASYMMETRIC_TAIL
)
_EIGHT_BIT = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
_WEIGHTED = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def asymmetric_integer_weights(proto: onnx.ModelProto) -> list[str]:
    """Weighted ops whose input and weight both come out of a DequantizeLinear (ORT fuses them
    into an integer kernel) where the weight (constant codes) has a zero point other than 0.
    Through a Cast (packed low-bit codes and zero points) to the initializer. A MatMul of two
    activations is not one: their uint8 zero points are the activations' own."""
    inits = {t.name: t for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}

    def dequantized(name: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    found = []
    for node in proto.graph.node:
        at = _WEIGHTED.get(node.op_type)
        if at is None or len(node.input) <= at:
            continue
        x, w = dequantized(node.input[0]), dequantized(node.input[at])
        if x is None or w is None or len(w.input) < 3 or not w.input[2]:
            continue
        if through_cast(w.input[0], producer, inits)[0] not in inits:
            continue  # an activation (attention's Q·Kᵀ): its zero point is no weight's
        x_zp = (
            inits.get(through_cast(x.input[2], producer, inits)[0])
            if len(x.input) > 2 and x.input[2]
            else None
        )
        if x_zp is not None and x_zp.data_type not in _EIGHT_BIT:  # 16-bit: runs in float
            continue
        zp = inits.get(through_cast(w.input[2], producer, inits)[0])
        if zp is not None and np.any(numpy_helper.to_array(zp).astype(np.int64) != 0):
            found.append(node.name)
    return found
