import json

import numpy as np
import pytest
from click.testing import CliRunner

from faaq_onnx.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def calib_npz(tmp_path, cnn_calib):
    p = tmp_path / "calib.npz"
    np.savez(p, **cnn_calib)
    return str(p)


@pytest.mark.parametrize("cmd", ["quantize", "eval", "export", "inspect", "profile"])
def test_help(runner, cmd):
    r = runner.invoke(main, [cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_quantize_writes_model_and_json(runner, tiny_cnn, calib_npz, tmp_path):
    out, rep = tmp_path / "q.onnx", tmp_path / "r.json"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--scheme", "w4a8",
                             "--json", str(rep), "-q"])
    assert r.exit_code == 0, r.output
    assert "w4a8" in r.output and "SQNR" in r.output
    report = json.loads(rep.read_text())
    assert report["avg_weight_bits"] == 4.0 and out.exists()


def test_weight_and_act_bits_options(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz,
                             "--weight-bits", "6", "--act-bits", "6", "-q"])
    assert r.exit_code == 0, r.output
    assert "w6a6" in r.output


@pytest.mark.parametrize("setup,match", [
    ("not_onnx", "not a readable ONNX model"),
    ("nan_calib", "NaN"),
    ("bad_scheme", "cannot read scheme"),
    ("missing_calib", "not found"),
    ("scales_without_rounding", "--optimize-scales learns weight scales during reconstruction"),
    ("mixed_inputs_with_gptq", "--optimize-inputs mixed mixes inputs during reconstruction"),
])
def test_bad_input_one_line_no_output(runner, tiny_cnn, calib_npz, tmp_path, setup, match):
    model, calib, extra = tiny_cnn, calib_npz, []
    if setup == "not_onnx":
        model = str(tmp_path / "fake.onnx")
        open(model, "w").write("hello, I am a text file")
    elif setup == "nan_calib":
        calib = str(tmp_path / "nan.npz")
        np.savez(calib, input=np.full((2, 3, 16, 16), np.nan, np.float32))
    elif setup == "bad_scheme":
        extra = ["--scheme", "int8"]
    elif setup == "missing_calib":
        calib = str(tmp_path / "nope.npz")
    elif setup == "scales_without_rounding":
        extra = ["--optimize", "bias-correction", "--optimize-scales"]
    elif setup == "mixed_inputs_with_gptq":
        extra = ["--optimize", "gptq", "--optimize-inputs", "mixed"]
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", model, "-o", str(out), "--calib", calib, "-q", *extra])
    assert r.exit_code != 0
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert match in err, err
    assert len([ln for ln in err.strip().splitlines() if ln]) == 1
    assert not out.exists()


def test_inspect_lists_groups(runner, tiny_cnn):
    r = runner.invoke(main, ["inspect", tiny_cnn])
    assert r.exit_code == 0
    assert "quantizer groups" in r.output and "conv2" in r.output


def test_eval_reports_accuracy_and_drop(runner, tiny_cnn, tmp_path, cnn_calib):
    x = cnn_calib["input"][:20]
    from tests.conftest import run_model

    pred = run_model(tiny_cnn, {"input": x})[0].argmax(1)
    y = pred.copy()
    y[:5] = (pred[:5] + 1) % 10  # five wrong answers: the float model scores exactly 75 %
    data = tmp_path / "test.npz"
    np.savez(data, x=x, y=y)
    q = tmp_path / "q.onnx"
    assert runner.invoke(main, ["quantize", tiny_cnn, "-o", str(q), "--calib", str(data), "--scheme", "w4a4",
                                "-q"]).exit_code == 0
    rep = tmp_path / "eval.json"
    r = runner.invoke(main, ["eval", tiny_cnn, str(q), "--data", str(data), "--per-class", "--json", str(rep)])
    assert r.exit_code == 0, r.output
    res = json.loads(rep.read_text())["models"]
    assert res[tiny_cnn]["top1"] == 0.75
    for c, v in res[tiny_cnn]["per_class"].items():  # per class, counted independently
        sel = y == int(c)
        assert v["samples"] == sel.sum() and v["top1"] == pytest.approx(np.mean(pred[sel] == y[sel]))
    q_pred = run_model(str(q), {"input": x})[0].argmax(1)
    vs = res[str(q)]["vs_reference"]
    assert vs["top1_drop"] == pytest.approx(0.75 - np.mean(q_pred == y))
    drops = {int(c): np.mean(pred[y == c] == c) - np.mean(q_pred[y == c] == c) for c in np.unique(y)}
    worst = max(drops, key=drops.get)
    assert vs["worst_class_drop"]["drop"] == pytest.approx(drops[worst])  # a drop is positive when worse
    q_logits, f_logits = run_model(str(q), {"input": x})[0], run_model(tiny_cnn, {"input": x})[0]
    assert vs["agreement"] == pytest.approx(np.mean(q_pred == pred))
    assert vs["fixed"] == np.sum((q_pred == y) & (pred != y)) and vs["broken"] == np.sum((q_pred != y) & (pred == y))
    assert vs["logit_sqnr_db"] == pytest.approx(10 * np.log10(np.sum(f_logits.astype(np.float64) ** 2)
                                                              / np.sum((q_logits - f_logits).astype(np.float64) ** 2)),
                                                rel=1e-4)
    assert "same class on" in r.output and "fixed /" in r.output


def test_export_list(runner):
    r = runner.invoke(main, ["export", "--list"])
    assert r.exit_code == 0 and "resnet20-cifar10" in r.output


def test_quantize_with_budget_saves_plan_and_overrides(runner, tiny_cnn, calib_npz, tmp_path):
    out, plan, ovr = tmp_path / "q.onnx", tmp_path / "plan.json", tmp_path / "ovr.json"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--budget", "avg-bits=5",
                             "--candidates", "w4a8,w8a8", "--save-plan", str(plan), "--save-overrides", str(ovr),
                             "--no-cache", "-q"])
    assert r.exit_code == 0, r.output
    assert "mixed (knapsack, avg-bits=5" in r.output
    choices = json.loads(plan.read_text())["choices"]
    assert set(choices.values()) <= {"w4a8", "w8a8"}
    overrides = json.loads(ovr.read_text())
    assert {o[0]["quant_type"] for k, o in overrides.items() if k != "_faaq_effective_bits"} >= {"QInt4", "QUInt8"}
    # the saved plan applies again
    out2 = tmp_path / "q2.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out2), "--calib", calib_npz, "--plan", str(plan), "-q"])
    assert r.exit_code == 0, r.output


def test_impossible_budget_is_one_line(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--budget", "avg-bits=1",
                             "--candidates", "w4a8,w8a8", "--no-cache", "-q"])
    assert r.exit_code == 2 and not out.exists()
    assert "infeasible" in r.stderr and "avg-bits=4" in r.stderr


def test_analyze_writes_report(runner, tiny_cnn, calib_npz, tmp_path):
    rep = tmp_path / "rep"
    r = runner.invoke(main, ["analyze", tiny_cnn, "--calib", calib_npz, "--report", str(rep), "--points", "3",
                             "--no-cache", "-q"])
    assert r.exit_code == 0, r.output
    for f in ("sensitivity.json", "sensitivity.md", "sensitivity.png", "tradeoff.json", "tradeoff.png"):
        assert (rep / f).stat().st_size > 0, f
    curve = json.loads((rep / "tradeoff.json").read_text())
    assert len(curve["knapsack"]) == 3 and {p["label"] for p in curve["uniform"]} == {"w4a8", "w8a8", "w8a16"}
    assert open(rep / "sensitivity.png", "rb").read(4) == b"\x89PNG"


def test_json_dash_writes_report_to_stdout(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--json", "-", "-q"])
    assert r.exit_code == 0, r.output
    start = r.stdout.index("{")
    report = json.loads(r.stdout[start: r.stdout.rindex("}") + 1])
    assert report["output"] == str(out) and not (tmp_path / "-").exists()


@pytest.mark.parametrize("value,ok", [("0", False), ("-3", False), ("ten", False), ("all", True), ("16", True)])
def test_calib_size_zero_is_an_error_not_all(runner, tiny_cnn, calib_npz, tmp_path, value, ok):
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--calib-size", value, "-q"])
    if ok:
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 2 and "--calib-size" in r.output and not out.exists()


def test_written_files_are_readable_by_others_under_umask_022(runner, tiny_cnn, calib_npz, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out, plan = tmp_path / "q.onnx", tmp_path / "plan.json"
        r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--save-plan", str(plan),
                                 "-q"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644 and stat.S_IMODE(os.stat(plan).st_mode) == 0o644


def test_unreachable_budget_exits_2_with_one_line(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--budget", "sqnr-db=95",
                             "--candidates", "w4a8,w8a8", "--no-cache", "-q"])
    assert r.exit_code == 2 and not out.exists()
    assert r.output.count("\n") == 1 and "nearest feasible budget" in r.output


def test_demo_without_dev_extra_names_it(runner, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    r = runner.invoke(main, ["demo", "--out", "unused"])
    assert r.exit_code == 2 and "dev extra" in r.output and "scikit-learn" in r.output
    assert "Traceback" not in r.output


def test_analyze_with_measured_latency(runner, tiny_cnn, calib_npz, tmp_path):
    """--latency profiles each kernel class once and puts latency beside size and BOPs."""
    rep = tmp_path / "rep"
    r = runner.invoke(main, ["analyze", tiny_cnn, "--calib", calib_npz, "--report", str(rep), "--points", "2",
                             "--metrics", "sqnr", "--latency", "--no-cache", "-q"])
    assert r.exit_code == 0, r.output
    lat = json.loads((rep / "latency.json").read_text())
    assert set(lat["classes"].values()) == {"int8w/a8", "int8w/a16"}  # w4a8 and w8a8 share the int8 kernels
    assert all(set(v) == {"int8w/a8", "int8w/a16"} for v in lat["group_us"].values())
    curve = json.loads((rep / "tradeoff.json").read_text())
    assert all("latency_ms" in p for p in curve["uniform"] + curve["knapsack"])
    assert "latency" in r.output


@pytest.mark.parametrize("flag, rerounded", [("--reround", True), ("--no-reround", False)])
def test_reround_flag_reaches_the_pipeline(runner, tiny_cnn, calib_npz, tmp_path, flag, rerounded):
    report = tmp_path / "r.json"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(tmp_path / "q.onnx"), "--calib", calib_npz,
                             "--budget", "avg-bits=6", "--candidates", "w3a8,w4a8,w8a8", "--optimize", "adaround",
                             "--optimize-iters", "10", "--optimize-samples", "8", "--no-cache", "-q",
                             "--json", str(report), flag])
    assert r.exit_code == 0, r.output
    rounding = json.loads(report.read_text())["optimization"]["rounding"]
    assert ("emitted plan" in rounding) is rerounded


@pytest.mark.parametrize("flag, learned", [("--optimize-scales", True), ("--no-optimize-scales", False)])
def test_optimize_scales_flag_reaches_the_pipeline(runner, tiny_cnn, calib_npz, tmp_path, flag, learned):
    report = tmp_path / "r.json"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(tmp_path / "q.onnx"), "--calib", calib_npz,
                             "--scheme", "w4a8", "--optimize", "adaround", "--optimize-iters", "40",
                             "--optimize-samples", "8", "--no-cache", "-q", "--json", str(report), flag])
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    assert rep["config"]["optimize_scales"] is learned


def test_data_free_run_says_so_on_the_terminal(runner, tiny_cnn, tmp_path):
    """Without --json the user still learns that nothing was measured on real data."""
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", "bn-stats:8", "-q"])
    assert r.exit_code == 0, r.output
    assert "warning: data-free calibration: 8 inputs distilled" in r.stderr
    assert "distilled samples (data-free calibration" in r.stdout
    assert "calibration samples" not in r.stdout and "held-out samples" not in r.stdout


def test_int2_fallback_warning_reaches_the_terminal(runner, tiny_cnn, calib_npz, tmp_path, monkeypatch):
    """--int2's help promises a warning when 2-bit weights fall back to int4 containers."""
    import faaq_onnx.runtime.capabilities as caps

    monkeypatch.setattr(caps, "int2_unsupported_reason", lambda: "this ONNX Runtime cannot run int2")
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--scheme", "w2a8", "-q"])
    assert r.exit_code == 0, r.output
    assert "warning: 2-bit weights stored in int4 containers: this ONNX Runtime cannot run int2" in r.stderr
    assert "warning:" not in r.stdout
