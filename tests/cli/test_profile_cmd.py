"""`faaq profile`: what its options hand profile_models, where its lines go, its refusals."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from faaq_onnx.cli import main
from faaq_onnx.cli.profile_cmd import plot_latency_vs_size


@pytest.fixture
def model(tmp_path):
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    return str(p)


def _report(models):
    ok = {"status": "ok", "ep": "cpu", "batch": 1, "median_ms": 1.0, "p90_ms": 1.0,
          "throughput": 1000.0, "model_bytes": 10, "peak_rss_mb": 1.0, "rss_baseline_mb": 1.0,
          "peak_rss_scope": "child process (this model only)"}  # fmt: skip
    return {
        "machine": {
            "onnxruntime": "x",
            "cpu": {"model": "c", "int8_features": []},
            "cpu_count": 1,
            "threads": 1,
        },
        "settings": {"baseline": "m.onnx"},
        "results": [dict(ok, model_name=m) for m in models],
    }


@pytest.fixture
def calls(monkeypatch):
    """Every profile_models call's arguments; each reports one line of progress."""
    from faaq_onnx.runtime import profile

    seen = []

    def fake(models, **kw):
        seen.append(dict(kw, models=list(models)))
        kw["progress"]("m.onnx on cpu, batch 1")
        return _report(["m.onnx"])

    monkeypatch.setattr(profile, "profile_models", fake)
    return seen


def test_defaults_reach_profile_models(model, calls):
    """cpu, batches 1 and 8, 5 warm-up and 30 timed runs, top 15 nodes, each in a child process."""
    r = CliRunner().invoke(main, ["profile", model])
    assert r.exit_code == 0, r.output
    (kw,) = calls
    assert kw["models"] == [model] and kw["eps"] == ["cpu"] and kw["batches"] == [1, 8]
    assert (kw["warmup"], kw["runs"], kw["threads"], kw["top"]) == (5, 30, None, 15)
    assert (kw["per_op"], kw["isolate"]) == (False, True)


def test_options_reach_profile_models(model, calls):
    r = CliRunner().invoke(
        main,
        ["profile", model, model, "--ep", " cpu, auto ,", "--batch", "2,,4", "--runs", "1",
         "--warmup", "0", "--threads", "3", "--per-op", "--top", "1", "--in-process"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    (kw,) = calls
    assert kw["models"] == [model, model] and kw["eps"] == ["cpu", "auto"]
    assert kw["batches"] == [2, 4]
    assert (kw["warmup"], kw["runs"], kw["threads"], kw["top"]) == (0, 1, 3, 1)
    assert (kw["per_op"], kw["isolate"]) == (True, False)


def test_progress_goes_to_stderr_and_json_to_stdout(model, calls):
    """Progress lines go to standard error: with --json -, standard output is the table, then
    the JSON report."""
    r = CliRunner().invoke(main, ["profile", model, "--json", "-"])
    assert r.exit_code == 0, r.output
    assert "profiling m.onnx on cpu, batch 1 ..." in r.stderr
    assert "profiling" not in r.stdout
    start = r.stdout.index("{")
    assert json.loads(r.stdout[start:])["results"][0]["model_name"] == "m.onnx"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ep", " , "], "--ep needs at least one of cpu, cuda, auto"),
        (["--batch", "1,x"], "--batch takes comma-separated integers such as 1,8; got '1,x'"),
        (["--batch", "0"], "--batch needs positive integers, got '0'"),
        (["--batch", ","], "--batch needs positive integers, got ','"),
        (["--top", "0"], "--top must be at least 1"),
        (["--runs", "0"], "--runs must be at least 1, got 0"),
        (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (["--threads", "-1"], "--threads must be at least 1 (or 0: ONNX Runtime's choice), got -1"),
    ],
)
def test_bad_options_are_refused_before_profiling(model, calls, extra, message):
    r = CliRunner().invoke(main, ["profile", model, *extra])
    assert r.exit_code == 2 and message in r.stderr and not calls, r.output


def test_edge_values_are_accepted(model, calls):
    r = CliRunner().invoke(main, ["profile", model, "--top", "1", "--runs", "1", "--warmup", "0",
                                  "--threads", "0", "--batch", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output


def test_json_and_plot_files_are_written_and_named(model, calls, tmp_path):
    js, png = tmp_path / "p.json", tmp_path / "p.png"
    r = CliRunner().invoke(main, ["profile", model, "--json", str(js), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert f"wrote {js}" in r.stdout and f"wrote {png}" in r.stdout
    assert json.loads(js.read_text())["settings"]["baseline"] == "m.onnx"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_of_only_skipped_measurements_is_refused(tmp_path):
    from faaq_onnx.cli.profile_cmd import plot_latency_vs_size
    from faaq_onnx.errors import FaaqError

    rep = _report(["m.onnx"])
    rep["results"][0]["status"] = "skipped"
    with pytest.raises(FaaqError, match="nothing to plot"):
        plot_latency_vs_size(rep, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


# --- the arguments click refuses, and what the --plot figure shows: one series per EP x batch,
# one point per model at its size in MB and median latency, skipped ones left out


def test_models_are_required_files():
    r = CliRunner().invoke(main, ["profile"])
    assert r.exit_code == 2 and "Missing argument 'MODELS...'" in r.stderr


def test_a_folder_is_not_a_model(tmp_path):
    r = CliRunner().invoke(main, ["profile", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in r.stderr


def test_a_missing_model_is_named(tmp_path):
    r = CliRunner().invoke(main, ["profile", str(tmp_path / "nope.onnx")])
    assert r.exit_code == 2 and f"model file not found: {tmp_path / 'nope.onnx'}" in r.stderr


def _row(name, ep, batch, mb, ms, status="ok"):
    return {"model_name": name, "ep": ep, "batch": batch, "model_bytes": mb * 1e6,
            "median_ms": ms, "status": status}  # fmt: skip


@pytest.fixture
def figure(monkeypatch):
    import faaq_onnx.outputs as outputs

    seen = {}

    def savefig(fig, path, dpi=None):
        seen.update(fig=fig, path=path, dpi=dpi)
        path.write_bytes(b"png")

    monkeypatch.setattr(outputs, "savefig_atomic", savefig)
    return seen


def test_plot_has_a_series_per_ep_and_batch_and_a_point_per_model(figure, tmp_path):
    report = {
        "machine": {"onnxruntime": "1.2.3", "cpu_count": 6},
        "results": [
            _row("float.onnx", "cpu", 8, 4.0, 2.5),
            _row("float.onnx", "cpu", 1, 4.0, 0.5),
            _row("q.onnx", "cpu", 1, 1.0, 0.25),
            _row("q.onnx", "cuda", 1, 1.0, 9.0, status="skipped"),
        ],
    }
    out = plot_latency_vs_size(report, tmp_path / "new" / "sub" / "p.png")  # folders made
    assert out == tmp_path / "new" / "sub" / "p.png" and out.read_bytes() == b"png"
    assert figure["path"] == out and figure["dpi"] == 120
    (ax,) = figure["fig"].axes
    assert ax.get_title() == "onnxruntime 1.2.3, 6 CPUs"
    assert ax.get_xlabel() == "model size on disk (MB)"
    assert ax.get_ylabel() == "median latency (ms)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["cpu, batch 1", "cpu, batch 8"]  # sorted; the skipped cuda row is left out
    points = [c.get_offsets().tolist() for c in ax.collections]
    assert points == [[[4.0, 0.5], [1.0, 0.25]], [[4.0, 2.5]]]
    markers = [c.get_paths()[0].vertices.shape[0] for c in ax.collections]
    assert markers[0] != markers[1]  # each series its own marker
    notes = [(t.get_text(), tuple(float(v) for v in t.xy)) for t in ax.texts]
    assert notes == [
        ("float.onnx", (4.0, 0.5)),
        ("q.onnx", (1.0, 0.25)),
        ("float.onnx", (4.0, 2.5)),
    ]
