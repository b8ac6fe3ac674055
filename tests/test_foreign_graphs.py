"""Graphs other exporters write get the integer kernels ORT's own quantizer gives them.

The acceptance check of quantization that follows the graph: on a model with a computed
SAME Pad, HardSigmoid*Mul and HardSwish behind Convs, a constant Pad before a depthwise
Conv, every weighted op runs on an integer kernel, no fewer than under ONNX Runtime's
`quantize_static`, and the output is no further from the float model's.
"""

from __future__ import annotations

import numpy as np
import pytest

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.runtime.kernels import kernel_report
from tests.conftest import run_model


@pytest.fixture
def foreign_calib():
    return {"input": np.random.default_rng(3).standard_normal((32, 3, 16, 16)).astype(np.float32)}


def _ort_quantize(src, calib, out):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"input": calib["input"][i : i + 1]} for i in range(len(calib["input"])))

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        src,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    return out


def _sqnr(ref, y):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2))


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_every_weighted_op_on_an_integer_kernel(foreign_cnn, foreign_calib, tmp_path, scheme):
    out = tmp_path / f"{scheme}.onnx"
    quantize(foreign_cnn, foreign_calib, str(out), QuantConfig(scheme=scheme, progress=False))
    weighted = kernel_report(str(out))["weighted_ops"]
    assert weighted["total"] == 4, weighted  # three Convs and the Gemm
    assert weighted["integer"] == 4, weighted["float"]


def test_at_least_ort_quantizers_kernels_and_fidelity(foreign_cnn, foreign_calib, tmp_path):
    ours = tmp_path / "faaq.onnx"
    quantize(foreign_cnn, foreign_calib, str(ours), QuantConfig(scheme="w8a8", progress=False))
    theirs = _ort_quantize(foreign_cnn, foreign_calib, str(tmp_path / "ort.onnx"))
    assert (
        kernel_report(str(ours))["weighted_ops"]["integer"]
        >= kernel_report(theirs)["weighted_ops"]["integer"]
    )
    x = {"input": np.random.default_rng(9).standard_normal((64, 3, 16, 16)).astype(np.float32)}
    ref = run_model(foreign_cnn, x)[0]
    assert _sqnr(ref, run_model(str(ours), x)[0]) >= _sqnr(ref, run_model(theirs, x)[0]) - 0.5


def test_kernel_report_sees_weights_held_in_constant_nodes(tmp_path):
    """Paddle and TF converters keep weights in Constant nodes; ORT's quantizer then writes
    Q(constant) -> DQ, which ORT folds at load: the report must count those weighted ops."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "wv")),
            helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    src = tmp_path / "const.onnx"
    onnx.save(model, src)
    calib = {"input": np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    theirs = _ort_quantize(str(src), calib, str(tmp_path / "ort.onnx"))
    weighted = kernel_report(theirs)["weighted_ops"]
    assert weighted["total"] == 1 and weighted["integer"] == 1
