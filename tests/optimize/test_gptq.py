import numpy as np
import pytest

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.optimize.gptq import gptq, hessian, rtn_error
from faaq_onnx.quant.weights import weight_grid


@pytest.mark.parametrize("granularity", ["per-channel", "block"])
def test_gptq_beats_round_to_nearest_on_correlated_inputs(granularity):
    rng = np.random.default_rng(0)
    k, n = 64, 24
    w = rng.normal(0, 0.2, (k, n))
    x = rng.standard_normal((2000, 8)) @ rng.standard_normal((8, k)) + 0.05 * rng.standard_normal((2000, k))
    grid = weight_grid(w, 3, granularity, 1, 0, block_size=16)
    rtn = grid.round_to_nearest(w.astype(np.float32))
    qw = gptq(w, hessian(x[:1000]), grid, symmetric=True)
    assert qw.q.shape == (k, n) and qw.method == "gptq"
    assert qw.q.min() >= -4 and qw.q.max() <= 3
    held = x[1000:]
    assert rtn_error(w, qw, held) < 0.7 * rtn_error(w, rtn, held)
    if granularity == "block":
        assert qw.scale.shape == (k // 16, n) and qw.block_size == 16 and qw.axis == 0


def test_gptq_through_the_pipeline(tiny_mlp, mlp_calib):
    cfg = dict(progress=False, scheme="w3", weight_granularity="block", block_size=16)
    rtn = quantize(tiny_mlp, mlp_calib, config=QuantConfig(**cfg))
    g = quantize(tiny_mlp, mlp_calib, config=QuantConfig(optimize="gptq", **cfg))
    weights = g.report["verify"]["size"]["per_weight"]
    assert all(w["rounding"] == "gptq" for w in weights.values())
    assert g.report["matmulnbits"] and len(g.report["matmulnbits"]) == 2
    rtn_db = rtn.report["verify"]["outputs"]["y"]["sqnr_db"]
    assert g.report["verify"]["outputs"]["y"]["sqnr_db"] > rtn_db - 0.5
