"""The lines `faaq quantize` prints when it is done: plan, bytes, output SQNR, what the sweep,
the rounding, the effort and the budget did, and the kernels."""

from __future__ import annotations

from faaq_onnx.cli.common import human_bytes
from faaq_onnx.report import budget_line, compute_line, learning_stopped, rounding_label
from faaq_onnx.stages.effort import effort_line


def rounding_line(report: dict) -> str:
    """What rounding optimization did to the emitted weights and what it cost."""
    rounding = dict(report.get("optimization", {}).get("rounding") or {})
    own = rounding.pop("emitted plan", None)  # a budget's plan rounded again (--reround)
    passes = [r for r in rounding.values() if r.get("units")]
    if not passes:
        return ""
    mode = rounding_label(passes[0])
    if passes[0].get("start"):  # --rounding-start gptq: GPTQ rounded first, learning started there
        mode += f" (GPTQ {sum(r.get('start', {}).get('seconds', 0.0) for r in passes):.1f} s of it)"
    layers = len({w for r in passes for u in r["units"] for w in u["weights"]})
    widths = sorted({b for r in passes for b in r.get("also_bits", [])})
    at = f" (and at {_listed(widths)} bits from the same Hessians)" if widths else ""
    seconds = sum(r.get("seconds", 0.0) for r in passes)
    why = (
        " (--optimize auto; --optimize none rounds to nearest, --effort best takes longer for more)"
        if report.get("config", {}).get("optimize_auto")
        else ""
    )
    corrected = report.get("optimization", {}).get("bias_corrected") or []
    own_pass = report.get("timings_s", {}).get("bias_correction")
    inside = sum(_bias_seconds(r) for r in passes)
    own_inside = _bias_seconds(own) if own else 0.0
    bias, bias_own = "", ""
    if corrected and own_pass:
        bias = f"; bias correction on {len(corrected)} layers, {own_pass:.1f} s"
    elif corrected and own_inside:  # corrected during the allocated plan's own pass
        bias_own = f", of which bias correction on {len(corrected)} layers {own_inside:.1f} s"
    elif corrected:  # corrected during the rounding pass: its time is in the seconds above
        bias = f", of which bias correction on {len(corrected)} layers {inside:.1f} s"
    return (
        f"rounding: {mode} on {layers} weights below 8 bits{at}{_clipped(passes)}, {seconds:.1f} s"
        f"{_stopped(passes)}{_held_out(passes)}{_rerounded(own)}{bias_own}{bias}{_nearest(passes)}"
        f"{why}"
        f"{_bias_check(report)}"
    )


def _nearest(passes: list[dict]) -> str:
    """'; 1 weight rounded to nearest (_fc.weight: 256 input vectors for 1280 inputs: ...)'."""
    skipped: dict = {}
    for r in passes:
        for u in r["units"]:
            skipped.update(u.get("skipped") or {})
    if not skipped:
        return ""
    name, why = next(iter(skipped.items()))
    why = why.removesuffix("; rounded to nearest")
    more = f", and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    return f"; {len(skipped)} weight(s) rounded to nearest instead ({name}: {why}{more})"


def _bias_seconds(rounding_pass: dict) -> float:
    """Seconds a pass spent correcting biases inside it (its rounded layers' and the others')."""
    units = rounding_pass.get("units", [])
    return sum(u.get("bias_correction_s", 0.0) for u in units) + rounding_pass.get(
        "bias_correction_unrounded_s", 0.0
    )


def _rerounded(own: dict | None) -> str:
    """'; the allocated plan's 30 weights rounded again in its own context (...), 20.1 s'."""
    if not own or not own.get("units"):
        return ""
    layers = len({w for u in own["units"] for w in u["weights"]})
    fit = any(any(u.get("asymmetric", [])) for u in own["units"])
    how = ", each layer fit to the float output" if fit else ""
    return (
        f"; the allocated plan's {layers} weights below 8 bits rounded again in its own "
        f"context{how}, {own.get('seconds', 0.0):.1f} s"
    )


def _listed(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _stopped(passes: list[dict]) -> str:
    """'; learning stopped after 3 of 20 units (...)' where --optimize-patience stopped a pass."""
    notes = [n for n in map(learning_stopped, passes) if n]
    return f"; {notes[0]}" if notes else ""


def _clipped(passes: list[dict]) -> str:
    """' (channel ranges 0.88 of min-max on average)' where GPTQ narrowed its grids (--gptq-clip)."""
    ratios = [c for r in passes for u in r["units"] for c in u.get("clip", [])]
    if not ratios:
        return ""
    return f" (channel ranges {sum(ratios) / len(ratios):.2f} of min-max on average)"


def _held_out(passes: list[dict]) -> str:
    """'; learned codes kept in 31 of 50 units (each judged on 24 samples it was not fit to)'."""
    held = [r for r in passes if r.get("held_out_per_unit")]
    if not held:
        return ""
    units = [u for r in held for u in r["units"]]
    learned = sum(u.get("kept") == "learned" for u in units)
    samples = held[0]["held_out_per_unit"]
    return (
        f"; learned codes kept in {learned} of {len(units)} units (each judged on {samples} "
        "samples it was not fit to)"
    )


def _bias_check(report: dict) -> str:
    """'; bias correction kept on layers at 8-bit activations (output SQNR all 20.1, 8-bit
    activations 23.0, none 22.5 dB on 128 samples)' where auto measured its corrections."""
    check = report.get("optimization", {}).get("bias_correction_check")
    if not check:
        return ""
    kept = {"all": "kept on every layer", "none": "dropped"}.get(
        check["kept"], "kept on layers at 8-bit activations"
    )
    scores = ", ".join(f"{k} {v:.1f}" for k, v in check["sqnr_db"].items())
    return f"; bias correction {kept} (output SQNR {scores} dB on {check['samples']} samples)"


def _pooled(out: dict) -> str:
    """The pooled SQNR beside seed 003's mean of per-sample ratios where the two part ways
    (a few near-exact samples, e.g. saturated softmax outputs, inflate the mean)."""
    pooled = out.get("sqnr_db_pooled")
    if pooled is None or abs(pooled - out["sqnr_db"]) < 3:
        return ""
    return f" (mean of per-sample ratios; {pooled:.1f} dB pooled over all samples)"


def _sqnr(out: dict) -> str:
    if out.get("silent_reference"):  # -300 dB would read as a measurement
        return (
            "output SQNR undefined: the model given outputs zeros on every sample measured, "
            "so nothing was compared (check the calibration data; --calib random sets symbolic "
            "input dims to 1)"
        )
    at = (
        f" at the logits {out['compared_at']!r} (the input of the output's Softmax, less its mean over the Softmax's axis)"
        if "compared_at" in out
        else ""
    )
    return f"output SQNR {out['sqnr_db']:.1f} dB{at}{_pooled(out)}"


def summary_line(report: dict) -> str:
    size = report["verify"]["size"]
    outs = report["verify"]["outputs"]
    first = next(iter(outs.values()))
    agree = (
        f", top-1 agreement {100 * first['top1_agreement']:.1f}%"
        if "top1_agreement" in first
        else ""
    )
    total = sum(report["timings_s"].values())
    return (
        f"{_plan_label(report)}: {report['groups']} groups -> {report.get('output', '(memory)')}\n"
        f"  weights {human_bytes(size['weight_float_bytes'])} -> {human_bytes(size['weight_stored_bytes'])} "
        f"({size['effective_weight_bits']:.2f} effective bits, {size['stored_weight_bits']:.2f} stored bits incl. scales); "
        f"model {human_bytes(size['float_model_bytes'])} -> {human_bytes(size['quant_model_bytes'])}\n"
        f"  {_sqnr(first)}{agree} on {report['verify']['samples']} "
        f"{_verified_on(report['calibration'])}; "
        f"{total:.1f} s\n"
        + (f"  {sensitivity_line(report)}\n" if sensitivity_line(report) else "")
        + (f"  {rounding_line(report)}\n" if rounding_line(report) else "")
        + (f"  {domain_line(report)}\n" if domain_line(report) else "")
        + (f"  {effort_line(report)}\n" if effort_line(report) else "")
        + (f"  {budget_line(report)}\n" if budget_line(report) else "")
        + (f"  {compute_line(report)}\n" if compute_line(report) else "")
        + (f"  {branches_line(report)}\n" if branches_line(report) else "")
        + (f"  {widened_line(report)}\n" if widened_line(report) else "")
        + (f"  {regrouped_line(report)}\n" if regrouped_line(report) else "")
        + "\n".join(
            f"  kernels: {line}" if i == 0 else f"  {line}"
            for i, line in enumerate(report["verify"]["kernels"]["summary"])
        )
    )


def domain_line(report: dict) -> str | None:
    """What --calib-domain other left unfit to the calibration samples (and what the user set)."""
    config = report.get("config", {})
    if config.get("calib_domain") != "other":
        return None
    rounded = rounding_line(report)
    weights = "weights rounded by the --optimize given" if rounded else "weights rounded to nearest"
    return (
        f"calibration domain other: {weights}, activation ranges {config.get('act_range')} "
        "(nothing fit to statistics of samples unlike the deployment's; --calib-domain same "
        "fits them)"
    )


def widened_line(report: dict) -> str | None:
    """'int32 biases: 97 channels in 26 layers had near-zero weights under a bias ...' where
    emission widened weight scales so that a bias fits int32 (quant.bias.widened_for_bias)."""
    widened = report.get("widened_for_bias") or {}
    if not widened:
        return None
    channels = sum(widened.values())
    return (
        f"int32 biases: {channels} channel(s) in {len(widened)} layer(s) had near-zero weights "
        "under a bias too large for int32 at their scale; their weight scales were widened so the "
        "bias fits (those weights round to 0)"
    )


def regrouped_line(report: dict) -> str | None:
    """'regrouped: 1 grouped Conv(s) ...' where emission merged narrow groups so that ORT's int8
    Conv takes a fast path (passes.emit_regroup)."""
    regrouped = report.get("regrouped_convs") or {}
    if not regrouped:
        return None
    merged = sorted({r["merged"] for r in regrouped.values()})
    return (
        f"regrouped: {len(regrouped)} grouped Conv(s) with few channels per group written with "
        f"{'/'.join(map(str, merged))} groups merged into one (zero weights between them: the "
        "same function), which ORT's int8 Conv runs on a fast path instead of a slow one"
    )


def branches_line(report: dict) -> str | None:
    """'branches: If_0 then_branch quantized (64 samples, 6 groups); If_0 else_branch float
    (no calibration sample takes it)' where the network sat inside If branches."""
    entries = report.get("branches")
    if not entries:
        return None
    parts = []
    for e in entries:
        where = f"{e['node']} {e['branch']}"
        if e["quantized"]:
            parts.append(
                f"{where} quantized ({e['calibration_samples']} samples, {e['groups']} groups)"
            )
        elif e["weighted_ops"]:
            parts.append(f"{where} float ({e['why'].split(': left in float')[0]})")
    return "branches: " + "; ".join(parts)


def sensitivity_line(report: dict) -> str | None:
    """'sensitivity: 108 configurations on 64 samples; ranking stability 0.91 (...)' where a sweep
    ran: how far its ranking holds from one half of the samples to the other."""
    meta = report.get("sensitivity")
    if not meta or "configs" not in meta:
        return None
    line = f"sensitivity: {meta['configs']} configurations on {meta['samples']} samples"
    auto = meta.get("samples_auto")
    plateau = (auto or {}).get("weighted_tau")  # stopped as more samples no longer steadied it
    if plateau is not None:
        line += (
            f" of {auto['available']} (auto: doubled from {auto['first']} until tau stopped "
            f"rising, the most damaging configurations ranked at weighted tau "
            f"{plateau:.2f} >= {auto['tau']})"
        )
    elif auto:  # --sensitivity-samples auto: say what it skipped and why
        line += f" of {auto['available']} (auto: doubled from {auto['first']} until tau >= {auto['tau']})"
    tau = meta.get("ranking_tau_halves")
    if tau is not None:
        line += f"; ranking stability {tau:.2f} (Kendall tau, first vs second half of the samples)"
        if tau < 0.8 and plateau is not None:
            line += ": what disagrees is mostly the order of near-lossless configurations"
        elif tau < 0.8:
            line += ": low, more --sensitivity-samples or --calib-size would rank more reliably"
    return line


def _verified_on(calibration: dict) -> str:
    """Which samples the verification figures come from: held-out ones are worth the most;
    a data-free run has only inputs it distilled itself, which the line must not hide."""
    if calibration.get("data_free"):
        return "distilled samples (data-free calibration: not real data)"
    return "held-out samples" if calibration["verification_held_out"] else "calibration samples"


def _by(meta: dict) -> str:
    """Who kept the first and last layers wider where the user did not ask (--effort best)."""
    by = meta.get("first_last_by")
    return f" by {by}; --first-last {meta['scheme']} quantizes them too" if by else ""


def _plan_label(report: dict) -> str:
    meta = report["plan"]["meta"]
    if "scheme" in meta:
        return meta["scheme"] + (
            f" (first/last {meta['first_last']}{_by(meta)})" if "first_last" in meta else ""
        )
    if "uniform" in meta:  # the allocator's mix measured worse than a uniform plan that fits
        key = "kl" if meta.get("metric") == "kl" else "sqnr_db"
        unit = " output KL" if key == "kl" else " dB"
        return (
            f"{meta['uniform']} everywhere ({meta.get('budget', '')}: measured "
            f"{meta['joint'][key]:.4g}{unit} against the allocated mix's "
            f"{meta['allocated_joint'][key]:.4g}{unit})"
        )
    counts: dict[str, int] = {}
    for c in report["plan"]["choices"].values():
        counts[c] = counts.get(c, 0) + 1
    mix = ", ".join(f"{n}x {c}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"mixed ({meta.get('allocator', 'plan')}, {meta.get('budget', '')}; {mix})"
