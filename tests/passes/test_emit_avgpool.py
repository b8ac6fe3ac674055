"""AveragePoolAsConvPass: a quantized AveragePool written as the depthwise Conv computing it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from faaq_onnx.analysis.metrics import sqnr_db
from faaq_onnx.config import QuantConfig
from faaq_onnx.graph import POOL_AS_CONV
from faaq_onnx.pipeline import quantize
from faaq_onnx.runtime.kernels import kernel_report
from tests.conftest import _save, graph_model, run_model


def _pool_between_convs(tmp_path, **pool) -> tuple[str, dict]:
    """Conv (8 channels) -> Relu -> AveragePool(**pool) -> Conv: what the pass rewrites sits
    between two quantized Convs."""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1] * 4, name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="pool", **pool),
        helper.make_node("Conv", ["p", "w2"], ["y"], name="conv2"),
    ]
    path = _save(graph_model(nodes, ["n", 3, 16, 16], inits), tmp_path / "src.onnx")
    x = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    return path, {"x": x}


def _ref(path, x):
    return run_model(path, {"x": x})[0]


@pytest.mark.parametrize(
    "pool",
    [
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    ],
)
def test_a_quantized_average_pool_runs_as_an_integer_depthwise_conv(tmp_path, pool):
    src, calib = _pool_between_convs(tmp_path, **pool)
    out = tmp_path / "q.onnx"
    res = quantize(src, calib, str(out), QuantConfig(scheme="w8a8", progress=False))
    ops = [n.op_type for n in res.model.graph.node]
    assert "AveragePool" not in ops
    (conv,) = [n for n in res.model.graph.node if n.doc_string == POOL_AS_CONV]
    assert conv.name == "pool"
    assert {a.name: helper.get_attribute_value(a) for a in conv.attribute}["group"] == 8
    x = calib["x"][:8]
    assert sqnr_db(_ref(src, x), run_model(out, {"x": x})[0]) > 30
    report = kernel_report(str(out))
    (entry,) = [q for q in report["quantized_nodes"] if q["node"] == "pool"]
    assert entry["op_type"] == "AveragePool" and entry["integer_kernel"]
    assert not entry["weighted"]  # the two Convs are the model's weighted ops, not the pool
    assert report["weighted_ops"]["total"] == 2


def test_the_conv_computes_what_qlinearaveragepool_would(tmp_path):
    """Written as the Conv or left to ORT's QLinearAveragePool, the same codes come out (up to
    one rounding step where the two requantize a tie differently)."""
    from faaq_onnx.passes import emit_avgpool

    src, calib = _pool_between_convs(tmp_path, kernel_shape=[2, 2], strides=[2, 2])
    cfg = QuantConfig(scheme="w8a8", progress=False)
    as_conv = quantize(src, calib, str(tmp_path / "conv.onnx"), cfg)
    original = emit_avgpool._rewritable
    emit_avgpool._rewritable = lambda node: None
    try:
        as_pool = quantize(src, calib, str(tmp_path / "pool.onnx"), QuantConfig(scheme="w8a8"))
    finally:
        emit_avgpool._rewritable = original
    assert "AveragePool" in [n.op_type for n in as_pool.model.graph.node]
    x = calib["x"][:8]
    a = run_model(tmp_path / "conv.onnx", {"x": x})[0]
    b = run_model(tmp_path / "pool.onnx", {"x": x})[0]
    assert sqnr_db(b, a) > 40
    assert as_conv.report["verify"]["outputs"]["y"]["sqnr_db"] == pytest.approx(
        as_pool.report["verify"]["outputs"]["y"]["sqnr_db"], abs=0.5
    )


@pytest.mark.parametrize(
    "pool",
    [
        # the border mean leaves the padding out: not what a zero-padded Conv computes
        {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    ],
)
def test_pools_a_conv_does_not_compute_stay_pools(tmp_path, pool):
    src, calib = _pool_between_convs(tmp_path, **pool)
    res = quantize(src, calib, str(tmp_path / "q.onnx"), QuantConfig(scheme="w8a8"))
    assert "AveragePool" in [n.op_type for n in res.model.graph.node]
    assert not [n for n in res.model.graph.node if n.doc_string == POOL_AS_CONV]


def test_a_pool_on_16_bit_codes_stays_a_pool(tmp_path):
    """ORT has no 16-bit integer Conv: the Conv form would gain nothing and read every code."""
    src, calib = _pool_between_convs(tmp_path, kernel_shape=[2, 2], strides=[2, 2])
    res = quantize(src, calib, str(tmp_path / "q.onnx"), QuantConfig(scheme="w8a16"))
    assert "AveragePool" in [n.op_type for n in res.model.graph.node]
    assert not [n for n in res.model.graph.node if n.doc_string == POOL_AS_CONV]


def test_a_pool_over_the_whole_map_becomes_a_global_pool_with_no_weight(tmp_path):
    """The CIFAR ResNets' last pooling (8x8 on an 8x8 map): GlobalAveragePool computes it
    without the C x 8 x 8 weight a Conv would store (4 KB, 3 % of ResNet-20 at W4)."""
    src, calib = _pool_between_convs(tmp_path, kernel_shape=[16, 16], strides=[16, 16])
    res = quantize(src, calib, str(tmp_path / "q.onnx"), QuantConfig(scheme="w8a8"))
    ops = [n.op_type for n in res.model.graph.node]
    assert "AveragePool" not in ops and ops.count("GlobalAveragePool") == 1
    assert not [n for n in res.model.graph.node if n.doc_string == POOL_AS_CONV]
    assert not [t for t in res.model.graph.initializer if t.name.startswith("pool_weight")]
    x = calib["x"][:8]
    assert sqnr_db(_ref(src, x), run_model(tmp_path / "q.onnx", {"x": x})[0]) > 30
