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
        },
    }
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
