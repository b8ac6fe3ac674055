"""GPTQ over a plan's layers: where each layer's Hessian comes from, and what it cost.

With `quantized` (or `weights`/`mixed`) inputs a layer's Hessian is summed over what the
quantized model feeds it, every layer upstream already rounded: ORT runs, for each layer,
only the part of the probe between the previous layer's input and this one's
(runtime.segments), so all layers together cost about one pass of the model. With `float` inputs every layer's input
comes from the float model, so one streamed pass of it gives every Hessian at once (in
waves whose Hessians fit WAVE_BYTES). Either way a Hessian is summed batch by batch over
at most ROWS_PER_K · K sampled patches per batch (optimize.hessian.HessianSum).

With config.gptq_asymmetric (`--gptq-asymmetric`) the sequential pass also runs the float model
layer by layer and sums, over the same patches, the product of each layer's quantized-model
input with its float-model input, so each layer is rounded to reproduce the float model's
output rather than its own float weights' (gptq.asymmetric_target): the error upstream layers
left is compensated where it arrives instead of passed on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from faaq_onnx.optimize import gptq as gptq_mod
from faaq_onnx.optimize.bias_correction import LayerBiasCorrection
from faaq_onnx.optimize.gptq_clip import output_clipped_grid
from faaq_onnx.optimize.hessian import HessianSum, LinearForm, linear_form
from faaq_onnx.optimize.unit_data import QUANTIZED_ACTIVATION_MODES
from faaq_onnx.optimize.units import Unit

ROWS_PER_K = 32  # patches kept per batch, per Hessian row (HessianSum.rows_per_k)
# GPTQ needs at least as many input vectors as the weight has inputs (K): with fewer, its Hessian is
# singular in every direction no calibration sample spans, and GPTQ moves the rounding error there,
# where it is invisible on those samples and not on others. EfficientNet-Lite0's classifier (256
# images for K = 1,280) fit that way looked nearly free at 2 bits to the sweep, which measures on
# calibration samples: `--budget avg-bits=4` put it at W2 and lost 2.9 dB of held-out logit SQNR
# (7.7 against 10.6 dB; KL to float 0.073 against 0.053); uniform W4A8 held out 10.6 dB either way.
# Such weights are rounded to nearest, and the report says why.
MIN_ROWS_PER_INPUT = 1
WAVE_BYTES = 1 << 30  # float64 Hessians summed in one float pass


@dataclass
class LayerWeight:
    """One weight GPTQ rounds: its op's linear form and the tensor the weight multiplies."""

    name: str
    form: LinearForm
    x_name: str
    hessian: HessianSum | None = None


@dataclass
class LayerJob:
    unit: Unit
    node_op: str
    weights: list[LayerWeight] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    hessian_s: float = 0.0  # building and summing this layer's patches
    starts: dict | None = None  # where to put the compensated weights GPTQ rounds (gptq_layers)
    also_bits: tuple[int, ...] = ()  # widths rounded from the same Hessians besides the plan's

    @property
    def hessian_bytes(self) -> int:
        """The float64 sums and the float32 patches a HessianSum holds before summing (up to K
        rows of them)."""
        return sum(12 * int(np.prod(w.form.gkn[:2])) * w.form.gkn[1] for w in self.weights)


def gptq_layers(
    comp,
    units,
    data,
    plan,
    wbits,
    inputs: str,
    correct_biases: bool = False,
    starts=None,
    also_bits: tuple[int, ...] = (),
    timings: dict | None = None,
    fit_float: bool | None = None,
) -> tuple[list[dict], float, dict | None]:
    """Round every weight below 8 bits of `units` by GPTQ; (a report per unit, seconds ORT spent
    producing layer inputs when those come from one shared float pass, else 0, and the corrected
    biases where `correct_biases` asked for bias correction inside the layer-by-layer pass and
    it reached every correctable layer, else None). With `starts` (a dict), starts[weight] gets
    the error-compensated weights GPTQ rounded, where a learned rounding can start. With
    config.gptq_asymmetric, or `fit_float` where given (and inputs other than float), each
    layer is fit to the float model's output. `also_bits`: other widths each weight is rounded
    to as well, from the same Hessian (shared_context). `timings` (a dict) gets the seconds
    spent correcting the biases of layers the pass does not round."""
    jobs = [_job(comp, u, wbits) for u in units]
    for job in jobs:
        job.starts = starts
        job.also_bits = tuple(b for b in also_bits if b < 8)
    if inputs != "float":
        layer_input = data.sequential_inputs(plan.choices, inputs)
        fit = comp.config.gptq_asymmetric if fit_float is None else fit_float
        float_run = data.float_run() if fit else None
        float_input = None if float_run is None else float_run.get
        # the float means bias correction matches come from the same float run where there is one
        biases = (
            LayerBiasCorrection(
                comp,
                data.inputs,
                plan.choices if inputs in QUANTIZED_ACTIVATION_MODES else None,
                float_run,
            )
            if correct_biases
            else None
        )
        reports, unrounded_s = [], 0.0
        for step in _in_graph_order(comp, jobs, biases):
            if isinstance(step, str):  # a layer the plan keeps at 8 bits: its bias only
                assert biases is not None
                t0 = time.perf_counter()
                biases.correct(step, layer_input.run)
                unrounded_s += time.perf_counter() - t0
                continue
            reports.append(_sequential(comp, step, layer_input, wbits, float_input))
            if biases is not None:
                t0 = time.perf_counter()
                biases.correct(step.unit.nodes[0], layer_input.run)
                reports[-1]["bias_correction_s"] = round(time.perf_counter() - t0, 2)
        if unrounded_s and timings is not None:
            timings["bias_correction_unrounded_s"] = round(unrounded_s, 2)
        return reports, 0.0, (biases.result() if biases is not None else None)
    reports, shared_s = [], 0.0
    for wave in _waves(jobs):
        shared_s += _sum_from_float(wave, data)
        reports += [_round(comp, job, wbits, {}) for job in wave]
    return reports, round(shared_s, 2), None


def _in_graph_order(comp, jobs: list[LayerJob], biases) -> list:
    """The jobs, and where biases are corrected in the pass the layers it does not round (a
    mixed plan's 8-bit ones, by node name), in graph order: so the pass corrects every bias of
    the plan, and no pass of its own is needed for the rest (EfficientNet-Lite0: 14 s)."""
    order = {n.name: i for i, n in enumerate(comp.float_proto.graph.node)}
    steps: list = [(order[j.unit.nodes[0]], j) for j in jobs]
    if biases is not None:
        rounded = {j.unit.nodes[0] for j in jobs}
        steps += [(order[n], n) for n in biases.targets if n not in rounded]
    return [step for _, step in sorted(steps, key=lambda s: s[0])]


def _job(comp, unit, wbits) -> LayerJob:
    node = next(n for n in comp.float_proto.graph.node if n.name == unit.nodes[0])
    job = LayerJob(unit, node.op_type)
    for w in unit.weights:
        if wbits[w] >= 8:
            continue
        index = list(node.input).index(w)
        form = linear_form(node, index, np.shape(comp.weights.float_weight(w)))
        if isinstance(form, str):
            job.skipped[w] = form
            continue
        x_name = node.input[1 - index] if node.op_type == "MatMul" else node.input[0]
        job.weights.append(LayerWeight(w, form, x_name))
    return job


def _waves(jobs: list[LayerJob]) -> list[list[LayerJob]]:
    waves: list[list[LayerJob]] = [[]]
    held = 0
    for job in jobs:
        if waves[-1] and held + job.hessian_bytes > WAVE_BYTES:
            waves.append([])
            held = 0
        waves[-1].append(job)
        held += job.hessian_bytes
    return [w for w in waves if w]


def _sum_from_float(wave: list[LayerJob], data) -> float:
    """Sum every Hessian of `wave` over one streamed pass of the float model; ORT's seconds."""
    lws = [lw for job in wave for lw in job.weights]
    for i, lw in enumerate(lws):
        lw.hessian = HessianSum(lw.form, ROWS_PER_K, seed=i)
    names = sorted({lw.x_name for lw in lws})
    if not names:
        return 0.0
    batches = data.float_batches(names)
    ort_s = 0.0
    while True:
        t0 = time.perf_counter()
        values = next(batches, None)
        ort_s += time.perf_counter() - t0
        if values is None:
            break
        for job in wave:
            t1 = time.perf_counter()
            for lw in job.weights:
                assert lw.hessian is not None  # set above
                lw.hessian.add(values[lw.x_name])
            job.hessian_s += time.perf_counter() - t1
    for job in wave:
        t1 = time.perf_counter()
        for lw in job.weights:
            assert lw.hessian is not None
            lw.hessian.settle()
        job.hessian_s += time.perf_counter() - t1
    return ort_s


def _sequential(comp, job: LayerJob, layer_input, wbits, float_input=None, batch: int = 32) -> dict:
    """One layer's Hessians from what the model with every upstream layer rounded feeds it
    (layer_input: UnitData.sequential_inputs), summed batch by batch; with `float_input` (the
    float model's tensors, in graph order: UnitData.float_sequence) their cross products too."""
    t_in = 0.0
    for i, lw in enumerate(job.weights):
        # the float weights: where cheaper, what the asymmetric target needs is summed with them
        w = None if float_input is None else lw.form.to_gkn(comp.weights.float_weight(lw.name))
        hs = lw.hessian = HessianSum(lw.form, ROWS_PER_K, seed=i, weight=w)
        t0 = time.perf_counter()
        x = layer_input(lw.x_name, lazy=True)  # summed a batch at a time: may stay in its file
        xf = None if float_input is None else float_input(lw.x_name, lazy=True)
        t1 = time.perf_counter()
        t_in += t1 - t0
        whole = lw.form.trans_x and x.ndim == 2  # (K, M): axis 0 is not the samples
        for s in range(0, 1 if whole else len(x), batch):
            part = (lambda v: np.asarray(v)) if whole else (lambda v, s=s: v[s : s + batch])
            hs.add(part(x), None if xf is None else part(xf))
        hs.settle()
        job.hessian_s += time.perf_counter() - t1
    return _round(comp, job, wbits, {"inputs_s": round(t_in, 2)})


def _round(comp, job: LayerJob, wbits, extra: dict) -> dict:
    """GPTQ each weight of `job` on the weight cache's grid, its channels' ranges first narrowed
    where that lowers the output error (config.gptq_clip: gptq_clip.py), and store it there.
    mse_nearest / mse: the layer's mean squared output error (x · ΔW, bias and clamp left out)
    over the sampled patches, round-to-nearest on the min-max grid and GPTQ."""
    t0 = time.perf_counter()
    out = {
        "unit": job.unit.name,
        "op": job.node_op,
        "weights": [],
        "mse_nearest": 0.0,
        "mse": 0.0,
        **extra,
        "hessian_s": round(job.hessian_s, 2),
    }
    if job.skipped:
        out["skipped"] = dict(job.skipped)
    # a range the user chose (--weight-range mse) is kept
    clips = comp.config.gptq_clip and comp.config.weight_range == "minmax"
    for lw in job.weights:
        h = lw.hessian
        assert h is not None, "every weight's Hessian is summed before it is rounded"
        k = lw.form.gkn[1]
        if h.rows < MIN_ROWS_PER_INPUT * k:  # the cache's nearest rounding stays
            out.setdefault("skipped", {})[lw.name] = (
                f"{h.rows} input vectors for {k} inputs: too few for GPTQ's Hessian; rounded to "
                "nearest"
            )
            lw.hessian = None
            continue
        w_float = np.asarray(comp.weights.float_weight(lw.name), np.float64)
        rtn = comp.weights.get(lw.name, wbits[lw.name])
        start: dict | None = {} if job.starts is not None else None
        fitted = gptq_mod.asymmetric_target(lw.form, w_float, h)
        if h.compares_float:  # asked for: say per weight whether the layer had rows enough
            out.setdefault("asymmetric", []).append(fitted is not None)
        target = w_float if fitted is None else fitted
        qw = _gptq_at(comp, lw, target, rtn, clips, out, start)
        if job.starts is not None and start:
            job.starts[lw.name] = start["w"]
        comp.weights.put(lw.name, wbits[lw.name], qw)
        out["weights"].append(lw.name)
        # both against the weights GPTQ fit: the float ones, or the asymmetric target
        out["mse_nearest"] += h.output_error(rtn.dequantized() - target)
        out["mse"] += h.output_error(qw.dequantized() - target)
        for bits in job.also_bits:
            if bits != wbits[lw.name]:
                other = comp.weights.get(lw.name, bits)
                comp.weights.put(lw.name, bits, _gptq_at(comp, lw, target, other, clips, {}, None))
        lw.hessian = None  # the wave's memory goes back as each layer is rounded
    if job.also_bits:
        out["also_bits"] = list(job.also_bits)
    out["act_order"] = gptq_mod.ACT_ORDER
    out["rounding_s"] = round(time.perf_counter() - t0, 2)
    out["seconds"] = round(out.get("inputs_s", 0.0) + job.hessian_s + out["rounding_s"], 2)
    return out


def _gptq_at(comp, lw: LayerWeight, target, rtn, clips: bool, out: dict, start: dict | None):
    """`target` rounded by GPTQ under the layer's Hessian on the grid of `rtn` (one width's
    round-to-nearest weight), each channel's range first narrowed where `clips`."""
    h = lw.hessian
    assert h is not None
    grid = rtn.grid
    if clips:  # each channel's range chosen by the output error under h (gptq_clip)
        grid, ratios = output_clipped_grid(lw.form, target, h.h, grid)
        out.setdefault("clip", []).append(round(float(np.mean(ratios)), 3))
    return gptq_mod.gptq_weight(
        lw.form,
        target,
        h.h,
        grid,
        grid.fmt.signed,  # symmetric grids are the signed ones
        comp.config.weight_range,
        starts=start,
    )
