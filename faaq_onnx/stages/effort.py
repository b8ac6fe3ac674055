"""--effort best keeps the better of its learned rounding and the default's GPTQ.

Learned rounding (AdaRound/BRECQ, even started from GPTQ's solution) is not better on every
model: ResNet-20 W4A8 gained 0.4 pt over GPTQ + bias correction, ResNet-56 W4A8 lost 0.5 pt,
and the output SQNR on held-out samples told the two apart (ResNet-56: 21.7 vs 24.9 dB).
So `best` also quantizes with the default rounding and ships whichever model measures the
higher output SQNR on the same held-out samples (256 where the source has them, not the usual
64: config.BEST_VERIFY_SAMPLES); the report keeps both figures. Where the
calibration source has no samples left over, a part of the calibration set is held out for
that comparison: judged on the samples it was fit to, learned rounding wins by construction
(EfficientNet-Lite0 W4A8: 16.8 vs 9.1 dB on its calibration images, 79.60 vs 80.36 % top-1;
on 64 held-out ones 7.8 vs 7.9 dB). When the default wins there, its rounding (seconds to
minutes) runs again on every calibration sample, held-out ones included, and that model ships:
fit on three quarters of EfficientNet-Lite0's 256 images it scored 79.02 %. Being refit on more
samples is worth something the comparison cannot see, so there a learned model must lead by
TIE_DB to be kept.
"""

from __future__ import annotations

from dataclasses import replace

from faaq_onnx.config import AUTO, ROUNDING, Candidate, QuantConfig
from faaq_onnx.inputs import reuses_calibration, split_off, without_reuse_note
from faaq_onnx.plan import BitPlan
from faaq_onnx.report import learning_stopped, rounding_label
from faaq_onnx.results import QuantizeResult

TIE_DB = 0.1  # learned rounding must be this far ahead of a default that will be refit


def keep_first_last_at_8_bits(config: QuantConfig, budget, plan) -> None:
    """--effort best below 8 bits (weights or activations, activations at most 8 bits) keeps the
    first and last weighted layers at W8A8: the convention of AdaRound's, BRECQ's and QDrop's
    results, and what the user of a preset named "best" is served by. ResNet-20 W4A4 lossless
    87.41 % without, 89.09 % with it (BRECQ + QDrop 0.5). EfficientNet-Lite0 W4A8 on the 1,044
    held-out val1300 images: 79.79 % without, 81.32 % with it (float 81.61), at 5.30 stored bits
    per weight instead of 4.19, its classifier being a quarter of the weights; over five
    calibration draws best's drop from float went from -1.05 to -0.67 pt. ResNet-56 W4A8 best
    over ten draws 83.11 % (plain 83.04), at no measurable size. The summary's plan line says
    so, and the user's --first-last, a budget or a plan (which set every layer) stand."""
    sub_8 = config.scheme.w < 8 or config.scheme.a < 8
    if (
        config.optimize_auto
        and config.effort == "best"
        and sub_8
        and config.scheme.a <= 8
        and config.first_last is None
        and budget is None
        and plan is None
    ):
        config.first_last = Candidate(8, 8)
        config.first_last_by_effort = True


def fit_gptq_to_float_output(config: QuantConfig, budget) -> None:
    """--gptq-asymmetric left unset: on where the plan that ships is the one rounded (a --scheme,
    a --plan, and a budget's allocated plan where it is rounded again in its own context:
    PlanRounding.reround), off for the per-candidate rounding a budget's sweep reuses in every
    plan (fit to the float output of a uniform model, a layer compensates upstream error its
    mixed plan may not have: left None, which those passes read as off). Measured with it on
    for the candidates: ResNet-56 `wide` r = 0.25 83.02 % against 82.57, but EfficientNet-Lite0
    `avg-bits=4` 79.41 % (KL to float 0.156) against 79.98 (0.071), and its budget command at
    12.8x ORT's quantization time against 8.2x (benchmarks/out/sweep_vs_ort_gptq_asymmetric.md)."""
    if config.gptq_asymmetric is None and budget is None:
        config.gptq_asymmetric = True


def compares(config: QuantConfig, budget) -> bool:
    """--effort best will compare two roundings (its verification samples must be held out)."""
    return config.effort == "best" and config.optimize_auto and budget is None


def hold_out_to_compare(inputs: dict, held: dict, notes: list[str], verify_samples: int):
    """(calibration inputs, held-out inputs, notes, warnings): where the source left nothing
    to hold out, the calibration set's last part (a quarter, at most `verify_samples`) is
    held out of calibration and rounding, so both models are judged on samples neither saw."""
    split = split_off(inputs, verify_samples) if reuses_calibration(inputs, held) else None
    if split is None:
        return inputs, held, notes, []
    calib, kept, k = split
    n = len(next(iter(inputs.values())))
    return (
        calib,
        kept,
        without_reuse_note(notes),
        [
            f"--effort best compares its two roundings on {k} of the {n} calibration samples, "
            f"held out: calibration and rounding use the other {n - k}"
        ],
    )


def wants_comparison(config: QuantConfig, result: QuantizeResult) -> bool:
    """--effort best chose the rounding itself (--optimize auto) and rounded some weight."""
    passes = (result.report.get("optimization") or {}).get("rounding") or {}
    rounded = any(p.get("units") for p in passes.values())
    return config.effort == "best" and config.optimize_auto and rounded


def default_config(config: QuantConfig) -> QuantConfig:
    """The same request at --effort default: what --optimize auto runs there, the rest kept."""
    kept = tuple(m for m in config.optimize if m not in ROUNDING and m != "bias-correction")
    return replace(
        config,
        effort="default",
        optimize=(*kept, AUTO),
        optimize_auto=False,
        optimize_iters=1000,
        rounding_start=None,
        qdrop=0.0,
        progress=False,
    )


def output_sqnr(result: QuantizeResult) -> float:
    """The worst output's SQNR on the verification samples (what both models are judged on)."""
    return min(o["sqnr_db"] for o in result.report["verify"]["outputs"].values())


def better_of_default(
    learned: QuantizeResult, model_path, calib, config: QuantConfig, plan: BitPlan, opset: int
) -> QuantizeResult:
    """`learned` or the default rounding's model of the same plan, whichever has the higher
    output SQNR on the same held-out samples; the kept one's report says what was compared."""
    from faaq_onnx.optimize.rounding import rounding_plans
    from faaq_onnx.pipeline import Compilation

    comp = Compilation(model_path, calib, default_config(config), target_opset=opset, compare=True)
    comp.optimize_rounding(rounding_plans(comp, plan, None))
    default = comp.emit(plan)
    scores = {"learned": output_sqnr(learned), "default": output_sqnr(default)}
    # where samples were held out of calibration, the default is fit again on all of them if
    # kept: a tie on the held-out samples goes to it (EfficientNet-Lite0 W4A8: 10.72 vs 10.69 dB,
    # KL to float 0.067 learned on 192 images against 0.050 for the default refit on 256)
    held_out = learned.report["calibration"].get("held_out_of_calibration", 0) > 0
    ahead = TIE_DB if held_out else 0.0
    kept, other = (
        (learned, default) if scores["learned"] >= scores["default"] + ahead else (default, learned)
    )
    learned_pass = next(iter(learned.report["optimization"]["rounding"].values()))
    stopped = learning_stopped(learned_pass, why=False)
    mode = rounding_label(learned_pass) + (f" ({stopped})" if stopped else "")
    other_run = round(sum(other.report["timings_s"].values()), 2)
    compared = kept.report
    refit = kept is default and held_out
    if refit:  # the default won: its rounding is cheap, so again on every calibration sample
        del comp
        full = Compilation(model_path, calib, default_config(config), target_opset=opset)
        full.optimize_rounding(rounding_plans(full, plan, None))
        kept = full.emit(plan)
        kept.report["timings_s"]["effort_best_compared_run"] = round(
            sum(compared["timings_s"].values()), 2
        )
    kept.report["timings_s"]["effort_best_other_run"] = other_run
    kept.report["effort"] = {
        "effort": "best",
        "kept": "learned" if kept is learned else "default",
        "learned": {"rounding": mode, "output_sqnr_db": scores["learned"]},
        "default": {"rounding": "gptq + bias correction", "output_sqnr_db": scores["default"]},
        "samples": compared["verify"]["samples"],
        "held_out": compared["calibration"]["verification_held_out"],
        "refit_samples": kept.report["calibration"]["samples"] if refit else None,
        "tie": kept is not learned and scores["learned"] > scores["default"],
    }
    return kept


def effort_line(report: dict) -> str | None:
    """'effort best: kept adaround from GPTQ (24.12 dB) over gptq + bias correction (23.05 dB) ...'."""
    e = report.get("effort")
    if not e:
        return None
    kept, other = (
        (e["learned"], e["default"]) if e["kept"] == "learned" else (e["default"], e["learned"])
    )
    refit = (
        f"; then {kept['rounding']} again on all {e['refit_samples']} calibration samples"
        if e.get("refit_samples")
        else ""
    )
    if e.get("tie"):  # the learned side led by less than TIE_DB
        refit = f" (a lead under {TIE_DB} dB goes to the default){refit}"
    return (
        f"effort best: kept {kept['rounding']} ({kept['output_sqnr_db']:.2f} dB) over "
        f"{other['rounding']} ({other['output_sqnr_db']:.2f} dB), output SQNR on the same "
        f"{e['samples']} {'held-out' if e.get('held_out', True) else 'calibration'} samples"
        f"{refit}"
    )
