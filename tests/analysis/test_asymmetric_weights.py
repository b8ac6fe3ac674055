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


def test_a_matmul_of_two_activations_is_not_an_asymmetric_weight():
    """Attention's Q·Kᵀ reads two dequantized activations with uint8 zero points: no weight,
    no warning (an encoder's W4A8 was told to leave out a --weight-asymmetric it never gave).
    A constant weight with a nonzero zero point beside it is still named."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def qdq(name: str, zp_type: int, zp: int) -> list:
        return [
            helper.make_node("QuantizeLinear", [name, "s", f"{name}_zp"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", "s", f"{name}_zp"], [f"{name}_dq"]),
        ], numpy_helper.from_array(
            np.array(zp, dtype=helper.tensor_dtype_to_np_dtype(zp_type)), f"{name}_zp"
        )

    (ax, zx), (ay, zy) = qdq("a", TensorProto.UINT8, 128), qdq("b", TensorProto.UINT8, 128)
    w = numpy_helper.from_array(np.full((4, 4), 3, np.int8), "w_codes")
    wzp = numpy_helper.from_array(np.array(1, np.int8), "w_zp")
    nodes = [
        *ax,
        *ay,
        helper.make_node("MatMul", ["a_dq", "b_dq"], ["qk"], name="attention_qk"),
        helper.make_node("DequantizeLinear", ["w_codes", "s", "w_zp"], ["w_dq"]),
        helper.make_node("MatMul", ["a_dq", "w_dq"], ["proj"], name="projection"),
    ]
    f = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [f("a", TensorProto.FLOAT, [4, 4]), f("b", TensorProto.FLOAT, [4, 4])],
        [f("qk", TensorProto.FLOAT, [4, 4]), f("proj", TensorProto.FLOAT, [4, 4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), zx, zy, w, wzp],
    )
    assert asymmetric_integer_weights(helper.make_model(graph)) == ["projection"]
