import json
import re
from pathlib import Path

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
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(out),
            "--calib",
            calib_npz,
            "--scheme",
            "w4a8",
            "--json",
            str(rep),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "w4a8" in r.output and "SQNR" in r.output
    report = json.loads(rep.read_text())
    assert report["avg_weight_bits"] == 4.0 and out.exists()


def test_weight_and_act_bits_options(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(out),
            "--calib",
            calib_npz,
            "--weight-bits",
            "6",
            "--act-bits",
            "6",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "w6a6" in r.output


@pytest.mark.parametrize(
    "setup,match",
    [
        ("not_onnx", "not a readable ONNX model"),
        ("nan_calib", "NaN"),
        ("bad_scheme", "cannot read scheme"),
        ("missing_calib", "not found"),
        ("scales_without_rounding", "--optimize-scales learns weight scales during reconstruction"),
        ("mixed_inputs_with_gptq", "--optimize-inputs mixed mixes inputs during reconstruction"),
    ],
)
def test_bad_input_one_line_no_output(runner, tiny_cnn, calib_npz, tmp_path, setup, match):
    model, calib, extra = tiny_cnn, calib_npz, []
    if setup == "not_onnx":
        model = str(tmp_path / "fake.onnx")
        Path(model).write_text("hello, I am a text file")
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
    assert (
        runner.invoke(
            main,
            ["quantize", tiny_cnn, "-o", str(q), "--calib", str(data), "--scheme", "w4a4", "-q"],
        ).exit_code
        == 0
    )
    rep = tmp_path / "eval.json"
    r = runner.invoke(
        main, ["eval", tiny_cnn, str(q), "--data", str(data), "--per-class", "--json", str(rep)]
    )
    assert r.exit_code == 0, r.output
    res = json.loads(rep.read_text())["models"]
    assert res[tiny_cnn]["top1"] == 0.75
    for c, v in res[tiny_cnn]["per_class"].items():  # per class, counted independently
        sel = y == int(c)
        assert v["samples"] == sel.sum() and v["top1"] == pytest.approx(
            np.mean(pred[sel] == y[sel])
        )
    q_pred = run_model(str(q), {"input": x})[0].argmax(1)
    vs = res[str(q)]["vs_reference"]
    assert vs["top1_drop"] == pytest.approx(0.75 - np.mean(q_pred == y))
    drops = {
        int(c): np.mean(pred[y == c] == c) - np.mean(q_pred[y == c] == c) for c in np.unique(y)
    }
    worst = max(drops, key=drops.get)
    assert vs["worst_class_drop"]["drop"] == pytest.approx(
        drops[worst]
    )  # a drop is positive when worse
    q_logits, f_logits = run_model(str(q), {"input": x})[0], run_model(tiny_cnn, {"input": x})[0]
    assert vs["agreement"] == pytest.approx(np.mean(q_pred == pred))
    assert vs["fixed"] == np.sum((q_pred == y) & (pred != y)) and vs["broken"] == np.sum(
        (q_pred != y) & (pred == y)
    )
    assert vs["logit_sqnr_db"] == pytest.approx(
        10
        * np.log10(
            np.sum(f_logits.astype(np.float64) ** 2)
            / np.sum((q_logits - f_logits).astype(np.float64) ** 2)
        ),
        rel=1e-4,
    )
    assert "same class on" in r.output and "fixed /" in r.output


def test_export_list(runner):
    r = runner.invoke(main, ["export", "--list"])
    assert r.exit_code == 0 and "resnet20-cifar10" in r.output


def test_quantize_with_budget_saves_plan_and_overrides(runner, tiny_cnn, calib_npz, tmp_path):
    out, plan, ovr = tmp_path / "q.onnx", tmp_path / "plan.json", tmp_path / "ovr.json"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(out),
            "--calib",
            calib_npz,
            "--budget",
            "avg-bits=5",
            "--candidates",
            "w4a8,w8a8",
            "--save-plan",
            str(plan),
            "--save-overrides",
            str(ovr),
            "--no-cache",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "mixed (knapsack, avg-bits=5" in r.output
    choices = json.loads(plan.read_text())["choices"]
    assert set(choices.values()) <= {"w4a8", "w8a8"}
    overrides = json.loads(ovr.read_text())
    assert {o[0]["quant_type"] for k, o in overrides.items() if k != "_faaq_effective_bits"} >= {
        "QUInt4",  # 4-bit weights: asymmetric by default
        "QUInt8",
    }
    # the saved plan applies again
    out2 = tmp_path / "q2.onnx"
    r = runner.invoke(
        main,
        ["quantize", tiny_cnn, "-o", str(out2), "--calib", calib_npz, "--plan", str(plan), "-q"],
    )
    assert r.exit_code == 0, r.output


def test_impossible_budget_is_one_line(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(out),
            "--calib",
            calib_npz,
            "--budget",
            "avg-bits=1",
            "--candidates",
            "w4a8,w8a8",
            "--no-cache",
            "-q",
        ],
    )
    assert r.exit_code == 2 and not out.exists()
    assert "infeasible" in r.stderr and "avg-bits=4" in r.stderr


def test_analyze_writes_report(runner, tiny_cnn, calib_npz, tmp_path):
    rep = tmp_path / "rep"
    r = runner.invoke(
        main,
        [
            "analyze",
            tiny_cnn,
            "--calib",
            calib_npz,
            "--report",
            str(rep),
            "--points",
            "3",
            "--no-cache",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    for f in (
        "sensitivity.json",
        "sensitivity.md",
        "sensitivity.png",
        "tradeoff.json",
        "tradeoff.png",
    ):
        assert (rep / f).stat().st_size > 0, f
    curve = json.loads((rep / "tradeoff.json").read_text())
    assert len(curve["knapsack"]) == 3 and {p["label"] for p in curve["uniform"]} == {
        "w4a8",
        "w8a8",
        "w8a16",
    }
    assert (rep / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_json_dash_writes_report_to_stdout(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(
        main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--json", "-", "-q"]
    )
    assert r.exit_code == 0, r.output
    start = r.stdout.index("{")
    report = json.loads(r.stdout[start : r.stdout.rindex("}") + 1])
    assert report["output"] == str(out) and not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    "value,ok", [("0", False), ("-3", False), ("ten", False), ("all", True), ("16", True)]
)
def test_calib_size_zero_is_an_error_not_all(runner, tiny_cnn, calib_npz, tmp_path, value, ok):
    out = tmp_path / "q.onnx"
    r = runner.invoke(
        main,
        ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--calib-size", value, "-q"],
    )
    if ok:
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 2 and "--calib-size" in r.output and not out.exists()


def test_written_files_are_readable_by_others_under_umask_022(
    runner, tiny_cnn, calib_npz, tmp_path
):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out, plan = tmp_path / "q.onnx", tmp_path / "plan.json"
        r = runner.invoke(
            main,
            [
                "quantize",
                tiny_cnn,
                "-o",
                str(out),
                "--calib",
                calib_npz,
                "--save-plan",
                str(plan),
                "-q",
            ],
        )
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert (
        stat.S_IMODE(os.stat(out).st_mode) == 0o644 and stat.S_IMODE(os.stat(plan).st_mode) == 0o644
    )


def test_unreachable_budget_exits_2_with_one_line(runner, tiny_cnn, calib_npz, tmp_path):
    out = tmp_path / "q.onnx"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(out),
            "--calib",
            calib_npz,
            "--budget",
            "sqnr-db=95",
            "--candidates",
            "w4a8,w8a8",
            "--no-cache",
            "-q",
        ],
    )
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
    r = runner.invoke(
        main,
        [
            "analyze",
            tiny_cnn,
            "--calib",
            calib_npz,
            "--report",
            str(rep),
            "--points",
            "2",
            "--metrics",
            "sqnr",
            "--latency",
            "--no-cache",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    lat = json.loads((rep / "latency.json").read_text())
    assert set(lat["classes"].values()) == {
        "int8w/a8",
        "int8w/a16",
    }  # w4a8 and w8a8 share the int8 kernels
    assert all(set(v) == {"int8w/a8", "int8w/a16"} for v in lat["group_us"].values())
    curve = json.loads((rep / "tradeoff.json").read_text())
    assert all("latency_ms" in p for p in curve["uniform"] + curve["knapsack"])
    assert "latency" in r.output


def test_analyze_times_the_emitted_models(runner, tiny_cnn, calib_npz, tmp_path):
    """--measure-latency: every uniform and knapsack point's model timed against the float file,
    a fourth panel in the picture."""
    from PIL import Image

    rep = tmp_path / "rep"
    args = ["analyze", tiny_cnn, "--calib", calib_npz, "--report", str(rep), "--points", "2"]
    r = runner.invoke(main, [*args, "--metrics", "sqnr", "--measure-latency", "--no-cache", "-q"])
    assert r.exit_code == 0, r.output
    curve = json.loads((rep / "tradeoff.json").read_text())
    timed = curve["uniform"] + curve["knapsack"]
    assert all(p["measured_latency_ratio"] > 0 for p in timed)
    assert curve["float_latency_ms"] > 0 and "interleaved" in curve["latency_how"]
    assert "x float" in r.output
    width = Image.open(rep / "tradeoff.png").size[0]
    assert width == round(5.5 * 3 * 110)  # size, BOPs and measured latency panels


@pytest.mark.parametrize(
    "flag, optimize, rerounded",
    [
        ("--reround", "adaround", True),
        ("--no-reround", "adaround", False),
        (None, "adaround", True),
        (None, "gptq", True),
        ("--no-reround", "gptq", False),
    ],
)
def test_reround_flag_reaches_the_pipeline(
    runner, tiny_cnn, calib_npz, tmp_path, flag, optimize, rerounded
):
    report = tmp_path / "r.json"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(tmp_path / "q.onnx"),
            "--calib",
            calib_npz,
            "--budget",
            "avg-bits=6",
            "--candidates",
            "w3a8,w4a8,w8a8",
            "--optimize",
            optimize,
            "--optimize-iters",
            "10",
            "--optimize-samples",
            "8",
            "--no-cache",
            "-q",
            "--json",
            str(report),
            *([flag] if flag else []),
        ],
    )
    assert r.exit_code == 0, r.output
    rounding = json.loads(report.read_text())["optimization"]["rounding"]
    assert ("emitted plan" in rounding) is rerounded


@pytest.mark.parametrize(
    "flag, learned", [("--optimize-scales", True), ("--no-optimize-scales", False)]
)
def test_optimize_scales_flag_reaches_the_pipeline(
    runner, tiny_cnn, cnn_calib, calib_npz, tmp_path, flag, learned
):
    """The written model's weight scales: learned (not the range setter's round-to-nearest
    scales) with --optimize-scales, exactly those without."""
    import onnx
    from onnx import numpy_helper

    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import Compilation
    from faaq_onnx.quant.weights import weight_grid

    report, out = tmp_path / "r.json", tmp_path / "q.onnx"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(out),
            "--calib",
            calib_npz,
            "--scheme",
            "w4a8",
            "--optimize",
            "adaround",
            "--optimize-iters",
            "40",
            "--optimize-samples",
            "8",
            "--no-cache",
            "-q",
            "--json",
            str(report),
            flag,
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    assert rep["config"]["optimize_scales"] is learned
    # round-to-nearest scales of the same float weights (BN folded as the pipeline folds them)
    comp = Compilation(
        tiny_cnn, cnn_calib, QuantConfig(progress=False, scheme="w4a8"), target_opset=21
    )
    weight_of = {
        n.name: n.input[1]
        for n in comp.float_proto.graph.node
        if n.input[1:2] and n.input[1] in comp.qgraph.weights
    }
    nearest = {
        name: weight_grid(
            comp.weights.float_weight(w),
            4,
            "per-channel",
            comp.qgraph.weights[w].channel_axis,
            None,
            symmetric=comp.config.symmetric_weights(4),
        ).scale.reshape(-1)
        for name, w in weight_of.items()
    }
    model = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    shipped = {}
    for node in model.graph.node:
        if node.name in nearest:
            dq = producer[node.input[1]]
            assert dq.op_type == "DequantizeLinear", node.name
            shipped[node.name] = inits[dq.input[1]].reshape(-1)
    assert set(shipped) == set(nearest) == {"conv1", "conv2", "fc"}
    same = {n: np.array_equal(shipped[n], nearest[n]) for n in nearest}
    if learned:
        assert not all(same.values()), "the shipped weight scales are the round-to-nearest ones"
    else:
        assert all(same.values()), same


def test_data_free_run_says_so_on_the_terminal(runner, tiny_cnn, tmp_path):
    """Without --json the user still learns that nothing was measured on real data."""
    out = tmp_path / "q.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(out), "--calib", "bn-stats:8", "-q"])
    assert r.exit_code == 0, r.output
    assert "warning: data-free calibration: 8 inputs distilled" in r.stderr
    assert "distilled samples (data-free calibration" in r.stdout
    assert "calibration samples" not in r.stdout and "held-out samples" not in r.stdout


def test_int2_fallback_warning_reaches_the_terminal(
    runner, tiny_cnn, calib_npz, tmp_path, monkeypatch
):
    """--int2's help promises a warning when 2-bit weights fall back to int4 containers."""
    import faaq_onnx.runtime.capabilities as caps

    monkeypatch.setattr(
        caps, "int2_unsupported_reason", lambda: "this ONNX Runtime cannot run int2"
    )
    out = tmp_path / "q.onnx"
    r = runner.invoke(
        main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "--scheme", "w2a8", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert (
        "warning: 2-bit weights stored in int4 containers: this ONNX Runtime cannot run int2"
        in r.stderr
    )
    assert "warning:" not in r.stdout


def _no_work(monkeypatch):
    """Make any compilation fail loudly: a check that must come before the work then shows it does."""
    import faaq_onnx.pipeline as pipeline

    def started(*args, **kwargs):
        raise AssertionError("the compilation started before the options and outputs were checked")

    monkeypatch.setattr(pipeline, "Compilation", started)


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _error_lines(r):
    """What stderr says besides the run's warnings (those come first when the work was done)."""
    assert "Traceback" not in r.output
    return [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning: ")]


@pytest.mark.parametrize("cmd", ["quantize", "analyze"])
def test_cache_dir_is_written_and_read_back(runner, tiny_cnn, calib_npz, tmp_path, cmd):
    """--cache-dir DIR: the sweep's table (and analyze --latency's kernel costs) land in DIR,
    and a second run with the same settings reads them instead of measuring again."""
    cache = tmp_path / "cache"

    def run(i):
        if cmd == "quantize":
            rep = tmp_path / f"r{i}.json"
            args = [
                "quantize",
                tiny_cnn,
                "-o",
                str(tmp_path / f"q{i}.onnx"),
                "--budget",
                "avg-bits=6",
                "--candidates",
                "w4a8,w8a8",
                "--json",
                str(rep),
            ]
        else:
            rep = tmp_path / f"rep{i}"
            args = [
                "analyze",
                tiny_cnn,
                "--report",
                str(rep),
                "--points",
                "2",
                "--metrics",
                "sqnr",
                "--latency",
            ]
        r = runner.invoke(main, [*args, "--calib", calib_npz, "--cache-dir", str(cache), "-q"])
        assert r.exit_code == 0, r.output
        if cmd == "quantize":
            return json.loads(rep.read_text())["sensitivity"], None
        return (
            json.loads((rep / "sensitivity.json").read_text())["meta"],
            json.loads((rep / "latency.json").read_text())["meta"],
        )

    sens, lat = run(1)
    names = [p.name for p in cache.iterdir()]
    assert sum(n.startswith("sensitivity-") and n.endswith(".json") for n in names) == 1, names
    assert "cached" not in sens
    if cmd == "analyze":
        assert sum(n.startswith("latency-") for n in names) == 1 and "cached" not in lat
    sens, lat = run(2)
    assert sens["cached"].startswith(str(cache))
    if cmd == "analyze":
        assert lat["cached"].startswith(str(cache))


@pytest.mark.parametrize(
    "cmd,option",
    [
        ("quantize", "-o"),
        ("quantize", "--json"),
        ("quantize", "--save-plan"),
        ("quantize", "--save-overrides"),
        ("quantize", "--cache-dir"),
        ("analyze", "--report"),
        ("analyze", "--cache-dir"),
    ],
)
def test_unwritable_destination_is_one_line_before_any_work(
    runner, tiny_cnn, calib_npz, tmp_path, monkeypatch, cmd, option
):
    """A destination under a regular file (root can write to read-only folders, so that is the
    case a test can make) is refused up front: nothing computed, nothing written, no folder made."""
    _no_work(monkeypatch)
    blocker = tmp_path / "file.txt"
    blocker.write_text("in the way")
    bad = str(blocker / "out")
    outs = tmp_path / "outs"  # missing: made only when something is written there
    if cmd == "quantize":
        dests = {
            "-o": outs / "q.onnx",
            "--json": outs / "r.json",
            "--save-plan": outs / "p.json",
            "--save-overrides": outs / "o.json",
            "--cache-dir": outs / "cache",
        }
        args = ["quantize", tiny_cnn, "--budget", "avg-bits=6", "--candidates", "w4a8,w8a8"]
    else:
        dests = {"--report": outs / "rep", "--cache-dir": outs / "cache"}
        args = ["analyze", tiny_cnn]
    dests[option] = bad
    for opt, path in dests.items():
        args += [opt, str(path)]
    before = _tree(tmp_path)
    r = runner.invoke(main, [*args, "--calib", calib_npz, "-q"])
    assert r.exit_code == 2, r.output
    lines = _error_lines(r)
    assert (
        len(lines) == 1 and option in lines[0] and bad in lines[0] and "not a folder" in lines[0]
    ), r.stderr
    assert _tree(tmp_path) == before and blocker.read_text() == "in the way"


def test_output_that_is_an_input_is_refused(runner, tiny_cnn, calib_npz, tmp_path, monkeypatch):
    """--json (like -o) never overwrites the model or the calibration data it reads."""
    _no_work(monkeypatch)
    model_bytes = Path(tiny_cnn).read_bytes()
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(tmp_path / "q.onnx"),
            "--calib",
            calib_npz,
            "--json",
            tiny_cnn,
            "-q",
        ],
    )
    assert r.exit_code == 2 and "--json" in r.stderr and "input" in r.stderr, r.output
    assert Path(tiny_cnn).read_bytes() == model_bytes
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(tmp_path / "q.onnx"),
            "--calib",
            calib_npz,
            "--save-plan",
            str(tmp_path / "q.onnx"),
            "-q",
        ],
    )
    assert r.exit_code == 2 and "--save-plan" in r.stderr and "-o" in r.stderr, r.output
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_outputs_commit_together(runner, tiny_cnn, calib_npz, tmp_path, monkeypatch):
    """When one destination breaks after the checks (the plan's folder replaced by a file while
    the model was quantized), no output is written, the model included, and nothing half-made stays."""
    import faaq_onnx.pipeline as pipeline

    real = pipeline.quantize
    plans = tmp_path / "plans"
    plans.mkdir()

    def quantize_then_break(*args, **kwargs):
        result = real(*args, **kwargs)
        plans.rmdir()
        plans.write_text("in the way")
        return result

    monkeypatch.setattr(pipeline, "quantize", quantize_then_break)
    out, rep = tmp_path / "new" / "q.onnx", tmp_path / "r.json"
    before = _tree(tmp_path)
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(out),
            "--calib",
            calib_npz,
            "--json",
            str(rep),
            "--save-plan",
            str(plans / "p.json"),
            "-q",
        ],
    )
    assert r.exit_code == 2, r.output
    lines = _error_lines(r)
    assert len(lines) == 1 and "--save-plan" in lines[0] and str(plans / "p.json") in lines[0], (
        r.stderr
    )
    assert not out.exists() and not rep.exists()
    assert _tree(tmp_path) == before  # no temporary file, no folder made for -o


def test_analyze_report_is_whole_or_absent(runner, tiny_cnn, calib_npz, tmp_path, monkeypatch):
    """A report file that cannot be written (disk full while plotting) leaves no report file at all."""
    import errno

    import faaq_onnx.analysis.tradeoff as tradeoff

    def disk_full(curve, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tradeoff, "plot_tradeoff", disk_full)
    rep = tmp_path / "rep"
    r = runner.invoke(
        main,
        [
            "analyze",
            tiny_cnn,
            "--calib",
            calib_npz,
            "--report",
            str(rep),
            "--points",
            "2",
            "--metrics",
            "sqnr",
            "--no-cache",
            "-q",
        ],
    )
    assert r.exit_code == 2, r.output
    lines = _error_lines(r)
    assert (
        len(lines) == 1 and "No space left on device" in lines[0] and "tradeoff.png" in lines[0]
    ), r.stderr
    assert not rep.exists()


def _image_folder(tmp_path, n=12, size=16):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{i:02d}.png"
        )
    return str(folder)


@pytest.mark.parametrize("cmd", ["quantize", "analyze"])
def test_preset_reaches_image_folder_calibration(runner, tiny_cnn, tmp_path, cmd):
    """README: a folder of images is calibration data with --preset. The tiny model takes
    3x16x16: guessed (ImageNet, 224x224) or named imagenet the images do not fit; 'none'
    (decoded, HWC -> CHW, nothing else) fits, so the preset is what the loader applied."""
    folder = _image_folder(tmp_path)
    if cmd == "quantize":
        rep = tmp_path / "r.json"
        args = ["quantize", tiny_cnn, "-o", str(tmp_path / "q.onnx"), "--json", str(rep)]
    else:
        rep = tmp_path / "rep"
        args = [
            "analyze",
            tiny_cnn,
            "--report",
            str(rep),
            "--points",
            "2",
            "--metrics",
            "sqnr",
            "--no-cache",
        ]
    r = runner.invoke(main, [*args, "--calib", folder, "--preset", "imagenet", "-q"])
    assert r.exit_code == 2 and "224" in r.stderr, r.output
    r = runner.invoke(main, [*args, "--calib", folder, "--preset", "none", "-q"])
    assert r.exit_code == 0, r.output
    if cmd == "quantize":
        report = json.loads(rep.read_text())
        assert report["config"]["preset"] == "none" and report["calibration"]["samples"] > 0
    else:
        assert (rep / "sensitivity.json").exists()
    r = runner.invoke(main, [*args, "--calib", folder, "--preset", "cifar100", "-q"])
    assert r.exit_code == 2 and "--preset" in r.stderr and "cifar10, imagenet" in r.stderr, r.output


@pytest.mark.parametrize(
    "extra,match",
    [
        (
            ["--granularity", "block", "--block-size", "0"],
            "--block-size must be an even number >= 2, got 0",
        ),
        (["--block-size", "-4"], "--block-size must be an even number >= 2, got -4"),
        (
            ["--sensitivity-samples", "0", "--budget", "avg-bits=6"],
            "--sensitivity-samples must be at least 1, got 0",
        ),
        (
            ["--sensitivity-samples", "-1", "--budget", "avg-bits=6"],
            "--sensitivity-samples must be at least 1, got -1",
        ),
        (["--budget", "avg-bits=0"], "--budget avg-bits must be > 0"),
        (["--budget", "size-mb=-1"], "--budget size-mb must be > 0"),
        (["--budget", "bops=0"], "--budget bops must be > 0"),
        (["--budget", "latency-ms=0"], "--budget latency-ms must be > 0"),
        (["--budget", "max-drop=-1"], "--budget max-drop must be >= 0"),
        (["--budget", "avg-bits=1e999"], "--budget avg-bits must be a finite number"),
        (["--workers", "0", "--budget", "avg-bits=6"], "--workers must be at least 1, got 0"),
        (
            ["--latency-batch", "0", "--budget", "latency=1.1"],
            "--latency-batch must be at least 1, got 0",
        ),
        (["--weight-bits", "0", "--act-bits", "8"], "--weight-bits 0 unsupported"),
        (["--weight-bits", "4", "--act-bits", "-8"], "--act-bits -8 unsupported"),
        (["--optimize-iters", "0"], "--optimize-iters must be at least 1, got 0"),
        (["--optimize-samples", "-2"], "--optimize-samples must be at least 1, got -2"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    ],
)
def test_out_of_range_option_is_one_line_before_any_work(
    runner, tiny_cnn, calib_npz, tmp_path, monkeypatch, extra, match
):
    _no_work(monkeypatch)
    out = tmp_path / "q.onnx"
    r = runner.invoke(
        main, ["quantize", tiny_cnn, "-o", str(out), "--calib", calib_npz, "-q", *extra]
    )
    assert r.exit_code == 2, r.output
    lines = _error_lines(r)
    assert len(lines) == 1 and match in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args,match",
    [
        (
            ["analyze", "{model}", "--calib", "{calib}", "--report", "{tmp}/rep", "--points", "0"],
            "--points must be at least 1, got 0",
        ),
        (
            [
                "analyze",
                "{model}",
                "--calib",
                "{calib}",
                "--report",
                "{tmp}/rep",
                "--latency",
                "--latency-batch",
                "0",
            ],
            "--latency-batch must be at least 1, got 0",
        ),
        (
            ["eval", "{model}", "--data", "{labeled}", "--batch-size", "0"],
            "--batch-size must be at least 1, got 0",
        ),
        (
            ["profile", "{model}", "--threads", "-1"],
            "--threads must be at least 1 (or 0: ONNX Runtime's choice)",
        ),
    ],
)
def test_out_of_range_option_other_commands(
    runner, tiny_cnn, calib_npz, tmp_path, monkeypatch, args, match
):
    _no_work(monkeypatch)
    labeled = tmp_path / "labeled.npz"
    rng = np.random.default_rng(0)
    np.savez(
        labeled, x=rng.standard_normal((8, 3, 16, 16)).astype(np.float32), y=rng.integers(0, 4, 8)
    )
    args = [a.format(model=tiny_cnn, calib=calib_npz, tmp=tmp_path, labeled=labeled) for a in args]
    r = runner.invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = _error_lines(r)
    assert len(lines) == 1 and match in lines[0], r.stderr
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("mode, bits", [("on", 7), ("off", 8)])
def test_reduce_range_flag_sets_the_weight_range(runner, tiny_cnn, calib_npz, tmp_path, mode, bits):
    """--reduce-range reaches the emitted weights: their stated range, not only the config."""
    report = tmp_path / "r.json"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(tmp_path / "q.onnx"),
            "--calib",
            calib_npz,
            "--scheme",
            "w8a8",
            "--no-cache",
            "-q",
            "--json",
            str(report),
            "--reduce-range",
            mode,
        ],
    )
    assert r.exit_code == 0, r.output
    per_weight = json.loads(report.read_text())["verify"]["size"]["per_weight"]
    assert {w["bits"] for w in per_weight.values()} == {bits}


@pytest.mark.parametrize(
    "extra, rounding, inputs, corrected",
    [
        ([], "gptq", "quantized", True),
        (["--effort", "fast"], "gptq", "float", False),
        (["--optimize", "none"], "nearest", None, False),
        (
            ["--optimize", "auto,adaround", "--optimize-iters", "20", "--optimize-samples", "8"],
            "adaround",
            "quantized",
            False,
        ),
    ],
)
def test_plain_low_bit_command_rounds_with_gptq(
    runner, tiny_cnn, calib_npz, tmp_path, extra, rounding, inputs, corrected
):
    """`--scheme w4a8` with nothing else takes the cheap accurate path (GPTQ on the quantized
    model's layer inputs, then bias correction), says so and what it cost; --effort fast is GPTQ
    from the float model's inputs alone; --optimize none still rounds to nearest; an explicit
    rounding optimizer wins over auto and --effort."""
    report = tmp_path / "r.json"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(tmp_path / "q.onnx"),
            "--calib",
            calib_npz,
            "--scheme",
            "w4a8",
            "--no-cache",
            "--json",
            str(report),
            *extra,
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    per_weight = rep["verify"]["size"]["per_weight"]
    got = {w["rounding"] for w in per_weight.values()}
    # AdaRound keeps a layer's nearest codes where its 20 iterations' codes measure worse
    assert got == {rounding} or (rounding == "adaround" and got == {"adaround", "nearest"})
    assert ("rounding: gptq on 3 weights below 8 bits" in r.output) is (rounding == "gptq")
    assert ("--optimize auto" in r.output) is (rounding == "gptq")
    passes = [p for p in rep["optimization"]["rounding"].values() if p.get("units")]
    assert [p["inputs"] for p in passes] == ([inputs] if inputs else [])
    assert bool(rep["optimization"]["bias_corrected"]) is corrected
    assert ("bias correction on" in r.output) is corrected
    # corrected inside GPTQ's pass: its time is part of the rounding seconds, not added to them
    assert (", of which bias correction on" in r.output) is corrected


@pytest.mark.parametrize("reduce_range", ["off", "on"])
def test_auto_rounds_nothing_at_8_bits(runner, tiny_cnn, calib_npz, tmp_path, reduce_range):
    """At 8 bits auto rounds to nearest, and leaves the biases of a network without depthwise
    convolutions alone whatever the weights' range (stages/weights.py corrects those)."""
    report = tmp_path / "r.json"
    r = runner.invoke(
        main,
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(tmp_path / "q.onnx"),
            "--calib",
            calib_npz,
            "--scheme",
            "w8a8",
            "--reduce-range",
            reduce_range,
            "--no-cache",
            "-q",
            "--json",
            str(report),
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    assert {w["rounding"] for w in rep["verify"]["size"]["per_weight"].values()} == {"nearest"}
    assert not any(p.get("units") for p in rep["optimization"]["rounding"].values())
    assert rep["optimization"]["bias_corrected"] == []


@pytest.mark.parametrize(
    "cmd, flags, required",
    [
        ("quantize", ["--no-simplify", "--quiet", "--no-cache"], ["--output", "--calib"]),
        ("analyze", ["--no-cache"], ["--report", "--calib"]),
        ("eval", ["--per-class"], ["--data"]),
        ("export", ["--keep-batchnorm", "--list"], []),
        ("inspect", ["--kernels", "--no-simplify"], []),
        ("profile", ["--per-op", "--in-process"], []),
        ("reliability", [], ["--data", "--report", "--calib"]),
    ],
)
def test_flags_take_no_value_and_required_options_say_so(option_help, cmd, flags, required):
    """A flag is given alone (no TEXT/INTEGER after it); a required option is marked in --help."""
    h = option_help(cmd)
    for flag in flags:
        assert not re.match(r"\s*[A-Z]+\b", h[flag]), (flag, h[flag])
    for option in required:
        assert "[required]" in h[option], (option, h[option])
    optional = [o for o in h if o not in required and o != "--help"]
    assert all("[required]" not in h[o] for o in optional)


def _defaults(fn):
    import inspect

    return {k: p.default for k, p in inspect.signature(fn).parameters.items()}


def test_help_states_the_library_defaults(option_help):
    """Each command's shown defaults are those of the function or settings it drives."""
    from faaq_onnx.evaluate import evaluate
    from faaq_onnx.reliability import CalibrationDraw
    from faaq_onnx.runtime.profile import profile_models
    from faaq_onnx.zoo.exporter import export

    def shown(cmd):
        return {
            k: re.search(r"\[default: ([^\]]*)\]\s*$", v).group(1)
            for k, v in option_help(cmd).items()
            if re.search(r"\[default: ([^\]]*)\]\s*$", v)
        }

    p = _defaults(profile_models)
    assert {k: shown("profile")[k] for k in ("--batch", "--runs", "--warmup", "--top", "--ep")} == {
        "--batch": ",".join(map(str, p["batches"])),
        "--runs": str(p["runs"]),
        "--warmup": str(p["warmup"]),
        "--top": str(p["top"]),
        "--ep": p["eps"][0],
    }
    draw = CalibrationDraw()
    r = shown("reliability")
    assert (r["--noise-share"], r["--dominant-share"]) == (
        str(draw.noise_share),
        str(draw.dominant_share),
    )
    assert r["--trials"] == "10"  # docs/eval-reliability.md: 10 draws
    e = _defaults(evaluate)
    assert (shown("eval")["--batch-size"], shown("eval")["--ep"]) == (
        str(e["batch_size"]),
        e["ep"],
    )
    x = _defaults(export)
    assert (shown("export")["--opset"], shown("export")["--seed"]) == (
        str(x["opset"]),
        str(x["seed"]),
    )


def test_analyze_with_labels_plots_top1_of_every_point(runner, tiny_cnn, calib_npz, tmp_path):
    """--labels-data: each trade-off point carries its top-1, the float model's beside them; the
    uniform W8A8 point's top-1 is what the W8A8 model `faaq quantize` writes scores under ORT."""
    from tests.conftest import run_model

    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 3, 16, 16)).astype(np.float32)
    y = run_model(tiny_cnn, {"input": x})[0].argmax(1)
    y[::3] = rng.integers(0, 10, len(y[::3]))  # some labels the float model gets wrong
    labels = tmp_path / "labeled.npz"
    np.savez(labels, x=x, y=y)
    want_float = float(np.mean(run_model(tiny_cnn, {"input": x})[0].argmax(1) == y))
    rep = tmp_path / "rep"
    args = ["--calib", calib_npz, "--no-cache", "-q"]
    r = runner.invoke(
        main,
        [
            "analyze",
            tiny_cnn,
            "--report",
            str(rep),
            "--points",
            "3",
            "--labels-data",
            str(labels),
            *args[:-1],
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"float top-1 {100 * want_float:.2f} % on 64 labeled samples" in r.output
    curve = json.loads((rep / "tradeoff.json").read_text())
    assert curve["float_top1"] == pytest.approx(want_float) and want_float < 1.0
    assert all(0.0 <= p["top1"] <= 1.0 for m in ("uniform", "knapsack") for p in curve[m])
    q = tmp_path / "w8a8.onnx"
    r = runner.invoke(main, ["quantize", tiny_cnn, "-o", str(q), "--scheme", "w8a8", *args])
    assert r.exit_code == 0, r.output
    emitted = float(np.mean(run_model(str(q), {"input": x})[0].argmax(1) == y))
    w8a8 = next(p for p in curve["uniform"] if p["label"] == "w8a8")
    assert w8a8["top1"] == pytest.approx(emitted, abs=1.5 / len(y))
    assert (rep / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
