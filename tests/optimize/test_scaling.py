"""SmoothQuant and AWQ keep the float function and move what they should where they should."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation
from tests.conftest import _save, run_model


def _outlier_mlp(tmp_path):
    """LayerNorm -> two MatMuls reading it (a site), with two outlier input channels."""
    rng = np.random.default_rng(0)
    k = 32
    gamma = np.ones(k, np.float32)
    gamma[[3, 17]] = 30.0  # outlier channels, as in transformer activations
    inits = [
        numpy_helper.from_array(gamma, "ln.g"),
        numpy_helper.from_array(np.zeros(k, np.float32), "ln.b"),
        numpy_helper.from_array(rng.normal(0, 0.2, (k, 16)).astype(np.float32), "wq"),
        numpy_helper.from_array(rng.normal(0, 0.2, (k, 16)).astype(np.float32), "wk"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.g", "ln.b"], ["h"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["h", "wq"], ["q"], name="mq"),
        helper.make_node("MatMul", ["h", "wk"], ["kk"], name="mk"),
        helper.make_node("Add", ["q", "kk"], ["y"], name="add"),
    ]
    g = helper.make_graph(
        nodes,
        "site",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        inits,
    )
    return _save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ln_mlp.onnx"
    )


@pytest.mark.parametrize("mode", ["smoothquant", "awq"])
def test_scaling_keeps_the_float_function_and_folds_into_layernorm(tmp_path, mode):
    path = _outlier_mlp(tmp_path)
    x = {"x": np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)}
    comp = Compilation(
        path, x, QuantConfig(progress=False, scheme="w4", optimize=mode), target_opset=21
    )
    site = comp.scaling["sites"][0]
    assert (
        sorted(site["nodes"]) == ["mk", "mq"] and site["fold"] == "folded into LayerNormalization"
    )
    np.testing.assert_allclose(
        run_model(comp.float_proto, x)[0], run_model(path, x)[0], rtol=1e-4, atol=1e-4
    )


def test_smoothquant_improves_w8a8_on_outliers(tmp_path):
    path = _outlier_mlp(tmp_path)
    x = {"x": np.random.default_rng(1).standard_normal((96, 32)).astype(np.float32)}
    plain = quantize(path, x, config=QuantConfig(progress=False, calib_size=64, act_range="minmax"))
    smooth = quantize(
        path,
        x,
        config=QuantConfig(
            progress=False, calib_size=64, act_range="minmax", optimize="smoothquant"
        ),
    )
    assert (
        smooth.report["verify"]["outputs"]["y"]["sqnr_db"]
        > plain.report["verify"]["outputs"]["y"]["sqnr_db"] + 3
    )


def test_awq_improves_weight_only_w3(tmp_path):
    path = _outlier_mlp(tmp_path)
    x = {"x": np.random.default_rng(1).standard_normal((96, 32)).astype(np.float32)}
    cfg = dict(progress=False, calib_size=64, scheme="w3", weight_granularity="per-channel")
    plain = quantize(path, x, config=QuantConfig(**cfg))
    awq = quantize(path, x, config=QuantConfig(optimize="awq", **cfg))
    assert (
        awq.report["verify"]["outputs"]["y"]["sqnr_db"]
        > plain.report["verify"]["outputs"]["y"]["sqnr_db"]
    )
