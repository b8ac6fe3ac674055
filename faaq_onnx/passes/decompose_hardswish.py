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

from faaq_onnx.graph import const_array, only_reader


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
            _replace_by_x_times_hardsigmoid(graph, x, y, node.name or y.name, [node])
            modified = True
        return PassResult(model, modified)


class WrittenOutHardSwishPass(InPlacePass):
    """HardSwish written out as x · Clip(x + 3, 0, 6) / 6 (Paddle's exports, some TF converters)
    becomes x · HardSigmoid(x), the form above: its Add, Clip and Div leave the graph and the
    Mul runs as QLinearMul. Matched only where the intermediate values have no other reader."""

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        for add in list(graph):
            match = _written_out_hardswish(add)
            if match is None:
                continue
            x, clip, mul, last = match
            y = last.outputs[0]
            _replace_by_x_times_hardsigmoid(graph, x, y, mul.name or y.name, [last, mul, clip, add])
            modified = True
        return PassResult(model, modified)


def _replace_by_x_times_hardsigmoid(
    graph: ir.Graph, x: ir.Value, y: ir.Value, base: str, old: list[ir.Node]
) -> None:
    """Compute `y` as x · HardSigmoid(x) (alpha 1/6, beta 1/2) after the `old` nodes that
    computed it, and remove those; `y`'s name stays, for reports and the user's outputs."""
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
    graph.insert_after(old[0], [sigmoid, mul])
    ir.convenience.replace_all_uses_with(y, out, replace_graph_outputs=True)
    graph.remove(old, safe=True)
    out.name = y.name


def _scalar(value: ir.Value | None) -> float | None:
    arr = const_array(value)
    if arr is None or arr.size != 1 or arr.dtype.kind != "f":
        return None
    return float(arr.reshape(-1)[0])


def _written_out_hardswish(add: ir.Node):
    """(x, Clip, Mul, Div-or-Mul) of `Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(6) | Mul(1/6)`."""
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
        return None
    for k in (0, 1):
        if _scalar(add.inputs[1 - k]) == 3.0:
            x = add.inputs[k]
            break
    else:
        return None
    clip = only_reader(add.outputs[0])
    if (
        x is None
        or clip is None
        or clip.op_type != "Clip"
        or len(clip.inputs) != 3
        or _scalar(clip.inputs[1]) != 0.0
        or _scalar(clip.inputs[2]) != 6.0
    ):
        return None
    mul = only_reader(clip.outputs[0])
    if mul is None or mul.op_type != "Mul" or set(mul.inputs) != {x, clip.outputs[0]}:
        return None
    last = only_reader(mul.outputs[0])
    if last is None or len(last.inputs) != 2 or last.inputs[0] is not mul.outputs[0]:
        return None
    c = _scalar(last.inputs[1])
    if c is None or not (
        (last.op_type == "Div" and c == 6.0)
        or (last.op_type == "Mul" and abs(c - 1.0 / 6.0) < 1e-7)
    ):
        return None
    return x, clip, mul, last
