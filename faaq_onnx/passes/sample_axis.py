"""Give inputs without a sample axis one, and take it away again before the model is written.

faaq stacks calibration samples on axis 0 and feeds them in batches along it. Some inputs
have no such axis: a recurrent state laid out [layers, batch, hidden], a scalar sample rate.
Their calibration arrays hold one whole feed per sample (rank one more than the input's), so
the model faaq works on takes them as `[1, *shape]` through a Squeeze: every internal run then
feeds one sample at a time and sees the user's tensors unchanged. `DropSampleAxisPass` gives
the emitted model the user's own input back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import add_initializer

_AXES = "faaq_sample_axis"
_OUT_SUFFIX = "__faaq_unsqueeze"


class LiftSampleAxisPass(InPlacePass):
    """Input `x` of shape S becomes `x` of shape [1, *S], squeezed back before its readers."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = set(names)

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        for value in graph.inputs:
            if value.name not in self.names or value.shape is None:
                continue
            if value.is_graph_output():
                raise FaaqError(
                    f"input {value.name!r} is also an output of the model: cannot stack it"
                )
            inner = ir.Value(name=f"{value.name}__sample", shape=value.shape, type=value.type)
            ir.convenience.replace_all_uses_with(value, inner)
            axes = add_initializer(graph, _AXES, np.array([0], np.int64))
            squeeze = ir.node(
                "Squeeze", [value, axes], outputs=[inner], name=f"{value.name}__squeeze"
            )
            _prepend(graph, squeeze)
            value.shape = ir.Shape([1, *value.shape])
            modified = True
        if modified:
            _unsqueeze_outputs(graph)
        return PassResult(model, modified)


class DropSampleAxisPass(InPlacePass):
    """Undo LiftSampleAxisPass: `x` takes shape S again; what read the squeezed value reads `x`.

    Where something other than the Squeeze reads the input (a Q/DQ pair put in front of it),
    an Unsqueeze in front of the graph gives those readers the shape they were built for.
    """

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = set(names)

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        for value in graph.inputs:
            if value.name not in self.names or value.shape is None or len(value.shape) < 1:
                continue
            inner_shape = ir.Shape(list(value.shape)[1:])
            squeezes = [u.node for u in value.uses() if _drops_axis_0(u.node)]
            if len(squeezes) == len(list(value.uses())):
                for sq in squeezes:
                    ir.convenience.replace_all_uses_with(sq.outputs[0], value)
                    graph.remove(sq, safe=True)
            else:
                lifted = ir.Value(name=f"{value.name}__lifted", shape=value.shape, type=value.type)
                ir.convenience.replace_all_uses_with(value, lifted)
                axes = add_initializer(graph, _AXES, np.array([0], np.int64))
                _prepend(graph, ir.node("Unsqueeze", [value, axes], outputs=[lifted]))
            value.shape = inner_shape
            modified = True
        if modified:
            _squeeze_outputs(graph)
            _drop_unused(graph, _AXES)
        return PassResult(model, modified)


def _unsqueeze_outputs(graph: ir.Graph) -> None:
    """Each output gets the sample axis too: one whole output per sample, as a run fed one
    whole feed per sample returns it (faaq_onnx.runtime.runner.run_batches)."""
    axes = add_initializer(graph, _AXES, np.array([0], np.int64))
    for i, out in enumerate(list(graph.outputs)):
        name = out.name
        out.name = f"{name}__sample"
        shape = None if out.shape is None else ir.Shape([1, *out.shape])
        lifted = ir.Value(name=name, shape=shape, type=out.type)
        graph.append(
            ir.node("Unsqueeze", [out, axes], outputs=[lifted], name=f"{name}{_OUT_SUFFIX}")
        )
        graph.outputs[i] = lifted


def _squeeze_outputs(graph: ir.Graph) -> None:
    for i, out in enumerate(list(graph.outputs)):
        node = out.producer()
        if node is None or node.name != f"{out.name}{_OUT_SUFFIX}":
            continue
        inner = node.inputs[0]
        assert inner is not None
        graph.outputs[i] = inner
        graph.remove(node, safe=True)
        inner.name = out.name


def _prepend(graph: ir.Graph, node: ir.Node) -> None:
    if graph.num_nodes():
        graph.insert_before(graph.node(0), node)
    else:
        graph.append(node)


def _drops_axis_0(node: ir.Node) -> bool:
    if node.op_type != "Squeeze" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return False
    axes = node.inputs[1]
    return (
        axes is not None
        and axes.const_value is not None
        and (axes.const_value.numpy().tolist() == [0])
    )


def _drop_unused(graph: ir.Graph, prefix: str) -> None:
    for name in [n for n in graph.initializers if n.startswith(prefix)]:
        init = graph.initializers[name]
        if not list(init.uses()):
            del graph.initializers[name]
