"""faaq profile: timings, sizes, memory and the per-op split on tiny models built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.cli import main
from faaq_onnx.cli.profile_report import format_profile
from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime.profile import (
    aggregate_trace,
    available_eps,
    model_bytes,
    profile_models,
)


def conv_model(quantized: bool, batch="N", c=16, hw=16, seed=0) -> onnx.ModelProto:
    """Conv 3x3 + Relu on [batch, c, hw, hw]; quantized = the QDQ form ORT fuses into QLinearConv."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.1
    b = rng.standard_normal(c).astype(np.float32) * 0.1
    shape = [batch, c, hw, hw]
    if not quantized:
        nodes = [
            helper.make_node("Conv", ["x", "w", "b"], ["h"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
        ]
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    else:
        s_w = (np.abs(w).reshape(c, -1).max(1) / 127).astype(np.float32)
        q_w = np.clip(np.rint(w / s_w[:, None, None, None]), -127, 127).astype(np.int8)
        s_x, s_y = np.float32(4 / 255), np.float32(2 / 255)
        q_b = np.rint(b / (s_x * s_w)).astype(np.int32)
        inits = [
            numpy_helper.from_array(q_w, "w_q"),
            numpy_helper.from_array(s_w, "w_s"),
            numpy_helper.from_array(np.zeros(c, np.int8), "w_z"),
            numpy_helper.from_array(q_b, "b_q"),
            numpy_helper.from_array((s_x * s_w).astype(np.float32), "b_s"),
            numpy_helper.from_array(np.zeros(c, np.int32), "b_z"),
            numpy_helper.from_array(np.array(s_x), "x_s"),
            numpy_helper.from_array(np.array(128, np.uint8), "x_z"),
            numpy_helper.from_array(np.array(s_y), "y_s"),
            numpy_helper.from_array(np.array(0, np.uint8), "y_z"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"], name="x_Q"),
            helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"], name="x_DQ"),
            helper.make_node(
                "DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], name="w_DQ", axis=0
            ),
            helper.make_node(
                "DequantizeLinear", ["b_q", "b_s", "b_z"], ["b_dq"], name="b_DQ", axis=0
            ),
            helper.make_node(
                "Conv", ["x_dq", "w_dq", "b_dq"], ["h"], name="conv", pads=[1, 1, 1, 1]
            ),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("QuantizeLinear", ["r", "y_s", "y_z"], ["y_q"], name="y_Q"),
            helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["y"], name="y_DQ"),
        ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def pair(tmp_path):
    f = tmp_path / "float.onnx"
    q = tmp_path / "w8a8.onnx"
    onnx.save(conv_model(False), str(f))
    onnx.save(conv_model(True), str(q))
    return str(f), str(q)


def test_every_model_ep_batch_is_measured(pair):
    rep = profile_models(pair, eps=["cpu"], batches=[1, 4], warmup=2, runs=7, isolate=False)
    res = rep["results"]
    assert [(r["model_name"], r["batch"]) for r in res] == [
        ("float.onnx", 1),
        ("float.onnx", 4),
        ("w8a8.onnx", 1),
        ("w8a8.onnx", 4),
    ]
    for r in res:
        assert r["status"] == "ok" and r["ep"] == "cpu"
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["throughput"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3), rel=1e-2)
        assert r["model_bytes"] == model_bytes(r["model"]) > 0
        assert r["peak_rss_mb"] >= r["rss_baseline_mb"] > 0
        assert r["peak_rss_scope"].startswith("whole process")
    assert res[0]["speedup_vs_first"] == 1.0 and res[1]["speedup_vs_first"] == 1.0
    assert res[2]["speedup_vs_first"] == pytest.approx(
        res[0]["median_ms"] / res[2]["median_ms"], rel=1e-2
    )
    # int8 weights: the file is about a quarter of the float one
    assert res[2]["model_bytes"] < 0.5 * res[0]["model_bytes"]
    assert rep["settings"]["baseline"] == "float.onnx" and rep["machine"]["cpu_count"] >= 1
    text = format_profile(rep)
    assert "w8a8.onnx" in text and "speed-up" in text and "1.00x" in text


def test_child_process_measures_its_own_memory(pair):
    rep = profile_models(pair[:1], batches=[2], warmup=1, runs=3, isolate=True)
    (r,) = rep["results"]
    assert r["status"] == "ok" and r["peak_rss_scope"].startswith("child process")
    assert r["peak_rss_mb"] >= r["rss_baseline_mb"] > 10  # an interpreter with onnxruntime loaded


def test_measurements_run_in_a_child_process_by_default(pair, monkeypatch):
    """Without isolate=..., every model x EP x batch goes to its own child process, so each peak
    RSS is that model's alone (the CLI's default; --in-process opts out)."""
    from faaq_onnx.runtime import profile

    jobs = []

    def in_process_child(job):  # stands in for the spawned process; records what it was given
        jobs.append((Path(job["path"]).name, job["batch"]))
        return profile._measure(job)

    monkeypatch.setattr(profile, "_run_isolated", in_process_child)
    rep = profile_models(pair, batches=[1, 2], warmup=0, runs=1)
    assert jobs == [("float.onnx", 1), ("float.onnx", 2), ("w8a8.onnx", 1), ("w8a8.onnx", 2)]
    assert all(r["peak_rss_scope"].startswith("child process") for r in rep["results"])
    assert rep["settings"]["isolate"] is True


def test_fixed_batch_model_runs_at_its_batch_only(tmp_path):
    p = tmp_path / "fixed.onnx"
    onnx.save(conv_model(False, batch=1), str(p))
    rep = profile_models([p], batches=[1, 8], warmup=1, runs=3, isolate=False)
    ok, skipped = rep["results"]
    assert ok["status"] == "ok" and ok["batch"] == 1
    assert skipped["status"] == "skipped" and "fixed batch dimension of 1" in skipped["reason"]
    assert "skipped fixed.onnx batch 8" in format_profile(rep)


def test_per_op_splits_integer_from_float(pair):
    rep = profile_models(pair, batches=[2], warmup=2, runs=5, per_op=True, top=3, isolate=False)
    flt, qnt = (r["per_op"] for r in rep["results"])
    assert flt["integer_share"] == 0.0 and flt["float_share"] == pytest.approx(1.0)
    ops = {o["op_type"]: o for o in qnt["by_op_type"]}
    assert ops["QLinearConv"]["integer"] is True
    assert "Conv" not in ops  # ORT fused the QDQ Conv
    assert qnt["integer_share"] == pytest.approx(
        sum(o["share"] for o in qnt["by_op_type"] if o["integer"]), abs=2e-3
    )
    assert qnt["integer_share"] > 0.3
    assert sum(o["share"] for o in qnt["by_op_type"]) == pytest.approx(1.0, abs=2e-3)
    assert len(qnt["top_nodes"]) <= 3 and qnt["timed_runs"] == 5
    assert "integer kernels" in format_profile(rep)


def test_aggregate_trace_skips_warmup_and_takes_medians():
    def run(ts):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 50}

    def node(ts, name, op, dur):
        return {
            "cat": "Node",
            "name": f"{name}_kernel_time",
            "ts": ts,
            "dur": dur,
            "args": {"op_name": op, "provider": "CPUExecutionProvider"},
        }

    events = [
        run(0),
        node(1, "c", "QLinearConv", 1000),
        node(2, "d", "DequantizeLinear", 1000),
    ]  # warm-up
    for i, (c, d, r) in enumerate([(30, 10, 5), (32, 10, 5), (300, 12, 5)]):  # one preempted run
        t = 100 * (i + 1)
        events += [
            run(t),
            node(t + 1, "c", "QLinearConv", c),
            node(t + 2, "d", "DequantizeLinear", d),
            node(t + 3, "r", "Relu", r),
        ]
    agg = aggregate_trace(events, skip_runs=1, top=2)
    assert agg["timed_runs"] == 3
    total = 32 + 10 + 5
    assert agg["kernel_ms_per_run"] == pytest.approx(total / 1e3)
    assert agg["integer_share"] == pytest.approx(32 / total, abs=1e-4)
    assert agg["qdq_share"] == pytest.approx(10 / total, abs=1e-4)
    assert agg["float_share"] == pytest.approx(5 / total, abs=1e-4)
    assert [n["node"] for n in agg["top_nodes"]] == ["c", "d"]


def test_model_bytes_counts_external_data(tmp_path):
    model = conv_model(False, c=64)
    p = tmp_path / "ext.onnx"
    onnx.save_model(
        model, str(p), save_as_external_data=True, location="ext.onnx.data", size_threshold=0
    )
    data = tmp_path / "ext.onnx.data"
    assert model_bytes(p) == p.stat().st_size + data.stat().st_size
    assert data.stat().st_size >= 64 * 64 * 9 * 4


def test_bad_requests_are_faaq_errors(pair, tmp_path):
    with pytest.raises(FaaqError, match="not found"):
        profile_models([tmp_path / "missing.onnx"])
    with pytest.raises(FaaqError, match="batch"):
        profile_models(pair, batches=[0])
    with pytest.raises(FaaqError, match="unknown execution provider"):
        profile_models(pair, eps=["tpu"])
    if "cuda" not in available_eps():
        with pytest.raises(FaaqError, match="not available"):
            profile_models(pair, eps=["cuda"])


def test_cli_table_json_and_plot(pair, tmp_path):
    out_json, out_png = tmp_path / "p.json", tmp_path / "p.png"
    res = CliRunner().invoke(
        main,
        [
            "profile",
            *pair,
            "--batch",
            "1,2",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--in-process",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "float.onnx" in res.output and "median ms" in res.output
    rep = json.loads(out_json.read_text())
    assert len(rep["results"]) == 4 and all(r["status"] == "ok" for r in rep["results"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_line(pair, tmp_path):
    res = CliRunner().invoke(main, ["profile", str(tmp_path / "nope.onnx")])
    assert res.exit_code == 2 and "model file not found" in res.output
    res = CliRunner().invoke(main, ["profile", pair[0], "--batch", "one"])
    assert res.exit_code == 2 and "--batch" in res.output
    if "cuda" not in available_eps():
        res = CliRunner().invoke(main, ["profile", pair[0], "--ep", "cuda"])
        assert res.exit_code == 2
        assert res.output.strip().count("\n") == 0 and "'cuda' is not available" in res.output


# ---- exact numbers: timing statistics from a known clock, feeds, the trace, the table ----


class _Clock:
    """perf_counter for the timed loop: each run takes the next of `durations` seconds."""

    def __init__(self, durations):
        self.durations, self.calls, self.t = list(durations), 0, 100.0

    def __call__(self):
        if self.calls % 2:
            self.t += self.durations[(self.calls // 2) % len(self.durations)]
        else:
            self.t += 1.0
        self.calls += 1
        return self.t


def test_latency_statistics_are_those_of_the_timed_runs(pair, monkeypatch):
    """Runs of 4, 1, 10, 2, 3 ms (then twice as long for the second model): median, p90 (numpy's
    linear percentile), mean, min, samples/s and the speed-up against the first model."""
    from faaq_onnx.runtime import profile

    ms = [4.0, 1.0, 10.0, 2.0, 3.0]
    clock = _Clock([m / 1e3 for m in ms] + [2 * m / 1e3 for m in ms])
    monkeypatch.setattr(profile.time, "perf_counter", clock)
    rep = profile_models(pair, batches=[4], warmup=0, runs=5, isolate=False)
    a, b = rep["results"]
    assert a["median_ms"] == pytest.approx(3.0) and b["median_ms"] == pytest.approx(6.0)
    assert a["p90_ms"] == pytest.approx(np.percentile(ms, 90)) == pytest.approx(7.6)
    assert a["mean_ms"] == pytest.approx(4.0) and a["min_ms"] == pytest.approx(1.0)
    assert (a["throughput"], b["throughput"]) == (1333.33, 666.67)  # samples/s, 2 decimals
    assert a["speedup_vs_first"] == 1.0 and b["speedup_vs_first"] == 0.5
    assert clock.calls == 2 * 2 * 5  # two clock reads per timed run, none for the warm-up


def _io_model(inputs):
    """Identity per input: {name: (elem type, shape)}."""
    nodes = [helper.make_node("Identity", [k], [f"{k}_out"]) for k in inputs]
    g = helper.make_graph(
        nodes,
        "io",
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(f"{k}_out", t, s) for k, (t, s) in inputs.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 10
    return m


def test_feeds_fill_every_input_type_with_the_batch_set(tmp_path):
    """Dynamic batch -> the batch asked for; other symbolic dims -> 1 with a note; integers and
    bools in {0, 1}; floats standard normal; an input of batch 2 runs at batch 2 only."""
    from faaq_onnx.runtime.profile import _feeds
    from faaq_onnx.runtime.session import make_session

    m = _io_model(
        {
            "f": (TensorProto.FLOAT, ["n", 3, "t"]),
            "h": (TensorProto.FLOAT16, [None, 2]),
            "i": (TensorProto.INT64, ["n"]),
            "u": (TensorProto.UINT8, ["n", 4]),
            "b": (TensorProto.BOOL, ["n", 2]),
            "s": (TensorProto.FLOAT, []),
        }
    )
    feeds, reason, notes = _feeds(make_session(m.SerializeToString()), 3, 0)
    assert reason is None
    got = {k: (v.dtype, v.shape) for k, v in feeds.items()}
    assert got == {
        "f": (np.float32, (3, 3, 1)),
        "h": (np.float16, (3, 2)),
        "i": (np.int64, (3,)),
        "u": (np.uint8, (3, 4)),
        "b": (np.bool_, (3, 2)),
        "s": (np.float32, ()),
    }
    assert notes == ["f: symbolic dim 't' set to 1"]
    assert set(np.unique(feeds["u"])) <= {0, 1} and feeds["f"].std() > 0.3
    fixed = _io_model({"x": (TensorProto.FLOAT, [2, 3])})
    feeds, reason, _ = _feeds(make_session(fixed.SerializeToString()), 2, 0)
    assert reason is None and feeds["x"].shape == (2, 3)
    feeds, reason, _ = _feeds(make_session(fixed.SerializeToString()), 1, 0)
    assert feeds is None and "'x' has a fixed batch dimension of 2" in reason
    strings = _io_model({"t": (TensorProto.STRING, ["n"])})
    with pytest.raises(FaaqError, match="'t' has type tensor\\(string\\)"):
        _feeds(make_session(strings.SerializeToString()), 1, 0)


def test_cpu_info_reads_the_model_name_and_int8_flags(monkeypatch):
    """The first processor's 'model name' and the int8-relevant flags, sorted; no /proc: defaults."""
    from pathlib import Path

    from faaq_onnx.runtime import profile

    text = (
        "processor\t: 0\nmodel name\t: Test CPU @ 2GHz\n"
        "flags\t\t: fpu avx2 sse avx512_vnni amx_int8 avx512f\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: avx512bw\n"
    )
    monkeypatch.setattr(profile.platform, "processor", lambda: "")
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text)
    assert profile.cpu_info() == {
        "model": "Test CPU @ 2GHz",
        "int8_features": ["amx_int8", "avx2", "avx512_vnni", "avx512f"],
    }
    monkeypatch.setattr(profile.platform, "processor", lambda: "Named by platform")
    assert profile.cpu_info()["model"] == "Named by platform"

    def missing(self, *a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr(Path, "read_text", missing)
    assert profile.cpu_info() == {"model": "Named by platform", "int8_features": []}


def test_aggregate_trace_counts_calls_per_run_and_unknown_ops():
    """A node called twice a run counts twice; more warm-up than runs times everything once;
    events that are not kernel times are ignored; op types sorted by time."""

    def node(ts, name, dur, op="Conv"):
        args = {"op_name": op, "provider": "CPU"} if op else {}
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": args}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 10, "dur": 1},
        {"cat": "Session", "name": "model_run", "ts": 20, "dur": 1},
        node(11, "a", 4),
        node(12, "a", 6),
        node(21, "a", 8),
        node(22, "a", 2),
        node(23, "m", 30, op=None),
        {"cat": "Node", "name": "a_fence_before", "ts": 24, "dur": 999},
        {"cat": "Kernel", "name": "x_kernel_time", "ts": 25, "dur": 999},
    ]
    agg = aggregate_trace(events, skip_runs=0, top=5)
    assert agg["timed_runs"] == 2
    # a: median 5 us over 4 calls in 2 runs -> 10 us a run; m: 30 once in 2 runs -> 15 us
    assert [(o["op_type"], o["ms_per_run"]) for o in agg["by_op_type"]] == [
        ("?", 0.015),
        ("Conv", 0.01),
    ]
    assert agg["kernel_ms_per_run"] == 0.025 and agg["float_share"] == 1.0
    assert [(n["node"], n["share"]) for n in agg["top_nodes"]] == [("m", 0.6), ("a", 0.4)]
    late = aggregate_trace(events, skip_runs=5)
    assert late["timed_runs"] == 1 and late["kernel_ms_per_run"] == 0.05


def test_aggregate_trace_rounds_to_four_decimals_and_sorts_by_time():
    """Milliseconds and shares to four decimals; op types and nodes from the slowest, `top`
    nodes; a kernel that starts with the timed run counts, other Session events are not runs,
    an event without a duration adds nothing; a trace with no kernel at all is all float."""

    def node(ts, name, op, dur=None):
        args = {"op_name": op, "provider": "CPUExecutionProvider"}
        e = {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "args": args}
        return e if dur is None else {**e, "dur": dur}

    events = [
        {"cat": "Session", "name": "session_initialization", "ts": -9, "dur": 5},
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 5},
        node(0, "c", "QLinearConv", 987.654321),
        node(2, "d", "DequantizeLinear", 134.5678),
        node(3, "r", "Relu", 45.678),
        node(4, "r2", "Relu", 0.01234),
        node(5, "r3", "Relu"),
    ]
    agg = aggregate_trace(events, top=3)
    assert (agg["timed_runs"], agg["kernel_ms_per_run"]) == (1, 1.1679)
    assert (agg["integer_share"], agg["qdq_share"], agg["float_share"]) == (0.8457, 0.1152, 0.0391)
    assert [
        (o["op_type"], o["integer"], o["ms_per_run"], o["share"]) for o in agg["by_op_type"]
    ] == [
        ("QLinearConv", True, 0.9877, 0.8457),
        ("DequantizeLinear", False, 0.1346, 0.1152),
        ("Relu", False, 0.0457, 0.0391),
    ]
    assert [(n["node"], n["ms_per_run"], n["share"]) for n in agg["top_nodes"]] == [
        ("c", 0.9877, 0.8457),
        ("d", 0.1346, 0.1152),
        ("r", 0.0457, 0.0391),
    ]
    # no run events: every kernel counts, from time 0; by default nothing is skipped
    assert aggregate_trace([node(0, "c", "QLinearConv", 5.0)])["kernel_ms_per_run"] == 0.005
    two_runs = [*events, {"cat": "Session", "name": "model_run", "ts": 10, "dur": 5}]
    two_runs.append(node(11, "c", "QLinearConv", 987.654321))
    assert aggregate_trace(two_runs)["timed_runs"] == 2
    assert len(aggregate_trace(two_runs)["top_nodes"]) == 5
    empty = aggregate_trace([], top=3)
    assert empty["timed_runs"] == 1
    assert (empty["integer_share"], empty["qdq_share"], empty["float_share"]) == (0.0, 0.0, 1.0)
    assert empty["by_op_type"] == [] and empty["top_nodes"] == []


def test_aggregate_trace_of_no_kernel_events_is_zero_time():
    """No node event: 0 ms of kernels and no shares, not the 1 us placeholder of the division."""
    from faaq_onnx.runtime.profile import aggregate_trace

    out = aggregate_trace([])
    assert out["kernel_ms_per_run"] == 0.0
    assert out["by_op_type"] == [] and out["top_nodes"] == []


def test_default_settings_and_the_child_process_get_every_job(pair, monkeypatch):
    """profile_models(paths) alone: CPU at batches 1 and 8, 5 warm-up and 30 timed runs, no
    per-op trace (top 15 when asked), seed 0, each job in a child process."""
    from faaq_onnx.runtime import profile

    jobs = []

    def child(job):
        jobs.append(job)
        return {"ep": job["ep"], "batch": job["batch"], "status": "ok", "median_ms": 1.0}

    monkeypatch.setattr(profile, "_run_isolated", child)
    rep = profile_models(pair)
    assert [(j["path"], j["batch"]) for j in jobs] == [(str(p), b) for p in pair for b in (1, 8)]
    assert all(
        (j["ep"], j["warmup"], j["runs"], j["threads"], j["per_op"], j["top"], j["seed"])
        == ("cpu", 5, 30, None, False, 15, 0)
        for j in jobs
    )
    assert rep["settings"]["isolate"] is True
    assert {r["peak_rss_scope"] for r in rep["results"]} == {"child process (this model only)"}


@pytest.mark.parametrize("warmup, runs", [(-1, 5), (0, 0)])
def test_warmup_and_runs_are_checked_each_on_its_own(pair, warmup, runs):
    with pytest.raises(FaaqError, match=r"need runs >= 1 and warmup >= 0"):
        profile_models(pair, warmup=warmup, runs=runs)


def test_latency_statistics_are_reported_to_ten_nanoseconds(pair, monkeypatch):
    from faaq_onnx.runtime import profile

    clock = _Clock([1.2345678e-3])  # every run 1.2345678 ms
    monkeypatch.setattr(profile.time, "perf_counter", clock)
    rep = profile_models(pair[:1], batches=[2], warmup=0, runs=3, isolate=False)
    (r,) = rep["results"]
    assert [r[k] for k in ("median_ms", "p90_ms", "mean_ms", "min_ms")] == [1.23457] * 4
    assert r["throughput"] == 1620.0  # 2 samples / 1.2345678 ms = 1620.00 samples/s


def test_skipped_measurements_get_no_speedup_and_threads_are_reported(pair, monkeypatch):
    """A measurement that was skipped (or whose first model was) has no speed-up; the machine
    block names the thread count asked for, or ORT's default."""
    from faaq_onnx.runtime import profile

    def child(job):
        if job["path"] == pair[1] and job["batch"] == 8:
            return {"ep": job["ep"], "batch": 8, "status": "skipped", "reason": "fixed batch"}
        if job["path"] == pair[0] and job["batch"] == 2:
            return {"ep": job["ep"], "batch": 2, "status": "skipped", "reason": "fixed batch"}
        return {"ep": job["ep"], "batch": job["batch"], "status": "ok", "median_ms": 2.0}

    monkeypatch.setattr(profile, "_run_isolated", child)
    rep = profile_models(pair, batches=[1, 2, 8])
    got = {(Path(r["model"]).name, r["batch"]): r.get("speedup_vs_first") for r in rep["results"]}
    assert got == {
        ("float.onnx", 1): 1.0,
        ("float.onnx", 2): None,
        ("float.onnx", 8): 1.0,
        ("w8a8.onnx", 1): 1.0,
        ("w8a8.onnx", 2): None,  # no first model to compare with
        ("w8a8.onnx", 8): None,
    }
    assert rep["machine"]["threads"] == "onnxruntime default"
    assert profile_models(pair[:1], batches=[1], threads=3)["machine"]["threads"] == 3


@pytest.mark.parametrize("system, maxrss", [("Linux", 3 * 1024), ("Darwin", 3 * 2**20)])
def test_peak_rss_is_in_mebibytes_on_linux_and_macos(monkeypatch, system, maxrss):
    """getrusage's ru_maxrss is KiB on Linux and bytes on macOS: 3 MiB either way."""
    from types import SimpleNamespace

    from faaq_onnx.runtime import profile

    monkeypatch.setattr(profile.platform, "system", lambda: system)
    monkeypatch.setattr(
        profile.resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=maxrss)
    )
    assert profile._rss_mb() == 3.0


def test_notes_only_when_something_was_set_for_the_run(tmp_path):
    """A model whose inputs are all fixed gets no notes; a symbolic dim set to 1 is noted."""
    fixed = tmp_path / "fixed.onnx"
    onnx.save(_io_model({"a": (TensorProto.FLOAT, [2, 3])}), str(fixed))
    free = tmp_path / "free.onnx"
    onnx.save(_io_model({"a": (TensorProto.FLOAT, ["n", "k"])}), str(free))
    rep = profile_models([fixed, free], batches=[2], warmup=0, runs=1, isolate=False)
    a, b = rep["results"]
    assert "notes" not in a
    assert b["notes"] == ["a: symbolic dim 'k' set to 1"]


def test_aggregate_trace_lists_the_15_slowest_nodes_by_default():
    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 1}] + [
        {
            "cat": "Node",
            "name": f"n{i}_kernel_time",
            "ts": 1 + i,
            "dur": 100 + i,
            "args": {"op_name": "Conv", "provider": "CPU"},
        }
        for i in range(20)
    ]
    nodes = aggregate_trace(events)["top_nodes"]
    assert [n["node"] for n in nodes] == [f"n{i}" for i in range(19, 4, -1)]


def test_memory_figures_are_reported_to_a_tenth_of_a_mebibyte(pair, monkeypatch):
    from faaq_onnx.runtime import profile

    monkeypatch.setattr(profile, "_rss_mb", lambda: 123.456)
    (r,) = profile_models(pair[:1], batches=[1], warmup=0, runs=1, isolate=False)["results"]
    assert (r["rss_baseline_mb"], r["peak_rss_mb"]) == (123.5, 123.5)


def test_integer_and_bool_feeds_hold_both_zeros_and_ones(tmp_path):
    """Random integer inputs are 0s and 1s (valid as indices, ids and masks), both present in
    a large enough input; bools are both True and False."""
    from faaq_onnx.runtime.profile import _feeds
    from faaq_onnx.runtime.session import make_session

    m = _io_model({"i": (TensorProto.INT64, ["n", 256]), "b": (TensorProto.BOOL, ["n", 256])})
    feeds, _, _ = _feeds(make_session(m.SerializeToString()), 2, 0)
    assert set(np.unique(feeds["i"]).tolist()) == {0, 1}
    assert set(np.unique(feeds["b"]).tolist()) == {False, True}


def test_speedup_is_the_first_models_median_over_this_ones_to_three_decimals(pair, monkeypatch):
    from faaq_onnx.runtime import profile

    medians = {pair[0]: 3.0, pair[1]: 7.0}
    monkeypatch.setattr(
        profile,
        "_run_isolated",
        lambda job: {
            "ep": job["ep"],
            "batch": 1,
            "status": "ok",
            "median_ms": medians[job["path"]],
        },
    )
    a, b = profile_models(pair, batches=[1])["results"]
    assert (a["speedup_vs_first"], b["speedup_vs_first"]) == (1.0, 0.429)  # 3 / 7 = 0.42857...
