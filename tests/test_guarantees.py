"""Budgets are promises about the file written: met as measured, or refused with no file."""


import pytest

from faaq_onnx import quantize
from faaq_onnx.analysis.budget import Budget
from faaq_onnx.analysis.metrics import sqnr_db
from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.guarantees import meets
from tests.conftest import run_model


def _cfg(**kw):
    return QuantConfig(progress=False, **kw)


def test_reachable_floor_holds_on_the_written_file(tiny_cnn, cnn_calib, tmp_path):
    out = tmp_path / "q.onnx"
    res = quantize(tiny_cnn, cnn_calib, out, _cfg(verify_samples=16, calib_size=32), budget="sqnr-db=20",
                   candidates="w4a8,w8a8", cache_dir=False)
    b = res.report["budget"]
    assert b["met"] and b["measured"] >= 20 and b["budget"] == "sqnr-db=20"
    # re-measure the written file on the held-out inputs ourselves
    held = res.report["calibration"]
    assert held["verification_held_out"] and held["samples"] == 32
    x = {"input": cnn_calib["input"][32:48]}
    assert sqnr_db(run_model(tiny_cnn, x)[0], run_model(str(out), x)[0]) >= 20


def test_unreachable_floor_fails_and_writes_nothing(tiny_cnn, cnn_calib, tmp_path):
    out = tmp_path / "q.onnx"
    with pytest.raises(FaaqError, match=r"cannot be met.*best plan measures sqnr-db=.*nearest feasible budget: "
                                        r"sqnr-db=\d+(\.\d)?\. Nothing was written"):
        quantize(tiny_cnn, cnn_calib, out, _cfg(), budget="sqnr-db=90", candidates="w4a8,w8a8", cache_dir=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_cnn.onnx"]


def test_floor_just_above_the_best_plan_is_refused_not_rounded(tiny_cnn, cnn_calib, tmp_path):
    """The old repair loop wrote a model below the floor and printed a budget nobody gave."""
    best = quantize(tiny_cnn, cnn_calib, config=_cfg(scheme="w8a16")).report["verify"]["outputs"]["logits"]["sqnr_db"]
    out = tmp_path / "q.onnx"
    with pytest.raises(FaaqError, match="cannot be met"):
        quantize(tiny_cnn, cnn_calib, out, _cfg(), budget=f"sqnr-db={best + 0.3:.2f}", candidates="w4a8,w8a8,w8a16",
                 cache_dir=False)
    assert not out.exists()


def test_avg_bits_budget_holds_in_stored_bits(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=_cfg(), budget="avg-bits=5", candidates="w4a8,w6a8,w8a8",
                   cache_dir=False)
    ws = res.report["verify"]["size"]["per_weight"].values()
    stored = sum(w["container_bits"] * w["elements"] for w in ws) / sum(w["elements"] for w in ws)
    assert stored <= 5 and res.report["budget"]["measured"] == pytest.approx(stored)
    # a 6-bit weight costs as much as an 8-bit one on disk, so the allocator never picks it
    assert all(c != "w6a8" for c in res.report["plan"]["choices"].values())


def test_size_budget_holds_on_the_bytes_written(tiny_mlp, mlp_calib, tmp_path):
    out = tmp_path / "q.onnx"
    w8 = quantize(tiny_mlp, mlp_calib, config=_cfg()).model.ByteSize()
    limit = (w8 - 600) / 1e6
    res = quantize(tiny_mlp, mlp_calib, out, _cfg(), budget=f"size-mb={limit:.6f}", candidates="w4a8,w8a8",
                   cache_dir=False)
    assert out.stat().st_size <= limit * 1e6
    assert res.report["budget"]["met"]


@pytest.mark.parametrize("kind,value,measured,ok", [
    ("sqnr-db", 30, 30.0, True), ("sqnr-db", 30, 29.99, False), ("max-drop", 0.5, 0.5, True),
    ("max-drop", 0.5, 0.51, False), ("avg-bits", 4, 4.0, True), ("avg-bits", 4, 4.01, False),
])
def test_meets_direction(kind, value, measured, ok):
    assert meets(Budget(kind, value), measured) is ok


def test_latency_budget_is_measured_and_reported(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=_cfg(), budget="latency=1.5", candidates="w8a8,w8a16",
                   cache_dir=False)
    b = res.report["budget"]
    assert b["kind"] == "latency" and b["met"] and b["measured"] <= 1.5 * 1.05
    assert "interleaved" in b["how"]
