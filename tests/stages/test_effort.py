"""stages/effort.py: --effort best ships the better, on held-out output SQNR, of its learned
rounding and the default's GPTQ + bias correction of the same plan."""

from __future__ import annotations

import numpy as np
import pytest

from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import quantize
from faaq_onnx.stages import effort
from faaq_onnx.stages.effort import default_config, effort_line


def _best(**kw) -> QuantConfig:
    base = dict(
        optimize="auto", effort="best", scheme="w4a8", optimize_iters=20, optimize_samples=32
    )
    return QuantConfig(progress=False, **{**base, **kw})


def _best_all_w4(**kw) -> QuantConfig:
    """--effort best with every layer at W4A8: best's own W8A8 first and last layers would
    leave the tiny CNN one layer to learn, too few for what these tests compare."""
    return _best(first_last="w4a8", **kw)


def test_the_default_request_keeps_everything_but_the_rounding():
    c = default_config(_best(optimize="auto,cle"))
    assert c.effort == "default" and c.optimize == ("cle", "gptq", "bias-correction")
    assert (c.rounding_start, c.qdrop, c.optimize_iters) == ("nearest", 0.0, 1000)
    assert c.scheme == _best().scheme and c.seed == _best().seed


@pytest.mark.parametrize("learned_wins", [True, False])
def test_best_ships_the_model_with_the_higher_output_sqnr(
    tiny_cnn, cnn_calib, monkeypatch, learned_wins
):
    """Whichever run measures the higher SQNR is the one written, with its own weights; the
    report keeps both figures (the side meant to lose is made to measure 100 dB lower)."""
    real = effort.output_sqnr
    calls = []

    def rigged(result):
        calls.append(result)
        got = real(result)
        is_learned = (
            next(iter(result.report["optimization"]["rounding"].values()))["mode"] == "adaround"
        )
        return got - (100 if is_learned != learned_wins else 0)  # the loser measures 100 dB lower

    monkeypatch.setattr(effort, "output_sqnr", rigged)
    res = quantize(tiny_cnn, cnn_calib, config=_best_all_w4())
    e = res.report["effort"]
    assert e["kept"] == ("learned" if learned_wins else "default") and len(calls) == 2
    assert e["learned"]["rounding"] == "adaround from GPTQ's solution"
    kept_rounding = {w["rounding"] for w in res.report["verify"]["size"]["per_weight"].values()}
    if learned_wins:  # a layer whose learned codes measured worse keeps GPTQ's (its start)
        assert "adaround" in kept_rounding and kept_rounding <= {"adaround", "gptq"}
    else:
        assert kept_rounding == {"gptq"}
    assert (
        e[e["kept"]]["output_sqnr_db"]
        >= e["default" if learned_wins else "learned"]["output_sqnr_db"]
    )
    assert "effort_best_other_run" in res.report["timings_s"]
    assert effort_line(res.report).startswith(
        "effort best: kept adaround from GPTQ's solution"
        if learned_wins
        else "effort best: kept gptq + bias correction"
    )


def test_the_comparison_says_where_learning_stopped(tiny_cnn, cnn_calib, losing_rounding):
    """With learning rigged to lose on every layer and a patience of 1, the learned side of the
    comparison is named with where it stopped (its layers kept GPTQ's rounding)."""
    res = quantize(tiny_cnn, cnn_calib, config=_best_all_w4(optimize_patience=1))
    learned = res.report["effort"]["learned"]["rounding"]
    assert learned == "adaround from GPTQ's solution (learning stopped after 1 of 3 units)"
    assert learned in effort_line(res.report)


def test_nothing_to_compare_at_8_bits_or_without_best(tiny_cnn, cnn_calib):
    assert "effort" not in quantize(tiny_cnn, cnn_calib, config=_best(scheme="w8a8")).report
    plain = QuantConfig(progress=False, optimize="auto", scheme="w4a8")
    assert "effort" not in quantize(tiny_cnn, cnn_calib, config=plain).report
    assert effort_line({}) is None


@pytest.mark.parametrize("scheme", ["w4a4", "w4a8"])
def test_best_below_8_bits_keeps_first_and_last_at_w8a8(tiny_cnn, cnn_calib, scheme):
    res = quantize(tiny_cnn, cnn_calib, config=_best(scheme=scheme))
    plan = res.report["plan"]
    assert plan["meta"]["first_last"] == "w8a8"
    assert sorted(set(plan["choices"].values())) == sorted([scheme, "w8a8"])
    from faaq_onnx.cli.summary import summary_line

    said = summary_line(res.report)  # the user did not ask for it: the summary says who did
    assert f"{scheme} (first/last w8a8 by --effort best; --first-last {scheme}" in said


def test_first_and_last_asked_for_are_not_credited_to_best(tiny_cnn, cnn_calib):
    from faaq_onnx.cli.summary import summary_line

    res = quantize(tiny_cnn, cnn_calib, config=_best(scheme="w4a4", first_last="w8a8"))
    assert "first_last_by" not in res.report["plan"]["meta"]
    assert "w4a4 (first/last w8a8):" in summary_line(res.report)


def test_first_and_last_stay_as_asked_outside_best_below_8_bits():
    from faaq_onnx.config import Candidate
    from faaq_onnx.stages.effort import keep_first_last_at_8_bits

    for kw, budget, given in [
        (dict(scheme="w8a8"), None, None),  # nothing below 8 bits
        (dict(scheme="w4a16"), None, None),  # 16-bit activations: W8A8 would narrow them
        (dict(scheme="w4"), None, None),  # weight-only
        (dict(scheme="w4a4", first_last="w6a6"), None, None),  # the user's choice stands
        (dict(scheme="w4a4"), "avg-bits=4", None),  # a budget sets every layer itself
        (dict(scheme="w4a4"), None, object()),  # so does a plan
        (dict(scheme="w4a4", effort="default"), None, None),
        (dict(scheme="w4a8", optimize="gptq"), None, None),  # the user chose the optimizer
    ]:
        c = _best(**kw)
        before = c.first_last
        keep_first_last_at_8_bits(c, budget, given)
        assert c.first_last == before, kw
    for scheme in ("w4a4", "w4a8", "w8a4", "w2a8"):
        c = _best(scheme=scheme)
        keep_first_last_at_8_bits(c, None, None)
        assert c.first_last == Candidate(8, 8), scheme


@pytest.mark.parametrize("learned_wins", [True, False])
def test_best_judges_both_roundings_on_samples_held_out_of_calibration(
    tiny_cnn, cnn_calib, monkeypatch, learned_wins
):
    """A calibration set with nothing left over loses its last quarter to the comparison: both
    the learned and the default run calibrate and round on the rest, and are judged there. A
    winning default (cheap) is fit again on all 48 samples; a winning learned model ships."""
    real, seen = effort.output_sqnr, []

    def rigged(result):
        seen.append(result)
        learned = next(iter(result.report["optimization"]["rounding"].values()))["mode"]
        return real(result) - (100 if (learned == "adaround") != learned_wins else 0)

    monkeypatch.setattr(effort, "output_sqnr", rigged)
    res = quantize(tiny_cnn, cnn_calib, config=_best_all_w4())  # 48 samples, none left over
    assert len(seen) == 2
    for r in seen:
        assert r.report["calibration"]["samples"] == 36
        assert r.report["calibration"]["verification_held_out"]
        assert r.report["calibration"]["held_out_of_calibration"] == 12
        assert r.report["verify"]["samples"] == 12
        assert any("compares its two roundings on 12 of the 48" in w for w in r.report["warnings"])
    e, line = res.report["effort"], effort_line(res.report)
    assert e["held_out"] and e["samples"] == 12 and "12 held-out samples" in line
    if learned_wins:
        assert res is seen[0] and e["refit_samples"] is None and "again" not in line
    else:
        assert res.report["calibration"]["samples"] == 48 and e["refit_samples"] == 48
        assert line.endswith("then gptq + bias correction again on all 48 calibration samples")
        assert e["kept"] == "default"
        t = res.report["timings_s"]  # each run counted once: the compared run without the other
        compared = {
            k: v for k, v in seen[1].report["timings_s"].items() if k != "effort_best_other_run"
        }
        assert t["effort_best_compared_run"] == round(sum(compared.values()), 2)
        assert t["effort_best_other_run"] == round(sum(seen[0].report["timings_s"].values()), 2)
        rounding = {w["rounding"] for w in res.report["verify"]["size"]["per_weight"].values()}
        assert rounding == {"gptq"}
    # a source with samples left over keeps its calibration set whole
    left_over = quantize(tiny_cnn, cnn_calib, config=_best_all_w4(calib_size=40))
    assert left_over.report["calibration"]["samples"] == 40
    assert left_over.report["verify"]["samples"] == 8
    assert left_over.report["effort"]["refit_samples"] is None


@pytest.mark.parametrize("calib_size, learned_kept", [(None, False), (40, True)])
def test_a_tie_goes_to_the_default_where_it_would_be_refit(
    tiny_cnn, cnn_calib, monkeypatch, calib_size, learned_kept
):
    """Learned rounding 0.05 dB ahead (less than TIE_DB) on samples held out of calibration: the
    default ships, fit again on every sample. Where the source had samples left over (nothing is
    refit), the same lead keeps the learned model."""
    real = effort.output_sqnr

    def rigged(result):
        learned = next(iter(result.report["optimization"]["rounding"].values()))["mode"]
        return 20.0 + (0.05 if learned == "adaround" else 0.0) + 0 * real(result)

    monkeypatch.setattr(effort, "output_sqnr", rigged)
    kw = {} if calib_size is None else {"calib_size": calib_size}
    e = quantize(tiny_cnn, cnn_calib, config=_best(**kw)).report["effort"]
    assert e["kept"] == ("learned" if learned_kept else "default")
    assert e["learned"]["output_sqnr_db"] > e["default"]["output_sqnr_db"]
    assert (e["refit_samples"] == 48) is (not learned_kept)
    assert e["tie"] is (not learned_kept)
    line = effort_line({"effort": e})
    assert ("(20.00 dB) over adaround" in line) is (not learned_kept)
    assert ("a lead under 0.1 dB goes to the default" in line) is (not learned_kept)


def test_best_judges_on_more_held_out_samples_where_the_source_has_them(tiny_cnn, cnn_calib):
    """64 held-out samples picked ResNet-20's farther-from-float model: best asks for 256 (unless
    told otherwise), and takes what the source has left over."""
    from faaq_onnx.config import BEST_VERIFY_SAMPLES

    assert BEST_VERIFY_SAMPLES == 256
    assert _best().verify_samples == 256 and _best(verify_samples=32).verify_samples == 32
    assert QuantConfig(optimize="auto", scheme="w4a8").verify_samples == 64
    rich = {"input": np.random.default_rng(4).standard_normal((400, 3, 16, 16)).astype(np.float32)}
    res = quantize(tiny_cnn, rich, config=_best(calib_size=100, optimize_iters=50))
    assert res.report["calibration"]["samples"] == 100
    assert res.report["verify"]["samples"] == res.report["effort"]["samples"] == 256


def test_the_default_effort_holds_nothing_out(tiny_cnn, cnn_calib):
    plain = QuantConfig(progress=False, optimize="auto", scheme="w4a8")
    report = quantize(tiny_cnn, cnn_calib, config=plain).report
    assert report["calibration"]["samples"] == 48
    assert report["calibration"]["held_out_of_calibration"] == 0


def test_hold_out_to_compare_splits_only_a_reused_calibration_set():
    import numpy as np

    from faaq_onnx.stages.effort import hold_out_to_compare

    x = np.arange(10.0)[:, None]
    calib, held, notes, warn = hold_out_to_compare(
        {"x": x}, {"x": x[:4]}, ["verification uses 4"], 64
    )
    assert np.array_equal(calib["x"], x[:8]) and np.array_equal(held["x"], x[8:])
    assert notes == [] and "2 of the 10" in warn[0]
    other = np.ones((3, 1))
    assert hold_out_to_compare({"x": x}, {"x": other}, [], 64)[1]["x"] is other
    tiny = hold_out_to_compare({"x": x[:2]}, {}, ["verification uses 2"], 64)  # too few to split
    assert len(tiny[0]["x"]) == 2 and tiny[2] == ["verification uses 2"] and tiny[3] == []
