import numpy as np
import pytest

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.optimize.datafree import bn_mismatch, distill_inputs
from tests.conftest import build_tiny_cnn


def test_distilled_inputs_match_batchnorm_statistics():
    proto = build_tiny_cnn()
    proto.ir_version = 10
    x = distill_inputs(proto, 16, iters=100, batch_size=16)
    assert x["input"].shape == (16, 3, 16, 16) and np.isfinite(x["input"]).all()
    noise = {"input": np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)}
    assert bn_mismatch(proto, x) < 0.3 * bn_mismatch(proto, noise)


def test_data_free_quantize_reports_it(tiny_cnn):
    res = quantize(tiny_cnn, "bn-stats:8", config=QuantConfig(progress=False))
    cal = res.report["calibration"]
    assert cal["data_free"] and not cal["verification_held_out"]
    assert any("distilled from the model's BatchNorm" in w for w in res.report["warnings"])


def test_data_free_without_batchnorm_is_a_clear_error(tiny_mlp):
    with pytest.raises(FaaqError, match="no BatchNormalization"):
        quantize(tiny_mlp, "none", config=QuantConfig(progress=False))
