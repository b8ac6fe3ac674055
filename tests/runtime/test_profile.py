"""faaq profile: timings, sizes, memory and the per-op split on tiny models built here."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.cli import main
from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime.profile import (
    aggregate_trace,
    available_eps,
    format_profile,
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
