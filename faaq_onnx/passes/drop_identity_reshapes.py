"""Drop chains of reshapes that end in the shape they started from.

tf2onnx writes a Keras squeeze-and-excitation block as GlobalAveragePool -> Squeeze ->
Reshape to NHWC [1, 1, 1, C] -> Reshape back to [1, C, 1, 1] (the transpose optimizer's
rewrite of an NHWC -> NCHW Transpose on a 1x1 map) -> Conv. Every op of such a chain keeps the
elements in order, so when its last output has its first input's shape it is the identity.
Left in, each reshape between integer kernels costs two layout Transposes in ORT's NHWC
int8 path (EfficientNetB0 through tf2onnx: 65 Transposes, 0.26 ms of a 1.5 ms run).
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult, common

from faaq_onnx.graph import only_reader

RESHAPES = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")


class DropIdentityReshapesPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        if not any(_is_reshape(n) for n in graph):
            return PassResult(model, False)
        if any(_is_reshape(n) and n.outputs[0].shape is None for n in graph):
            # exporters that write no value_info (TorchScript): shapes as ONNX infers them
            common.ShapeInferencePass(strict_mode=False)(model)
        modified = False
        for node in list(graph):
            if node.graph is None or not _is_reshape(node) or _is_reshape(_producer(node)):
                continue  # not a chain's first op (or removed already)
            chain = [node]
            while (nxt := _only_reshape_consumer(chain[-1])) is not None:
                chain.append(nxt)
            x, y = node.inputs[0], chain[-1].outputs[0]
            # the longest prefix of the chain that ends in x's shape
            for end in range(len(chain), 0, -1):
                y = chain[end - 1].outputs[0]
                if not y.is_graph_output() and _same_shape(x, y):
                    ir.convenience.replace_all_uses_with(y, x)
                    for n in reversed(chain[:end]):
                        if not any(v.uses() for v in n.outputs):
                            graph.remove(n, safe=True)
                    modified = True
                    break
        return PassResult(model, modified)


def _is_reshape(node: ir.Node | None) -> bool:
    return node is not None and node.op_type in RESHAPES and node.domain in ("", "ai.onnx")


def _producer(node: ir.Node) -> ir.Node | None:
    x = node.inputs[0] if node.inputs else None
    return None if x is None else x.producer()


def _only_reshape_consumer(node: ir.Node) -> ir.Node | None:
    """The chain's next op: the one consumer of `node`'s output, if it is a reshape of it."""
    y = node.outputs[0]
    nxt = only_reader(y)
    return nxt if _is_reshape(nxt) and nxt.inputs[0] is y else None


def _same_shape(a: ir.Value, b: ir.Value) -> bool:
    """Both shapes fully known (each dim an int or a named symbol) and equal."""
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    for da, db in zip(a.shape, b.shape):
        if isinstance(da, int) or isinstance(db, int):
            if da != db:
                return False
        elif da.value is None or da.value != db.value:
            return False
    return True
