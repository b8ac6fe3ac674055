"""report.budget_line's and compute_line's exact text, the plan's bit operations and measured latency
in the report, and results.py: a big model's emitted weights spilled to a
data file, and the written result's path and size in its report."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import quantize
from faaq_onnx.report import activation_kernel, budget_line, compute_line
from faaq_onnx.results import QuantizeResult, spill_to_disk, write_result
from tests.conftest import one_weight_model


def rep(kind="sqnr-db", met=True, measured=31.4159, asked=30.0, tolerance=0.0, held=True):
    return {
        "budget": {
            "budget": f"{kind}={asked:g}",
            "kind": kind,
            "asked": asked,
            "measured": measured,
            "unit": "dB" if kind == "sqnr-db" else "x W8A8",
            "how": "measured somehow",
            "met": met,
            "tolerance": tolerance,
        },
        "calibration": {"verification_held_out": held},
    }


def test_budget_line():
    assert budget_line({}) is None and budget_line({"budget": None}) is None
    assert budget_line(rep()) == (
        "budget sqnr-db=30: measured 31.42 dB on the emitted model "
        "(measured somehow, held-out samples) -> met"
    )
    assert budget_line(rep(met=False, measured=29.0, held=False)) == (
        "budget sqnr-db=30: measured 29 dB on the emitted model "
        "(measured somehow, calibration samples) -> MISSED"
    )
    lat = rep("latency", measured=0.82, asked=0.8, tolerance=0.05)
    assert budget_line(lat) == (
        "budget latency=0.8: measured 0.82 x W8A8 on the emitted model (measured somehow) "
        "-> met within the 5 % timing tolerance"
    )
    under = rep("latency", measured=0.78, asked=0.8, tolerance=0.05)
    assert budget_line(under).endswith("-> met")
    assert budget_line(rep("latency", measured=0.82, asked=0.8, tolerance=0.0)).endswith("-> met")


def model():
    w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 100
    return one_weight_model("MatMul", w, [1, 64], [1, 64])


def test_spill_moves_weights_to_an_absolute_data_file():
    from faaq_onnx.runtime.session import make_session

    header = spill_to_disk(model())
    (t,) = header.graph.initializer
    assert t.data_location == TensorProto.EXTERNAL and not t.raw_data
    loc = next(e.value for e in t.external_data if e.key == "location")
    assert loc.startswith("/") and "faaq-emitted-" in loc
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(
        make_session(header).run(None, {"x": x})[0],
        x @ (np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 100),
        rtol=1e-5,
    )


def test_write_result_records_where_and_how_big(tmp_path):
    res = QuantizeResult(model(), {}, None, None)
    assert res.timings == {}
    write_result(res, tmp_path / "out" / "q.onnx")
    assert res.report["output"] == str(tmp_path / "out" / "q.onnx")
    assert res.report["output_bytes"] == (tmp_path / "out" / "q.onnx").stat().st_size > 0
    assert onnx.load(str(tmp_path / "out" / "q.onnx")).graph.node[0].op_type == "MatMul"


def test_compute_line():
    assert compute_line({}) is None
    c = {"bops_relative_w8a16": 0.28, "bops_relative_w8a8": 0.5625}
    assert compute_line({"compute": c}) == (
        "compute: 0.28 of W8A16's bit operations (0.562 of W8A8's)"
    )
    lat = {"ratio_to_float": 0.625, "quantized_ms": 2.5, "float_ms": 4.0, "ep": "cpu", "batch": 8}
    assert compute_line({"compute": c, "verify": {"latency": {**lat, "runs": 30}}}) == (
        "compute: 0.28 of W8A16's bit operations (0.562 of W8A8's); latency 0.62x the float "
        "model's (2.5 vs 4 ms, cpu, batch 8, median of 30 interleaved runs)"
    )


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8", "w6a6"])
def test_a_plan_states_its_bit_operations(tiny_cnn, cnn_calib, scheme):
    """MACs x weight bits x activation bits (activation bits twice for an op without weights, an
    Add) over the same sum for all-W8A16 and all-W8A8."""
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme=scheme, progress=False))
    w, a = int(scheme[1]), int(scheme[3])
    groups = res.qgraph.groups.values()
    assert any(g.weights for g in groups) and any(not g.weights and g.macs for g in groups)

    def bops(w, a):
        return sum(g.macs * (w if g.weights else a) * a for g in groups)

    c = res.report["compute"]
    assert c["bops_relative_w8a16"] == pytest.approx(bops(w, a) / bops(8, 16))
    assert c["bops_relative_w8a8"] == pytest.approx(bops(w, a) / bops(8, 8))
    assert c["gbops"] == pytest.approx(bops(w, a) / 1e9)
    assert list(c["activation_widths_on_ort_cpu"]) == [f"a{a}"]
    assert "latency" not in res.report["verify"]  # measured only when asked


def test_measure_latency_times_the_written_model_against_the_given_one(
    tiny_cnn, cnn_calib, monkeypatch
):
    import faaq_onnx.runtime.timing as timing

    seen = []

    def fake(models, feeds, ep="cpu", pairs=30, **kw):
        seen.append((models, {k: v.shape for k, v in feeds.items()}, ep))
        return [3.0, 4.0]

    monkeypatch.setattr(timing, "interleaved_median_ms", fake)
    config = QuantConfig(scheme="w8a8", progress=False, measure_latency=True, latency_batch=4)
    res = quantize(tiny_cnn, cnn_calib, config=config)
    ((models, shapes, ep),) = seen
    assert isinstance(models[0], onnx.ModelProto) and models[1] == str(tiny_cnn)
    assert shapes == {"input": (4, 3, 16, 16)} and ep == "cpu"
    lat = res.report["verify"]["latency"]
    assert (lat["quantized_ms"], lat["float_ms"], lat["ratio_to_float"]) == (3.0, 4.0, 0.75)
    assert lat["batch"] == 4


def test_every_activation_width_says_what_it_runs_as():
    assert activation_kernel(4).startswith("uint8 codes kept to 16 levels by an integer Clip")
    assert activation_kernel(3).startswith("uint8 codes kept to 8 levels")
    assert "int8 kernels" in activation_kernel(8) and "float ops" in activation_kernel(16)
    assert activation_kernel(32) == "float (not quantized)"


def test_a_latency_exactly_at_its_budget_is_met_without_the_tolerance():
    """The tolerance is only named when the measured latency went past the budget; landing on it
    exactly meets the budget outright."""
    at = rep("latency", measured=0.8, asked=0.8, tolerance=0.05)
    assert budget_line(at).endswith(") -> met")
