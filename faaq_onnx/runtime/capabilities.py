"""What this onnxruntime build accepts, asked of it directly (once per process).

Version numbers say little about which types and opsets a build takes; a two-node
model tells for sure.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@functools.cache
def int2_unsupported_reason() -> str | None:
    """None when ORT loads and runs a packed int2 initializer -> Cast(int8) at opset 25."""
    import ml_dtypes

    from faaq_onnx.runtime.session import make_session

    w = numpy_helper.from_array(np.array([-2, -1, 0, 1], ml_dtypes.int2), "w")
    g = helper.make_graph(
        [
            helper.make_node("Cast", ["w"], ["c"], to=TensorProto.INT8),
            helper.make_node("Cast", ["c"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "f"], ["y"]),
        ],
        "int2_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])
    model.ir_version = 11
    try:
        out = make_session(model).run(None, {"x": np.zeros(4, np.float32)})[0]
    except Exception as exc:  # any failure means "not here"
        return f"onnxruntime {ort_version()} cannot run int2 at opset 25 ({str(exc).splitlines()[0][:120]})"
    if not np.array_equal(out, [-2, -1, 0, 1]):
        return f"onnxruntime {ort_version()} decodes int2 incorrectly"
    return None


@functools.cache
def int8_products_saturate() -> bool:
    """True when ORT's u8 x s8 integer kernels saturate on this CPU.

    Without VNNI (AVX2 x86) MLAS multiplies uint8 activations by int8 weights with
    vpmaddubsw, which adds two products in int16: 255*127*2 overflows and is clipped.
    A QDQ MatMul fed its worst case says whether that happens here; 7-bit weights
    (ONNX Runtime's `reduce_range`) never overflow (255*63*2 < 32767).
    """
    from faaq_onnx.runtime.session import make_session

    k, n = 64, 8
    w = numpy_helper.from_array(np.full((k, n), 127, np.int8), "w")
    scale = numpy_helper.from_array(np.array(1.0, np.float32), "s")
    zp_a = numpy_helper.from_array(np.array(0, np.uint8), "za")
    zp_w = numpy_helper.from_array(np.array(0, np.int8), "zw")
    g = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "za"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "za"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w", "s", "zw"], ["wd"]),
            helper.make_node("MatMul", ["xd", "wd"], ["y"]),
        ],
        "u8s8_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])],
        [w, scale, zp_a, zp_w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    out = make_session(model).run(None, {"x": np.full((4, k), 255.0, np.float32)})[0]
    return not np.allclose(out, 255.0 * 127.0 * k)


def ort_version() -> str:
    """The ONNX Runtime version measurements were taken with (cache keys)."""
    import onnxruntime

    return onnxruntime.__version__


__all__ = ["int2_unsupported_reason", "int8_products_saturate", "onnx"]
