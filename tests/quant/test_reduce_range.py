"""8-bit weights keep a 7-bit range where ONNX Runtime's int8 kernels would saturate.

Without VNNI, ORT multiplies uint8 activations by int8 weights two products at a time in
int16 (vpmaddubsw): 255*127*2 overflows and is clipped, so the fused model no longer
computes what its QDQ graph says. `reduce_range="auto"` asks ORT on this CPU.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.runtime import capabilities


def _weight_codes(path):
    from onnx import numpy_helper

    m = onnx.load(path)
    return {
        t.name: numpy_helper.to_array(t)
        for t in m.graph.initializer
        if t.name.endswith("_quantized") and t.data_type == onnx.TensorProto.INT8
    }  # not the int32 biases


@pytest.mark.parametrize("mode, bits", [("on", 7), ("off", 8)])
def test_reduce_range_bounds_8bit_weight_codes(tiny_mlp, mlp_calib, tmp_path, mode, bits):
    out = tmp_path / "q.onnx"
    res = quantize(
        tiny_mlp, mlp_calib, str(out), QuantConfig(scheme="w8a8", reduce_range=mode, progress=False)
    )
    codes = _weight_codes(out)
    peak = max(int(np.abs(c.astype(np.int32)).max()) for c in codes.values())
    assert (
        2 ** (bits - 1) - 1 <= peak <= 2 ** (bits - 1)
    )  # the grid's full signed range, and no more
    per_weight = res.report["verify"]["size"]["per_weight"]
    assert {w["bits"] for w in per_weight.values()} == {bits}  # the report states the range used
    assert {w["container_bits"] for w in per_weight.values()} == {8}


@pytest.mark.parametrize("saturates", [True, False])
def test_auto_follows_what_ort_does_on_this_cpu(monkeypatch, saturates):
    monkeypatch.setattr(capabilities, "int8_products_saturate", lambda: saturates)
    assert QuantConfig(reduce_range="auto").weights_reduce_range is saturates
    assert QuantConfig(reduce_range="on").weights_reduce_range is True
    assert QuantConfig(reduce_range="off").weights_reduce_range is False


def _run(path, x, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, x)[0]


def test_fused_kernels_compute_what_the_qdq_graph_says(tiny_mlp, tmp_path):
    """The default model's integer kernels give the QDQ graph's own output on this CPU."""
    rng = np.random.default_rng(0)
    x = {"x": (rng.standard_normal((64, 64)) * 3).astype(np.float32)}
    out = tmp_path / "q.onnx"
    quantize(tiny_mlp, x, str(out), QuantConfig(scheme="w8a8", progress=False))
    reference = _run(
        out, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )  # DQ -> float op -> Q: no saturation
    fused = _run(out, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    err = np.sum((fused - reference) ** 2) / np.sum(reference**2)
    assert err < 1e-3, f"fused kernels deviate from the QDQ graph: relative error {err:.3g}"


@pytest.mark.parametrize("saturates", [True, False])
def test_the_run_warns_exactly_when_auto_narrows_the_weights(
    monkeypatch, tiny_mlp, mlp_calib, saturates
):
    monkeypatch.setattr(capabilities, "int8_products_saturate", lambda: saturates)
    res = quantize(tiny_mlp, mlp_calib, config=QuantConfig(scheme="w8a8", progress=False))
    assert any("saturate" in w for w in res.report["warnings"]) is saturates
    res = quantize(
        tiny_mlp, mlp_calib, config=QuantConfig(scheme="w8a8", reduce_range="on", progress=False)
    )
    assert not any(
        "saturate" in w for w in res.report["warnings"]
    )  # asked for: nothing to warn about
