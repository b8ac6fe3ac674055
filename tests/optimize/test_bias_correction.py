import numpy as np

from faaq_onnx.config import QuantConfig
from faaq_onnx.optimize.bias_correction import bias_corrections
from faaq_onnx.pipeline import Compilation
from tests.conftest import run_model


def test_bias_correction_removes_the_mean_output_shift(tiny_cnn, cnn_calib):
    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="bias-correction")
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    plan = comp.uniform("w2a8")
    corr = bias_corrections(comp, plan, samples=32)
    assert set(corr) == {"conv1_bias_bnfold", "conv2_bias_bnfold", "fc.b"}
    x = {"input": cnn_calib["input"][32:]}  # held out
    ref = run_model(tiny_cnn, x)[0]
    corrected = run_model(comp.build(plan)[0], x)[0]
    comp.config.optimize = ()
    plain = run_model(comp.build(plan)[0], x)[0]
    shift = lambda y: float(np.abs((ref - y).mean(0)).mean())  # noqa: E731 - mean logit shift
    assert shift(corrected) < 0.6 * shift(plain)
    # the correction lives in the int32 bias: QLinearConv fusion survives
    res = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False, scheme="w4a8", calib_size=32,
                                                       optimize="bias-correction"), target_opset=21)
    assert res.emit(res.uniform("w4a8")).report["verify"]["kernels"]["summary"][0].startswith("all")
