"""Per-input-channel scaling of linear layers: SmoothQuant and AWQ, in the ONNX domain.

Both rewrite y = x W as y = (x / s)(diag(s) W): the function is unchanged, but the
quantizer sees other ranges. SmoothQuant (Xiao et al. 2023) moves activation outliers
into the weights so W8A8 works on transformers: s = max|x|^α / max|W|^(1-α). AWQ
(Lin et al. 2024) protects the input channels with large activations from weight
rounding: s = mean|x|^α with α searched to minimize the quantized layer's output error.

A *site* is the set of MatMul/Gemm nodes reading one activation (Q, K and V read the
same normalized input). 1/s is folded into what produces that activation where it is
linear per channel: a Mul by a constant vector (RMSNorm's weight), LayerNormalization's
scale and bias, or a preceding MatMul/Gemm; otherwise a Mul node is inserted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from faaq_onnx.graph import add_initializer, attribute, const_array


@dataclass
class Site:
    tensor: str  # the activation x
    nodes: list[ir.Node]  # MatMul/Gemm nodes reading it as their data input
    k: int  # input channels


def find_sites(model: ir.Model, weights: set[str]) -> list[Site]:
    """Activations read by weighted MatMul/Gemm nodes (weights: names of quantized weights)."""
    sites: dict[str, Site] = {}
    for node in model.graph:
        if node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2:
            continue
        x, w = node.inputs[0], node.inputs[1]
        if x is None or w is None or w.name not in weights or x.const_value is not None:
            continue
        if node.op_type == "Gemm" and attribute(node, "transA", 0):
            continue
        arr = const_array(w)
        k = (
            arr.shape[1]
            if node.op_type == "Gemm" and attribute(node, "transB", 0)
            else arr.shape[0]
        )
        site = sites.setdefault(x.name, Site(x.name, [], int(k)))
        site.nodes.append(node)
    return [s for s in sites.values() if all(_k_of(n) == s.k for n in s.nodes)]


def smoothquant_scales(
    x_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    s = np.power(np.maximum(x_absmax, 1e-5), alpha) / np.power(
        np.maximum(w_absmax, 1e-5), 1 - alpha
    )
    return np.clip(s, 1e-4, 1e4)


def awq_scales(
    x: np.ndarray, weights: list[np.ndarray], quantize, grid_points: int = 20
) -> tuple[np.ndarray, float]:
    """(s, alpha) minimizing Σ ||x W - (x/s) Q(diag(s) W)||² over alpha in [0, 1).

    x: samples x K; weights: K x N each; quantize(W) -> dequantized W on the target grid.
    """
    mean_abs = np.maximum(np.abs(x).mean(0), 1e-8)
    ref = [x @ w for w in weights]
    best = (np.inf, np.ones_like(mean_abs), 0.0)
    for alpha in np.arange(grid_points) / grid_points:
        s = mean_abs**alpha
        s = s / np.sqrt(s.max() * s.min())  # keep the scales centred around 1
        xs = x / s
        err = sum(
            float(np.mean((xs @ quantize(w * s[:, None]) - r) ** 2)) for w, r in zip(weights, ref)
        )
        if err < best[0]:
            best = (err, s, float(alpha))
    return best[1], best[2]


def apply_scales(model: ir.Model, site: Site, s: np.ndarray) -> str:
    """x -> x / s (folded upstream, else a Mul), every weight of the site -> diag(s) W."""
    graph = model.graph
    for node in site.nodes:
        w = node.inputs[1]
        arr = const_array(w).astype(np.float64)
        scaled = arr * (s[None, :] if _k_axis(node) == 1 else s[:, None])
        _set(w, scaled.astype(np.float32))
    x = next(v for v in site.nodes[0].inputs[:1])
    return _fold_inverse(graph, x, site, 1.0 / s)


def _fold_inverse(graph, x: ir.Value, site: Site, inv: np.ndarray) -> str:
    readers = {id(u.node) for u in x.uses()}
    only_site = readers == {id(n) for n in site.nodes} and not x.is_graph_output()
    prod = x.producer()
    if only_site and prod is not None:
        if prod.op_type == "Mul":
            for i in (0, 1):
                c = const_array(prod.inputs[i])
                if c is not None and c.shape[-1:] == (site.k,) and len(prod.inputs[i].uses()) == 1:
                    _set(prod.inputs[i], (c * inv).astype(np.float32))
                    return "folded into Mul"
        if prod.op_type == "LayerNormalization":
            scale = const_array(prod.inputs[1])
            if scale is not None and len(prod.inputs[1].uses()) == 1:
                _set(prod.inputs[1], (scale * inv).astype(np.float32))
                if len(prod.inputs) > 2 and prod.inputs[2] is not None:
                    b = const_array(prod.inputs[2])
                    if b is not None and len(prod.inputs[2].uses()) == 1:
                        _set(prod.inputs[2], (b * inv).astype(np.float32))
                return "folded into LayerNormalization"
    mul = ir.node(
        "Mul",
        [x, add_initializer(graph, f"{x.name}_smooth_inv", inv.astype(np.float32))],
        name=f"{x.name}_smooth",
    )
    mul.outputs[0].name = f"{x.name}_smoothed"
    mul.outputs[0].type, mul.outputs[0].shape = x.type, x.shape
    graph.insert_after(x.producer(), [mul]) if x.producer() is not None else graph.insert_before(
        site.nodes[0], [mul]
    )
    for node in site.nodes:
        node.replace_input_with(0, mul.outputs[0])
    return "Mul inserted"


def _k_axis(node: ir.Node) -> int:
    return 1 if node.op_type == "Gemm" and attribute(node, "transB", 0) else 0


def _k_of(node: ir.Node) -> int:
    return const_array(node.inputs[1]).shape[_k_axis(node)]


def weight_kn(node: ir.Node) -> np.ndarray:
    """The weight as K x N."""
    arr = const_array(node.inputs[1]).astype(np.float64)
    return arr.T if _k_axis(node) == 1 else arr


def _set(value: ir.Value, array: np.ndarray) -> None:
    value.const_value = ir.tensor(array, name=value.name)


def scale_channels(comp, mode: str, bits: int, samples: int = 256, alpha: float = 0.5) -> dict:
    """Apply SmoothQuant or AWQ to every site of comp.model (in place); returns a report."""
    from faaq_onnx.analysis.calibrate import tap_model
    from faaq_onnx.quant.weights import weight_grid
    from faaq_onnx.runtime.runner import run_all
    from faaq_onnx.runtime.session import make_session

    cfg = comp.config
    sites = find_sites(comp.model, set(comp.qgraph.weights))
    sites = [
        s for s in sites if all(len(n.inputs[1].uses()) == 1 for n in s.nodes)
    ]  # shared weights: left alone
    if not sites:
        return {"mode": mode, "sites": []}
    inputs = {k: v[:samples] for k, v in comp.inputs.items()}
    names = [s.tensor for s in sites]
    session = make_session(tap_model(comp.float_proto, names), opt_level="all")
    acts = dict(zip(names, run_all(session, inputs, cfg.batch_size, names)))
    del session
    sites_report: list[dict] = []
    report = {
        "mode": mode,
        "alpha": alpha if mode == "smoothquant" else None,
        "sites": sites_report,
    }

    def quantize(w_kn):
        grid = weight_grid(
            w_kn.astype(np.float32),
            bits,
            cfg.weight_granularity,
            1,
            0,
            cfg.block_size,
            cfg.symmetric_weights(bits),
            cfg.weight_range,
        )
        return grid.round_to_nearest(w_kn.astype(np.float32)).dequantized().astype(np.float64)

    rng = np.random.default_rng(cfg.seed)
    for site in sites:
        x = np.asarray(acts[site.tensor], np.float64).reshape(-1, site.k)
        if len(x) > 4096:  # AWQ's search needs a sample of tokens, not all of them
            x = x[rng.choice(len(x), 4096, replace=False)]
        ws = [weight_kn(n) for n in site.nodes]
        if mode == "smoothquant":
            w_absmax = np.max([np.abs(w).max(1) for w in ws], axis=0)
            s, a = smoothquant_scales(np.abs(x).max(0), w_absmax, alpha), alpha
        else:
            s, a = awq_scales(x, ws, quantize)
        how = apply_scales(comp.model, site, s)
        sites_report.append(
            {
                "tensor": site.tensor,
                "nodes": [n.name for n in site.nodes],
                "alpha": a,
                "scale_range": [float(s.min()), float(s.max())],
                "fold": how,
            }
        )
    return report
