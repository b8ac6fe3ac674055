"""Run an ONNX graph in torch, so that autograd is at hand for any exported model.

A small interpreter rather than a converter: every node maps to one torch function
(faaq_onnx.interpreter.ops), initializers become tensors (or parameters, for the
weights we need gradients of), any intermediate tensor can be tapped with its gradient
retained, and any value can be replaced as it is produced (fake-quant hooks). The
whole graph is checked when the interpreter is built, so an op or attribute it cannot
run is named before any long work starts, never halfway through it.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from faaq_onnx.interpreter.ops import MULTI_OUTPUT, OPS, UnsupportedOp, _attrs, constant_problem

_CAST_TYPES = {1, 6, 7, 9, 10, 11}
_PAD_MODES = {"constant", "edge", "reflect", "wrap"}


def check_supported(proto: onnx.ModelProto) -> None:
    """Raise UnsupportedOp naming the first node the interpreter cannot run."""
    check_nodes(proto.graph.node)


def check_nodes(nodes) -> None:
    """Raise UnsupportedOp naming the first of `nodes` whose op, attribute or output the
    interpreter cannot run (what can be told without running them)."""
    for node in nodes:
        where = _where(node)
        if node.domain not in ("", "ai.onnx") or (
            node.op_type not in OPS and node.op_type not in MULTI_OUTPUT
        ):
            raise UnsupportedOp(f"{where} has no torch equivalent here")
        a = _attrs(node)
        auto_pad = a.get("auto_pad", b"NOTSET")
        if auto_pad not in (b"NOTSET", "NOTSET"):
            raise UnsupportedOp(
                f"{where}: auto_pad={auto_pad!r} is not supported by the torch interpreter"
            )
        extra = [o for o in node.output[1:] if o]
        if extra and node.op_type not in MULTI_OUTPUT:
            raise UnsupportedOp(
                f"{where}: its output {extra[0]!r} (beyond the first) is not computed here"
            )
        if node.op_type == "Constant" and constant_problem(a) is not None:
            raise UnsupportedOp(f"{where}: Constant with {constant_problem(a)}")
        if node.op_type == "Pad":
            mode = a.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in _PAD_MODES:
                raise UnsupportedOp(f"{where}: Pad mode {mode!r}")
        if node.op_type == "Cast" and a.get("to") not in _CAST_TYPES:
            raise UnsupportedOp(f"{where}: Cast to type {a.get('to')}")


def _where(node: onnx.NodeProto) -> str:
    return f"op {node.op_type!r} (node {node.name!r})"


class TorchGraph:
    """Evaluate an ONNX graph with torch ops; chosen initializers are trainable."""

    def __init__(self, proto: onnx.ModelProto, trainable: AbstractSet[str] = frozenset()) -> None:
        check_supported(proto)
        self.graph = proto.graph
        self.consts: dict[str, torch.Tensor] = {}
        self.params: dict[str, torch.Tensor] = {}
        for t in self.graph.initializer:
            arr = torch.from_numpy(np.array(numpy_helper.to_array(t)))
            if t.name in trainable:
                arr = arr.clone().requires_grad_(True)
                self.params[t.name] = arr
            self.consts[t.name] = arr
        self.outputs = [o.name for o in self.graph.output]

    def run(self, feeds: dict[str, torch.Tensor], taps: AbstractSet[str] = frozenset(), hooks=None):
        """Outputs, and the tapped intermediates with retain_grad() set.

        `hooks[name](tensor) -> tensor` may replace a value as it is produced.
        """
        env: dict[str, torch.Tensor | None] = dict(self.consts)
        env.update(feeds)
        env[""] = None
        tapped = {}
        for node in self.graph.node:
            outs = self._node(node, env)
            for name, val in zip(node.output, outs):
                if not name:  # an optional output the graph does not read
                    continue
                if hooks and name in hooks:
                    val = hooks[name](val)
                if name in taps and val.requires_grad:
                    val.retain_grad()
                    tapped[name] = val
                env[name] = val
        for name in taps:
            if name in feeds and name not in tapped:
                tapped[name] = env[name]
        return [env[o] for o in self.outputs], tapped

    @staticmethod
    def _node(node: onnx.NodeProto, env: dict) -> list:
        """One node's outputs; whatever goes wrong is an UnsupportedOp naming the node, in one line."""
        a = _attrs(node)
        missing = [i for i in node.input if i and i not in env]
        if missing:
            raise UnsupportedOp(f"{_where(node)}: input {missing[0]!r} is not computed before it")
        args = [env[i] if i else None for i in node.input]
        while args and args[-1] is None:
            args.pop()
        try:
            if node.op_type in MULTI_OUTPUT:
                return MULTI_OUTPUT[node.op_type](a, len(node.output), *args)
            return [OPS[node.op_type](a, *args)]
        except UnsupportedOp as exc:
            raise UnsupportedOp(f"{_where(node)}: {exc}") from None
        except KeyError as exc:
            raise UnsupportedOp(f"{_where(node)}: attribute {exc} is missing") from exc
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise UnsupportedOp(
                f"{_where(node)} failed in the torch interpreter: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
