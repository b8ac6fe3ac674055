"""report.budget_line's exact text, and results.py: a big model's emitted weights spilled to a
data file, and the written result's path and size in its report."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.report import budget_line
from faaq_onnx.results import QuantizeResult, spill_to_disk, write_result


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
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


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
