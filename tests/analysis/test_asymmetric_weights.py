"""quantize warns about weights ORT's CPU EP runs slowly: asymmetric ones on integer kernels."""

from __future__ import annotations

import onnx
import pytest

from faaq_onnx.analysis.asymmetric_weights import ASYMMETRIC_TAIL, asymmetric_integer_weights
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import quantize


def _convs(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("scheme", ["w8a8", "w7a8"])
def test_asymmetric_weights_on_integer_kernels_are_named_and_warned(tiny_cnn, cnn_calib, scheme):
    res = quantize(
        tiny_cnn,
        cnn_calib,
        config=QuantConfig(scheme=scheme, weight_symmetric=False, progress=False),
    )
    slow = asymmetric_integer_weights(res.model)
    assert slow and set(_convs(res.model)) <= set(slow)
    (warning,) = [w for w in res.report["warnings"] if w.endswith(ASYMMETRIC_TAIL)]
    assert warning.startswith(f"{len(slow)} weighted op(s)")


@pytest.mark.parametrize(
    "scheme, symmetric",
    [("w8a8", True), ("w4a8", True), ("w8a16", False), ("w4a8", False), ("w6a8", None)],
)
def test_symmetric_weights_or_float_activations_are_not_warned(
    tiny_cnn, cnn_calib, scheme, symmetric
):
    """Symmetric weights take the fast path; 16-bit activations run in float whatever the
    weights' zero points; asymmetric weights of up to 6 bits are written with zero point 0."""
    res = quantize(
        tiny_cnn,
        cnn_calib,
        config=QuantConfig(scheme=scheme, weight_symmetric=symmetric, progress=False),
    )
    assert asymmetric_integer_weights(res.model) == []
    assert not [w for w in res.report["warnings"] if w.endswith(ASYMMETRIC_TAIL)]
