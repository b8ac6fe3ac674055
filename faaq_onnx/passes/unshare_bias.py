"""Give every Conv/ConvTranspose/Gemm a bias initializer of its own.

A quantized layer's bias becomes int32 at the scale of its input times its weight, which
differs from layer to layer. Exporters deduplicate identical initializers (the dynamo
exporter shares the biases of cloned layers, as torch.nn.TransformerEncoder makes them),
and a bias two layers share could not take either scale: it stayed float, and ORT ran
those layers as float Gemms. A copy per layer costs a few bytes per channel.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import add_initializer, const_array

_BIASED = {"Conv", "ConvTranspose", "Gemm"}


class UnshareBiasPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        modified = False
        graph = model.graph
        for node in list(graph):
            if node.op_type not in _BIASED or node.domain not in ("", "ai.onnx"):
                continue
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            if bias is None or not bias.is_initializer() or len(list(bias.uses())) < 2:
                continue
            arr = const_array(bias)
            if arr is None:
                continue
            own = add_initializer(graph, f"{bias.name}_{node.name}", np.array(arr, copy=True))
            node.replace_input_with(2, own)
            modified = True
        return PassResult(model, modified)
