"""Learned rounding for a bit plan: AdaRound layer by layer, or BRECQ block by block.

Units are optimized in graph order; each finished unit's integers go into the weight
cache under (weight, bits), so the next unit's inputs (`quantized` mode) already see
them, the sensitivity sweep measures them, and the emitter ships them. For mixed
precision the pipeline rounds every candidate weight width (seed 003 §3.5; GPTQ several
widths from one pass's Hessians, plan_rounding.shared_contexts): the allocator then chooses
between rounded weights, not round-to-nearest ones.
"""

from __future__ import annotations

import os
import time

import numpy as np
from tqdm.auto import tqdm

from faaq_onnx.analysis.probe import root_tensors
from faaq_onnx.config import OPTIMIZE_INPUTS
from faaq_onnx.errors import FaaqError
from faaq_onnx.interpreter import TorchGraph, UnsupportedOp, check_nodes
from faaq_onnx.optimize.gptq_layers import gptq_layers
from faaq_onnx.optimize.patches import (
    INPUT,
    batch_positions,
    bf16_products,
    conv_layer,
    patch_data,
    patch_runner,
)
from faaq_onnx.optimize.reconstruct import (
    LearnedActQuant,
    ReconSettings,
    SoftWeight,
    reconstruct,
)
from faaq_onnx.optimize.unit_data import UnitData
from faaq_onnx.optimize.units import block_units, layer_units, unit_model
from faaq_onnx.plan import BitPlan

MODES = ("adaround", "brecq", "gptq")


def optimize_rounding(
    comp,
    plan: BitPlan,
    mode: str,
    settings: ReconSettings,
    inputs: str = "quantized",
    samples: int = 256,
    learn_activations: bool = True,
    progress: bool = False,
    start: str = "nearest",
    also_bits: tuple[int, ...] = (),
    fit_float: bool | None = None,
) -> dict:
    """Round every weight of `plan` below 8 bits by reconstruction; returns a report.
    `fit_float`: GPTQ fits each layer to the float output or not, whatever
    config.gptq_asymmetric says (None: as it says).

    `start` = "gptq": AdaRound/BRECQ first round every such weight by GPTQ and learn from there
    (the soft weights start at GPTQ's error-compensated weights, whose nearest rounding is
    GPTQ's solution) instead of from the float weights and their nearest rounding."""
    if mode not in MODES:
        raise FaaqError(f"unknown rounding optimizer {mode!r}: choose {', '.join(MODES)}")
    if inputs not in OPTIMIZE_INPUTS:
        raise FaaqError(
            f"optimize inputs must be one of {', '.join(OPTIMIZE_INPUTS)}, got {inputs!r}"
        )
    proto, qgraph = comp.float_proto, comp.qgraph
    wbits = plan.weight_bits(qgraph)
    abits = plan.act_bits(qgraph)
    units = _rounded_units(comp, mode, wbits)
    if not units:
        return {"mode": mode, "units": [], "seconds": 0.0, "note": "no weight below 8 bits"}
    if mode != "gptq":
        _check_units(proto, units, mode)
    # GPTQ sums over the samples batch by batch; reconstruction reads each batch's rows of a
    # unit's tensors, from a file where they are large (runtime.spill): every sample either way
    n = _samples(comp, samples)
    data = _unit_data(comp, units, n)
    report: dict = {
        "mode": mode,
        "inputs": inputs,
        "samples": n,
        "iters": settings.iters,
        "units": [],
    }
    t_all = time.perf_counter()
    bar = tqdm(
        units, desc=f"{mode} w{min(wbits.values())}", disable=not progress, unit="unit", leave=False
    )
    if mode == "gptq":
        correct = "bias-correction" in comp.config.optimize
        report["units"], report["inputs_s"], biases = gptq_layers(
            comp,
            units,
            data,
            plan,
            wbits,
            inputs,
            correct_biases=correct,
            also_bits=also_bits,
            timings=report,
            fit_float=fit_float,
        )
        if also_bits:  # rounded from this pass's Hessians too (plan_rounding.shared_contexts)
            report["also_bits"] = list(also_bits)
        if biases is not None:
            report["bias_corrections"] = biases  # taken out by PlanRounding (arrays, not report)
        report["seconds"] = round(time.perf_counter() - t_all, 2)
        return report
    starts: dict = {}
    fit = _fit_samples(n, settings.holdout)
    if fit < n:
        report["held_out_per_unit"] = n - fit
    if start == "gptq":
        report["start"] = _gptq_start(comp, plan, wbits, inputs, fit, starts)
    unit_data = data.reconstruction_sequence(plan.choices, inputs)
    for i, unit in enumerate(bar):
        if _out_of_patience(report["units"], settings.patience):
            _stop(report, units[i:], settings.patience, wbits)
            break
        t0 = time.perf_counter()
        x, x_float, target = unit_data(unit.inputs, unit.output)
        layer = conv_layer(proto, unit) if settings.sampled_positions else None
        batch = settings.batch_size
        samples_of_rows = np.arange(n)
        if layer is not None:  # the layer loss on sampled positions: a product of patches
            run_unit = patch_runner(layer)
            x, x_float, target, samples_of_rows = patch_data(
                layer,
                x[unit.inputs[0]],
                None if x_float is None else x_float[unit.inputs[0]],
                target,
                settings.seed + i,
            )
            patch = x[INPUT].shape[1] * x[INPUT].shape[2]
            batch = batch_positions(patch, settings.batch_size)
            learn_in_bf16 = bf16_products(batch, patch, target.shape[1], layer.groups)
            learn_unit = patch_runner(layer, bf16=True) if learn_in_bf16 else run_unit
        else:
            run_unit = learn_unit = _interpreted(proto, unit, mode)
            learn_in_bf16 = False
        soft = {
            w: SoftWeight(
                starts.get(w, comp.weights.float_weight(w)),
                comp.weights.get(w, wbits[w]).grid,
                learn_scale=settings.scale_lr > 0,
            )
            for w in unit.weights
            if wbits[w] < 8
        }
        acts = _learned_acts(comp, unit, abits, x) if mode == "brecq" and learn_activations else {}

        # with a hold-out, the unit is fit to the first `fit` samples and judged on the rest
        # (rows that are not one per sample, or per sampled position, are all fit to)
        split = fit < n and len(samples_of_rows) == len(target)
        train = np.nonzero(samples_of_rows < fit)[0] if split else None
        check = np.nonzero(samples_of_rows >= fit)[0] if split else None
        before = _mse(
            run_unit, soft, {}, x, target, hard=False, rtn=True, comp=comp, wbits=wbits, rows=check
        )
        # one thread for small units (per-op overhead dominates); every core for large feature maps
        per_batch = batch * max(int(np.prod(v.shape[1:])) for v in x.values())
        threads = settings.threads if per_batch < (1 << 20) else max(os.cpu_count() or 1, 1)
        unit_settings = ReconSettings(
            **{
                **settings.__dict__,
                "seed": settings.seed + i,
                "threads": threads,
                "batch_size": batch,
            }
        )
        reconstruct(
            learn_unit,
            soft,
            acts,
            x,
            target,
            unit_settings,
            float_inputs=x_float,
            rows=train,
            progress=(
                lambda it, loss, unit=unit: bar.set_postfix(
                    unit=unit.name[-24:], loss=f"{loss:.4g}"
                )
            ),
        )
        start_weights = {w: comp.weights.get(w, wbits[w]) for w in soft}
        for w, sw in soft.items():
            comp.weights.put(
                w, wbits[w], start_weights[w].with_codes(sw.codes(), mode, scale=sw.learned_scale())
            )
        for q in acts.values():
            comp.calibration.learned[q.act_key] = q.scale
        after = _mse(run_unit, soft, acts, x, target, hard=True, comp=comp, wbits=wbits, rows=check)
        kept = "learned"
        if not acts and after > before:  # a layer never leaves worse than it started
            for w, qw in start_weights.items():
                comp.weights.put(w, wbits[w], qw)
            after, kept = before, "start"
        report["units"].append(
            {
                "unit": unit.name,
                "weights": list(soft),
                "mse_nearest": before,
                "mse": after,
                "positions": len(target) if layer is not None else "all",
                **({"products": "bfloat16"} if learn_in_bf16 else {}),
                "kept": kept,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    comp.feeds.reset_act_cache()
    if comp._prober is not None:
        comp._prober.reset_act_cache()
    report["seconds"] = round(time.perf_counter() - t_all, 2)
    return report


def _out_of_patience(done: list[dict], patience: int) -> bool:
    """Whether the last `patience` units (all of them learned) each kept their start."""
    last = done[-patience:] if patience > 0 else []
    return len(last) == patience > 0 and all(u["kept"] == "start" for u in last)


def _stop(report: dict, rest: list, patience: int, wbits) -> None:
    """The units not tried keep their start (GPTQ's rounding with --rounding-start gptq): the
    report lists them as such and says where learning stopped."""
    report["stopped"] = {"after": report["units"][-1]["unit"], "patience": patience}
    report["units"] += [
        {
            "unit": u.name,
            "weights": [w for w in u.weights if wbits[w] < 8],
            "kept": "start",
            "tried": False,
        }
        for u in rest
    ]


def _interpreted(proto, unit, mode: str):
    """run_unit for reconstruct(): the unit's nodes in the torch interpreter."""
    try:
        graph = TorchGraph(unit_model(proto, unit))
    except UnsupportedOp as exc:
        raise FaaqError(
            f"{mode} cannot run unit {unit.name} in the torch interpreter: {exc}"
        ) from None

    def run_unit(feeds, hooks):
        return graph.run(feeds, hooks=hooks)[0][0]

    return run_unit


def _gptq_start(comp, plan: BitPlan, wbits, inputs: str, samples: int, starts: dict) -> dict:
    """GPTQ on every weight below 8 bits, its compensated weights kept in `starts`; a report."""
    t0 = time.perf_counter()
    units = _rounded_units(comp, "gptq", wbits)
    data = _unit_data(comp, units, _samples(comp, samples))
    reports, _, _ = gptq_layers(comp, units, data, plan, wbits, inputs, starts=starts)
    return {
        "mode": "gptq",
        "weights": len(starts),
        "mse_nearest": sum(r["mse_nearest"] for r in reports),
        "mse": sum(r["mse"] for r in reports),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _rounded_units(comp, mode: str, wbits) -> list:
    """The units `mode` works on that hold a weight below 8 bits."""
    units = _units(comp.float_proto, comp.qgraph, mode)
    return [u for u in units if any(wbits[w] < 8 for w in u.weights)]


def _unit_tensors(units) -> list[str]:
    return sorted({t for u in units for t in [*u.inputs, u.output]})


def _samples(comp, samples: int) -> int:
    return min(samples, len(next(iter(comp.inputs.values()))))


def _fit_samples(n: int, holdout: float) -> int:
    """How many of n samples reconstruction fits to: all but the last `holdout` share of them,
    if that leaves at least 4 on each side."""
    held = round(n * holdout)
    return n - held if held >= 4 and n - held >= 4 else n


def _unit_data(comp, units, n: int) -> UnitData:
    """The units' input and output tensors over the first n samples."""
    return UnitData(comp, _unit_tensors(units), n, batch_size=max(comp.config.batch_size, 32))


def check_interpretable(proto, qgraph, mode: str | None) -> None:
    """Refuse, in one line, a model whose adaround/brecq units hold a node the torch interpreter
    cannot run. It is built one unit at a time, so without this the error would come only
    after calibration and every unit before the offending one. GPTQ runs nothing in torch."""
    if mode in ("adaround", "brecq"):
        _check_units(proto, _units(proto, qgraph, mode), mode)


def _units(proto, qgraph, mode: str) -> list:
    return block_units(proto, qgraph) if mode == "brecq" else layer_units(proto, qgraph)


def _check_units(proto, units, mode: str) -> None:
    """Every node of `units` (all that reconstruction interprets, not the whole model)."""
    wanted = {name for u in units for name in u.nodes}
    try:
        check_nodes([n for n in proto.graph.node if n.name in wanted])
    except UnsupportedOp as exc:
        raise FaaqError(
            f"--optimize {mode} runs its units in the torch interpreter, which cannot run "
            f"this model: {exc}"
        ) from None


def _learned_acts(comp, unit, abits: dict[str, int], x) -> dict:
    """Step-size-learnable quantizers for the activation roots produced inside a block."""
    cfg = comp.config
    produced = set()
    for n in comp.float_proto.graph.node:
        if n.name in unit.nodes:
            produced.update(n.output)
    acts = {}
    for a in unit.activations:
        aq = comp.qgraph.activations[a]
        scale, zp, fmt, _, _ = comp.calibration.activation_params(
            aq, abits[a], cfg.act_symmetric, cfg.act_range, cfg.percentile
        )
        for t in root_tensors(comp.float_proto, aq.tensors):
            if t in produced and t != unit.output:
                size = int(np.prod(comp.calibration.quantizer_stats(aq).shape or (1,)))
                acts[t] = LearnedActQuant(scale, zp, fmt.qmin, fmt.qmax, size)
                acts[t].act_key = (a, abits[a])  # type: ignore[attr-defined]  # read back below
    return acts


MSE_MAPS, MSE_ROWS = 256, 8192  # what a unit's error before and after is measured on
MSE_CHUNK_MAPS = 16  # feature maps run at once: 256 of EfficientNet's 96x112x112 are 1.2 GB


def _mse(
    run_unit, soft, acts, x, target, hard: bool, comp, wbits, rtn: bool = False, rows=None
) -> float:
    """The unit's output error (summed over channels, averaged over the rest) on the first
    MSE_MAPS feature maps, or MSE_ROWS rows (sampled positions of patches.py, a Gemm's samples),
    of `rows` (None: of every row), run MSE_CHUNK_MAPS maps at a time so a large layer's maps
    are never all in memory."""
    import torch

    maps = target.ndim > 2
    order = np.arange(len(target)) if rows is None else np.asarray(rows)
    total = min(len(order), MSE_MAPS if maps else MSE_ROWS)
    step = MSE_CHUNK_MAPS if maps else max(total, 1)
    weights = {}
    for w, sw in soft.items():
        q = comp.weights.get(w, wbits[w])
        weights[w] = torch.from_numpy(q.dequantized() if rtn or hard else sw.soft().numpy())
    hooks = {t: (lambda v, q=q: q(v)) for t, q in acts.items()} if acts else None
    summed, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, total, step):
            part = order[s : min(s + step, total)]
            feeds = {k: torch.from_numpy(np.ascontiguousarray(v[part])) for k, v in x.items()}
            out = run_unit({**feeds, **weights}, hooks).numpy()
            err = np.sum((out - np.asarray(target[part])) ** 2, axis=1, dtype=np.float64)
            summed += float(err.sum())
            count += err.size
    return summed / max(count, 1)


def rounding_plans(comp, plan: BitPlan | None, cands: list | None) -> list[BitPlan]:
    """The plans whose weights rounding optimization prepares: the one plan, or one uniform
    plan per candidate weight width (seed 003 §3.5) so sensitivity and allocation see them.

    Each width is rounded in the context of its candidate with the most activation bits: the
    layer inputs (and so the Hessians) of coarser activations carry their quantization noise,
    and weights fit to them serve every activation width worse. ResNet-56, `wide`, GPTQ: W4
    weights rounded under W4A4 measure 22.6 / 18.2 / 7.7 dB as W4A8 / W4A6 / W4A4, under W4A6
    24.4 / 18.7 / 7.7 (benchmarks/out/rounding_context.md)."""
    if plan is not None:
        return [plan]
    if cands is None:
        return [comp.uniform(comp.config.scheme)]
    by_w: dict = {}
    for c in sorted(cands, key=lambda c: (c.w, -c.a)):
        by_w.setdefault(c.w, c)
    return [comp.uniform(c) for c in by_w.values() if c.w < 8]
