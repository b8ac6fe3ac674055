"""The quantize report: what was done, what it cost, and what was promised vs measured."""

from __future__ import annotations


def quantize_report(comp, plan, emitted, verification: dict) -> dict:
    held = comp.data_notes == [] and not comp.data_free
    report = {
        "model": str(comp.model_path),
        "config": comp.config.to_dict(),
        "plan": plan.to_dict(),
        "avg_weight_bits": plan.avg_weight_bits(comp.qgraph),
        "groups": len(comp.qgraph.groups),
        "weight_quantizers": len(comp.qgraph.weights),
        "activation_quantizers": len(comp.qgraph.activations),
        "skipped": comp.qgraph.skipped,
        "dropped_clamps": emitted.dropped_clamps,
        "int32_biases": len(emitted.int32_biases),
        "widened_for_bias": emitted.widened_for_bias,
        "regrouped_convs": emitted.regrouped,
        "matmulnbits": emitted.matmulnbits,
        "matmul_kernel": {
            "mode": comp.config.matmul_kernel,
            **(
                {"measured": list(comp._matmul_choice.values())[-1]["groups"]}
                if comp._matmul_choice
                else {}
            ),
        },
        "int2_storage": comp.int2,
        "verify": verification,
        "warnings": comp.warnings,
        "timings_s": dict(comp.timings),
        "calibration": {
            "samples": int(len(next(iter(comp.inputs.values())))),
            "verification_samples": verification["samples"],
            "verification_held_out": held,
            "held_out_of_calibration": comp.held_out_of_calibration,
            "source": comp.calibration_source,
            "data_free": comp.data_free,
        },
        "optimization": {
            "optimize": list(comp.config.optimize),
            "rounding": comp.rounding.report(plan),
            "channel_scaling": comp.scaling,
            "bias_corrected": sorted(comp.bias_overrides(plan))
            if "bias-correction" in comp.config.optimize
            else [],
            "bias_correction_check": comp.bias_check(plan),
        },
    }
    report["compute"] = plan_compute(comp, plan)
    if comp.table is not None:
        report["sensitivity"] = {"candidates": [str(c) for c in comp.candidates], **comp.table.meta}
    return report


def budget_line(report: dict) -> str | None:
    """'budget sqnr-db=31 -> measured 31.42 dB on the emitted model' (None without a budget)."""
    b = report.get("budget")
    if not b:
        return None
    held = "held-out" if report["calibration"]["verification_held_out"] else "calibration"
    how = b["how"] + (f", {held} samples" if b["kind"] == "sqnr-db" else "")
    verdict = "met" if b["met"] else "MISSED"
    if b["met"] and b.get("tolerance") and b["measured"] > b["asked"]:
        verdict = f"met within the {100 * b['tolerance']:g} % timing tolerance"
    return f"budget {b['budget']}: measured {b['measured']:.4g} {b['unit']} on the emitted model ({how}) -> {verdict}"


def plan_compute(comp, plan) -> dict:
    """The plan's bit operations (MACs x weight bits x activation bits, seed 003's cost), relative
    to all-W8A16 (the paper's reference) and to all-W8A8, and what its activation widths run as."""
    from faaq_onnx.analysis.budget import Budget

    out = {}
    for ref in ("w8a16", "w8a8"):  # the plan's cost is the same; only the reference differs
        budget = Budget.parse(f"bops=1@{ref}")
        costs = comp.cost_model(budget)
        cost = costs.plan_cost(plan.choices)
        out[f"bops_relative_{ref}"] = costs.in_budget_units(cost, budget)
    out["gbops"] = cost / 1e9
    widths = sorted({c.a for c in plan.choices.values()})
    out["activation_widths_on_ort_cpu"] = {f"a{a}": activation_kernel(a) for a in widths}
    return out


def activation_kernel(bits: int) -> str:
    """What an activation width runs as on ORT's CPU EP, as faaq emits it (other EPs: not
    measured here)."""
    if bits < 8:
        return (
            f"uint8 codes kept to {2**bits} levels by an integer Clip between Q and DQ: "
            "ORT's int8 kernels"
        )
    return {
        8: "int8/uint8 codes: ORT's int8 kernels",
        16: "int16 Q/DQ around float ops (ORT CPU has no int16 kernels)",
    }.get(bits, "float (not quantized)")


def compute_line(report: dict) -> str | None:
    """'compute: 0.25 of W8A16's bit operations (0.50 of W8A8); latency 0.62x float (...)'."""
    c = report.get("compute")
    if not c:
        return None
    line = (
        f"compute: {c['bops_relative_w8a16']:.3g} of W8A16's bit operations "
        f"({c['bops_relative_w8a8']:.3g} of W8A8's)"
    )
    lat = report.get("verify", {}).get("latency")
    if lat:
        line += (
            f"; latency {lat['ratio_to_float']:.2f}x the float model's ({lat['quantized_ms']:.3g} vs "
            f"{lat['float_ms']:.3g} ms, {lat['ep']}, batch {lat['batch']}, median of {lat['runs']} "
            "interleaved runs)"
        )
    return line


def learning_stopped(rounding_pass: dict, why: bool = True) -> str | None:
    """'learning stopped after 3 of 20 units (3 in a row kept their start)' where
    --optimize-patience stopped the pass (without the parenthesis unless `why`); None where
    every unit was learned."""
    stop = rounding_pass.get("stopped")
    if not stop:
        return None
    units = rounding_pass["units"]
    tried = sum(u.get("tried", True) for u in units)
    reason = f" ({stop['patience']} in a row kept their start)" if why else ""
    return f"learning stopped after {tried} of {len(units)} units{reason}"


def rounding_label(rounding_pass: dict) -> str:
    """'adaround', or 'adaround from GPTQ's solution' where --rounding-start gptq ran first."""
    start = " from GPTQ's solution" if rounding_pass.get("start") else ""
    return rounding_pass["mode"] + start
