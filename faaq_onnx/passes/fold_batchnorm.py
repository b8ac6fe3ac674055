"""Fold BatchNormalization into the Conv/ConvTranspose/Gemm that feeds it.

A BN left in place would sit between the integer kernel and its requantization and
block fusion; folded, its statistics live in the weights that we quantize.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import add_initializer, attribute, const_array

_FOLDABLE = {"Conv", "ConvTranspose", "Gemm"}


class FoldBatchNormPass(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        modified = False
        graph = model.graph
        for bn in list(graph):
            if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
                continue
            if (
                len([o for o in bn.outputs if o is not None and (o.uses() or o.is_graph_output())])
                > 1
            ):
                continue  # training-mode BN with running-stat outputs
            x = bn.inputs[0]
            prod = x.producer() if x is not None else None
            if (
                prod is None
                or prod.op_type not in _FOLDABLE
                or len(x.uses()) != 1
                or x.is_graph_output()
            ):
                continue
            params = [const_array(v) for v in bn.inputs[1:5]]
            w = const_array(prod.inputs[1]) if len(prod.inputs) > 1 else None
            if any(p is None for p in params) or w is None:
                continue
            if prod.op_type == "Gemm" and (
                attribute(prod, "transA", 0)
                or attribute(prod, "alpha", 1.0) != 1.0
                or attribute(prod, "beta", 1.0) != 1.0
            ):
                continue
            if len(prod.inputs[1].uses()) != 1:
                continue  # a shared weight cannot take two different foldings
            gamma, beta, mean, var = (p.astype(np.float64) for p in params)
            eps = attribute(bn, "epsilon", 1e-5)
            factor = gamma / np.sqrt(var + eps)
            b = (
                const_array(prod.inputs[2])
                if len(prod.inputs) > 2 and prod.inputs[2] is not None
                else None
            )
            b = np.zeros(factor.shape, np.float64) if b is None else b.astype(np.float64)
            new_w = _scale_out_channels(prod, w.astype(np.float64), factor).astype(w.dtype)
            new_b = ((b - mean) * factor + beta).astype(w.dtype)
            w_val = add_initializer(graph, prod.inputs[1].name + "_bnfold", new_w)
            b_val = add_initializer(graph, (prod.name or "node") + "_bias_bnfold", new_b)
            prod.replace_input_with(1, w_val)
            if len(prod.inputs) < 3:
                prod.resize_inputs(3)
            prod.replace_input_with(2, b_val)
            out = bn.outputs[0]
            ir.convenience.replace_all_uses_with(out, prod.outputs[0], replace_graph_outputs=True)
            if out.is_graph_output() or any(o is prod.outputs[0] for o in graph.outputs):
                name = out.name
                out.name = name + "_bn"
                prod.outputs[0].name = name
            graph.remove(bn, safe=True)
            modified = True
        return PassResult(model, modified)


def _scale_out_channels(node: ir.Node, w: np.ndarray, factor: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        return w * factor.reshape(-1, *([1] * (w.ndim - 1)))
    if node.op_type == "ConvTranspose":
        group = attribute(node, "group", 1)
        cin, cout_g = w.shape[0], w.shape[1]
        wg = w.reshape(group, cin // group, cout_g, *w.shape[2:])
        f = factor.reshape(group, 1, cout_g, *([1] * (w.ndim - 2)))
        return (wg * f).reshape(w.shape)
    # Gemm: output features are columns of B (transB=0) or rows (transB=1)
    return w * factor.reshape(-1, 1) if attribute(node, "transB", 0) else w * factor.reshape(1, -1)


class AddZeroBiasPass(InPlacePass):
    """Give each Conv/ConvTranspose/Gemm without a bias a zero one (bias correction adjusts it)."""

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                continue
            w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
            if w is None:
                continue
            if node.op_type == "Gemm":
                if attribute(node, "beta", 1.0) != 1.0 or attribute(node, "transA", 0):
                    continue
                n_out = w.shape[0] if attribute(node, "transB", 0) else w.shape[1]
            elif node.op_type == "ConvTranspose":
                n_out = w.shape[1] * attribute(node, "group", 1)
            else:
                n_out = w.shape[0]
            b = add_initializer(graph, (node.name or "node") + "_bias", np.zeros(n_out, w.dtype))
            if len(node.inputs) < 3:
                node.resize_inputs(3)
            node.replace_input_with(2, b)
            modified = True
        return PassResult(model, modified)
