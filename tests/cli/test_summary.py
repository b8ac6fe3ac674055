"""cli/summary.py: the lines `faaq quantize` prints when it is done."""

from __future__ import annotations

from faaq_onnx.cli.summary import (
    _pooled,
    _verified_on,
    domain_line,
    rounding_line,
    summary_line,
)


def test_pooled_sqnr_is_shown_only_where_it_parts_from_the_mean_by_3_db():
    assert _pooled({"sqnr_db": 30.0}) == ""
    assert _pooled({"sqnr_db": 30.0, "sqnr_db_pooled": 32.9}) == ""
    assert _pooled({"sqnr_db": 30.0, "sqnr_db_pooled": 27.1}) == ""
    assert _pooled({"sqnr_db": 30.0, "sqnr_db_pooled": 33.0}) == (
        " (mean of per-sample ratios; 33.0 dB pooled over all samples)"
    )
    assert _pooled({"sqnr_db": 30.0, "sqnr_db_pooled": 26.94}).endswith(
        "26.9 dB pooled over all samples)"
    )


def test_verified_on_names_where_the_figures_come_from():
    assert _verified_on({"verification_held_out": True}) == "held-out samples"
    assert _verified_on({"verification_held_out": False}) == "calibration samples"
    assert _verified_on({"data_free": True, "verification_held_out": True}).startswith(
        "distilled samples (data-free"
    )


def _rounding(units, bias_s=None, corrected=(), auto=False):
    rep = {
        "optimization": {
            "rounding": {"a": {"mode": "gptq", "units": units, "seconds": 2.25}},
            "bias_corrected": list(corrected),
        },
        "config": {"optimize_auto": auto},
        "timings_s": {},
    }
    if bias_s is not None:
        rep["timings_s"]["bias_correction"] = bias_s
    return rep


def test_rounding_line_counts_weights_seconds_and_bias_correction():
    """Distinct weights over every unit; bias correction in its own pass is added beside, done
    inside the rounding pass it is part of the seconds ('of which')."""
    units = [
        {"weights": ["w1", "w2"], "bias_correction_s": 0.5},
        {"weights": ["w2", "w3"], "bias_correction_s": 0.25},
    ]
    assert rounding_line({}) == ""
    assert rounding_line(_rounding([])) == ""
    assert rounding_line(_rounding(units)) == "rounding: gptq on 3 weights below 8 bits, 2.2 s"
    assert rounding_line(_rounding(units, bias_s=1.25, corrected=["a", "b"])) == (
        "rounding: gptq on 3 weights below 8 bits, 2.2 s; bias correction on 2 layers, 1.2 s"
    )
    assert rounding_line(_rounding(units, corrected=["a"])) == (
        "rounding: gptq on 3 weights below 8 bits, 2.2 s, of which bias correction on 1 layers 0.8 s"
    )
    assert rounding_line(_rounding(units, auto=True)).endswith(
        " (--optimize auto; --optimize none rounds to nearest, --effort best takes longer for more)"
    )
    clipped = [dict(units[0], clip=[0.8, 0.9]), dict(units[1], clip=[0.7])]
    assert rounding_line(_rounding(clipped)) == (
        "rounding: gptq on 3 weights below 8 bits (channel ranges 0.80 of min-max on average), "
        "2.2 s"
    )
    two = _rounding(units)
    two["optimization"]["rounding"]["b"] = {
        "mode": "gptq",
        "units": [{"weights": ["w9"]}],
        "seconds": 1.0,
    }
    assert rounding_line(two) == "rounding: gptq on 4 weights below 8 bits, 3.2 s"
    shared = _rounding(units)
    shared["optimization"]["rounding"]["a"]["also_bits"] = [2, 3, 6]
    assert rounding_line(shared) == (
        "rounding: gptq on 3 weights below 8 bits (and at 2, 3 and 6 bits from the same "
        "Hessians), 2.2 s"
    )
    checked = _rounding(units)
    check = {"sqnr_db": {"all": 19.54, "none": 24.31, "8-bit activations": 24.1}, "samples": 128}
    checked["optimization"]["bias_correction_check"] = dict(check, kept="none")
    assert rounding_line(checked).endswith(
        "2.2 s; bias correction dropped (output SQNR all 19.5, none 24.3, 8-bit activations "
        "24.1 dB on 128 samples)"
    )
    checked["optimization"]["bias_correction_check"]["kept"] = "8-bit activations"
    assert "; bias correction kept on layers at 8-bit activations (" in rounding_line(checked)
    checked["optimization"]["bias_correction_check"]["kept"] = "all"
    assert "; bias correction kept on every layer (" in rounding_line(checked)
    started = _rounding(units)
    started["optimization"]["rounding"]["a"].update(mode="adaround", start={"seconds": 0.4})
    assert rounding_line(started) == (
        "rounding: adaround from GPTQ's solution (GPTQ 0.4 s of it) on 3 weights below 8 bits, 2.2 s"
    )


def _report(meta, choices=None, outputs=None):
    return {
        "plan": {"meta": meta, "choices": choices or {}},
        "groups": 7,
        "output": "q.onnx",
        "verify": {
            "size": {
                "weight_float_bytes": 4096,
                "weight_stored_bytes": 1536,
                "effective_weight_bits": 4.0,
                "stored_weight_bits": 4.5,
                "float_model_bytes": 5 * 1024 * 1024,
                "quant_model_bytes": 512,
            },
            "outputs": outputs or {"y": {"sqnr_db": 31.26, "top1_agreement": 0.9876}},
            "samples": 64,
            "kernels": {"summary": ["3 QLinearConv", "1 QGemm"]},
        },
        "calibration": {"verification_held_out": True},
        "timings_s": {"a": 1.25, "b": 2.5},
    }


def test_summary_line_of_a_uniform_scheme():
    assert summary_line(_report({"scheme": "w4a8"})).splitlines() == [
        "w4a8: 7 groups -> q.onnx",
        "  weights 4.00 KB -> 1.50 KB (4.00 effective bits, 4.50 stored bits incl. scales); "
        "model 5.00 MB -> 512 B",
        "  output SQNR 31.3 dB, top-1 agreement 98.8% on 64 held-out samples; 3.8 s",
        "  kernels: 3 QLinearConv",
        "  1 QGemm",
    ]


def test_summary_line_states_the_plans_bit_operations_before_its_kernels():
    rep = _report({"scheme": "w4a8"})
    rep["compute"] = {"bops_relative_w8a16": 0.25, "bops_relative_w8a8": 0.5}
    lines = summary_line(rep).splitlines()
    assert lines[3:5] == [
        "  compute: 0.25 of W8A16's bit operations (0.5 of W8A8's)",
        "  kernels: 3 QLinearConv",
    ]


def test_summary_line_of_a_mixed_plan_counts_its_choices():
    rep = _report(
        {"allocator": "knapsack", "budget": "avg-bits=6"},
        {"a": "w4a8", "b": "w8a8", "c": "w4a8"},
        {"y": {"sqnr_db": 20.0}},
    )
    first, _, third, *_ = summary_line(rep).splitlines()
    assert first == "mixed (knapsack, avg-bits=6; 2x w4a8, 1x w8a8): 7 groups -> q.onnx"
    assert third == "  output SQNR 20.0 dB on 64 held-out samples; 3.8 s"


def test_summary_line_of_a_uniform_plan_kept_over_the_allocated_mix_says_both_measurements():
    meta = {
        "allocator": "knapsack",
        "budget": "bops=0.25@w8a16",
        "metric": "sqnr",
        "uniform": "w4a8",
        "joint": {"sqnr_db": 24.83, "kl": 0.02},
        "allocated_joint": {"sqnr_db": 24.77, "kl": 0.03},
    }
    rep = _report(meta, {"a": "w4a8", "b": "w4a8"})
    assert summary_line(rep).splitlines()[0] == (
        "w4a8 everywhere (bops=0.25@w8a16: measured 24.83 dB against the allocated mix's "
        "24.77 dB): 7 groups -> q.onnx"
    )
    meta["metric"] = "kl"
    assert "measured 0.02 output KL against the allocated mix's 0.03 output KL" in summary_line(rep)


def test_summary_line_states_the_sweeps_ranking_stability():
    """A mixed plan's summary says how many configurations the sweep ran on how many samples
    and how stable its ranking was; a low stability says what to do about it."""
    from faaq_onnx.cli.summary import sensitivity_line

    rep = _report({"allocator": "knapsack", "budget": "avg-bits=6"}, {"a": "w4a8"})
    assert sensitivity_line(rep) is None and len(summary_line(rep).splitlines()) == 5
    rep["sensitivity"] = {"configs": 108, "samples": 64, "ranking_tau_halves": 0.914}
    assert summary_line(rep).splitlines()[3] == (
        "  sensitivity: 108 configurations on 64 samples; ranking stability 0.91 "
        "(Kendall tau, first vs second half of the samples)"
    )
    rep["sensitivity"]["ranking_tau_halves"] = 0.79
    assert sensitivity_line(rep).endswith(
        ": low, more --sensitivity-samples or --calib-size would rank more reliably"
    )
    rep["sensitivity"]["ranking_tau_halves"] = 0.8
    assert "low" not in sensitivity_line(rep)
    rep["sensitivity"].update(samples=16, samples_auto={"available": 64, "first": 16, "tau": 0.9})
    assert sensitivity_line(rep).startswith(
        "sensitivity: 108 configurations on 16 samples of 64 (auto: doubled from 16 until tau >= 0.9)"
    )
    rep["sensitivity"]["samples_auto"]["weighted_tau"] = 0.912
    rep["sensitivity"]["ranking_tau_halves"] = 0.75
    assert sensitivity_line(rep) == (
        "sensitivity: 108 configurations on 16 samples of 64 (auto: doubled from 16 until tau "
        "stopped rising, the most damaging configurations ranked at weighted tau 0.91 >= 0.9); "
        "ranking stability 0.75 (Kendall tau, first vs second half of the samples): what "
        "disagrees is mostly the order of near-lossless configurations"
    )


def test_branches_line_says_which_branch_was_quantized_and_why_the_others_stay_float():
    from faaq_onnx.cli.summary import branches_line

    assert branches_line({}) is None and branches_line({"branches": []}) is None
    why = "no calibration sample takes it ('c' was false on all 64)"
    rep = {
        "branches": [
            {
                "node": "If_0",
                "branch": "then_branch",
                "quantized": True,
                "weighted_ops": {"MatMul": 2},
                "calibration_samples": 64,
                "groups": 6,
            },
            {
                "node": "If_0",
                "branch": "else_branch",
                "quantized": False,
                "weighted_ops": {"Conv": 1},
                "why": f"{why}: left in float",
            },
            {  # nothing to quantize there: not worth a word
                "node": "If_1",
                "branch": "then_branch",
                "quantized": False,
                "weighted_ops": {},
                "why": "holds no weighted op: left in float",
            },
        ]
    }
    assert branches_line(rep) == (
        f"branches: If_0 then_branch quantized (64 samples, 6 groups); If_0 else_branch float ({why})"
    )


def test_rounding_line_says_how_many_units_kept_their_learned_codes_on_held_out_samples():
    units = [
        {"weights": ["w1"], "kept": "learned"},
        {"weights": ["w2"], "kept": "start"},
        {"weights": ["w3"], "kept": "learned"},
    ]
    rep = _rounding(units)
    rep["optimization"]["rounding"]["a"]["mode"] = "adaround"
    assert "learned codes" not in rounding_line(rep)  # no hold-out: nothing to say
    rep["optimization"]["rounding"]["a"]["held_out_per_unit"] = 24
    assert rounding_line(rep) == (
        "rounding: adaround on 3 weights below 8 bits, 2.2 s; learned codes kept in 2 of 3 "
        "units (each judged on 24 samples it was not fit to)"
    )


def test_summary_line_does_not_print_an_sqnr_against_a_silent_reference():
    silent = {"y": {"sqnr_db": -300.0, "sqnr_db_pooled": -300.0, "silent_reference": True}}
    line = summary_line(_report({"scheme": "w8a8"}, outputs=silent)).splitlines()[2]
    assert line.startswith("  output SQNR undefined: the model given outputs zeros on every sample")
    assert "-300" not in line


def test_rounding_line_names_the_allocated_plans_own_pass_apart():
    """A budget's re-round (the "emitted plan" pass) is not counted with the candidates' passes
    but said apart, with whether it fit each layer to the float output."""
    units = [{"weights": ["w1", "w2"]}, {"weights": ["w3"]}]
    rep = _rounding(units)
    rep["optimization"]["rounding"]["emitted plan"] = {
        "mode": "gptq",
        "units": [{"weights": ["w1"], "asymmetric": [True]}],
        "seconds": 1.5,
    }
    assert rounding_line(rep) == (
        "rounding: gptq on 3 weights below 8 bits, 2.2 s; the allocated plan's 1 weights below "
        "8 bits rounded again in its own context, each layer fit to the float output, 1.5 s"
    )
    rep["optimization"]["rounding"]["emitted plan"]["units"][0]["asymmetric"] = [False]
    assert rounding_line(rep).endswith("rounded again in its own context, 1.5 s")


def test_domain_line_says_what_calib_domain_other_left_unfit():
    assert domain_line({"config": {"calib_domain": "same", "act_range": "mse"}}) is None
    assert domain_line({}) is None
    line = domain_line({"config": {"calib_domain": "other", "act_range": "minmax"}})
    assert line is not None
    assert line.startswith(
        "calibration domain other: weights rounded to nearest, activation ranges minmax"
    )
    rep = _rounding([{"weights": ["w1"]}])
    rep["config"].update(calib_domain="other", act_range="percentile")
    line = domain_line(rep)
    assert line is not None  # an optimizer the user named still ran
    assert "weights rounded by the --optimize given, activation ranges percentile" in line


def test_rounding_line_names_weights_left_at_nearest_and_why():
    units = [
        {"weights": ["w1"]},
        {
            "weights": [],
            "skipped": {"fc": "256 input vectors for 1280 inputs: too few; rounded to nearest"},
        },
        {"weights": ["w2"], "skipped": {"ct": "ConvTranspose with auto_pad SAME"}},
    ]
    assert rounding_line(_rounding(units)) == (
        "rounding: gptq on 2 weights below 8 bits, 2.2 s; 2 weight(s) rounded to nearest "
        "instead (fc: 256 input vectors for 1280 inputs: too few, and 1 more)"
    )
    assert "nearest" not in rounding_line(_rounding(units[:1]))
