"""HardSwish as x · HardSigmoid(x), the form ONNX Runtime has integer kernels for.

ORT has no integer HardSwish: left whole, it runs in float between a DequantizeLinear and a
QuantizeLinear, and ORT's own optimizer splits it into HardSigmoid and a float Mul over the
whole feature map. Split here, before discovery, the Mul gets quantized inputs and runs as
QLinearMul, as it does in the models ORT's quantizer writes (quant_pre_process splits it the
same way). HardSwish(x) = x · max(0, min(1, x/6 + 1/2)): the same function.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult


class DecomposeHardSwishPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "HardSwish" or node.domain not in ("", "ai.onnx"):
                continue
            x, y = node.inputs[0], node.outputs[0]
            if x is None:
                continue
            base = node.name or y.name
            gate = ir.Value(name=f"{base}/hardsigmoid", shape=y.shape, type=y.type)
            sigmoid = ir.node(
                "HardSigmoid",
                [x],
                {"alpha": 1.0 / 6.0, "beta": 0.5},
                outputs=[gate],
                name=f"{base}/HardSigmoid",
            )
            out = ir.Value(name=f"{y.name}__mul", shape=y.shape, type=y.type)
            mul = ir.node("Mul", [x, gate], outputs=[out], name=f"{base}/Mul")
            graph.insert_after(node, [sigmoid, mul])
            ir.convenience.replace_all_uses_with(y, out, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            out.name = y.name  # the tensor keeps its name: reports and user outputs see it
            modified = True
        return PassResult(model, modified)
