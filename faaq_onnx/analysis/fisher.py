"""Gradient-weighted quantization error: a label-free Fisher (FIT-style) metric.

FIT(group, b) = E[ Σ_w F_w (Q_b(w) - w)² ] + E[ Σ_a (∂L/∂a)² (Q_b(a) - a)² ]
with F the diagonal Fisher, estimated per sample from the model's own predictive
distribution (a label drawn from softmax(logits) for classifiers, a unit Gaussian
around the output otherwise), so no labels are needed (seed 000's gradient-aware
calibration; seed 003 compares FIT with SQNR). Runs the ONNX graph in torch through
faaq_onnx.interpreter; models with ops outside its table report the metric unavailable.
"""

from __future__ import annotations

import numpy as np
import onnx

from faaq_onnx.analysis.probe import root_tensors
from faaq_onnx.config import FLOAT
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.quant.affine import fake_quant


def fisher_sensitivity(
    float_proto: onnx.ModelProto,
    qgraph: QuantizerGraph,
    prober,
    jobs,
    inputs: dict[str, np.ndarray],
    samples: int = 32,
    seed: int = 0,
):
    """{(group name, candidate): FIT value} for the given jobs, or (None, why)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    from faaq_onnx.interpreter import TorchGraph, UnsupportedOp

    try:
        tg = TorchGraph(float_proto, trainable=set(qgraph.weights))
    except UnsupportedOp as exc:
        return None, str(exc)
    act_tensors = {a: root_tensors(float_proto, aq.tensors) for a, aq in qgraph.activations.items()}
    taps = {t for ts in act_tensors.values() for t in ts}
    act_bits = sorted({c.a for _, c in jobs if c.a < FLOAT})
    w_bits = sorted({c.w for g, c in jobs if g.weights and c.w < FLOAT})
    # precomputed quantization deltas of the weights, per bit width
    w_delta = {
        (w, b): torch.from_numpy(
            prober.cache.get(w, b).dequantized() - prober.cache.float_weight(w)
        )
        ** 2
        for w in qgraph.weights
        for b in w_bits
    }
    w_fisher = {w: torch.zeros_like(p) for w, p in tg.params.items()}
    act_err = {(a, b): 0.0 for a in qgraph.activations for b in act_bits}
    gen = torch.Generator().manual_seed(seed)
    n = min(samples, len(next(iter(inputs.values()))))
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # one sample at a time: a second thread only adds contention
    try:
        for i in range(n):
            feeds = {}
            for k, arr in inputs.items():
                x_in = torch.from_numpy(np.ascontiguousarray(arr[i : i + 1]))
                if x_in.is_floating_point():
                    x_in.requires_grad_(True)
                feeds[k] = x_in
            try:
                outs, tapped = tg.run(feeds, taps)
            except UnsupportedOp as exc:
                return None, str(exc)
            out = outs[0]
            if out.dim() == 2 and out.shape[1] > 1:
                label = torch.multinomial(torch.softmax(out.detach(), 1), 1, generator=gen).reshape(
                    -1
                )
                loss = torch.nn.functional.cross_entropy(out, label, reduction="sum")
            else:
                target = out.detach() + torch.randn(out.shape, generator=gen)
                loss = 0.5 * ((out - target) ** 2).sum()
            for p in tg.params.values():
                p.grad = None
            loss.backward()
            for w, p in tg.params.items():
                if p.grad is not None:
                    w_fisher[w] += p.grad.detach() ** 2
            for a, ts in act_tensors.items():
                for t in ts:
                    val = tapped.get(t)
                    if val is None or val.grad is None:
                        continue
                    g2 = val.grad.detach() ** 2
                    x = val.detach()
                    for b in act_bits:
                        s, zp, qmin, qmax = prober.act_params(a, b).tolist()
                        fq = fake_quant(x, s, zp, qmin, qmax)
                        act_err[(a, b)] += float((g2 * (fq - x) ** 2).sum())
    finally:
        torch.set_num_threads(prev)
    w_fit = {(w, b): float((w_fisher[w] * w_delta[(w, b)]).sum()) / n for (w, b) in w_delta}
    out = {}
    for g, c in jobs:
        v = sum(w_fit[(w, c.w)] for w in g.weights if c.w < FLOAT) + sum(
            act_err[(a, c.a)] / n for a in g.activations if c.a < FLOAT
        )
        out[(g.name, c)] = v
    return out, None


def fit_available(float_proto, metrics: tuple, warnings: list) -> tuple:
    """The metrics the sweep can measure: FIT needs the torch interpreter, checked before any
    sweep starts (an error when FIT is all that was asked, a warning and no FIT otherwise)."""
    from faaq_onnx.interpreter import UnsupportedOp, check_supported  # torch, imported when asked

    try:
        check_supported(float_proto)
        return metrics
    except UnsupportedOp as exc:
        if metrics == ("fit",):
            raise FaaqError(
                f"the fit metric needs the torch interpreter, which cannot run this model: {exc}; "
                "use --metric sqnr or kl"
            ) from None
        warnings.append(f"fit metric unavailable: {exc}")
        return tuple(m for m in metrics if m != "fit")
