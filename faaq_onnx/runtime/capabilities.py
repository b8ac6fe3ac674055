"""What this onnxruntime build accepts, asked of it directly (once per process).

Version numbers say little about which types and opsets a build takes; a two-node
model tells for sure.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@functools.lru_cache(maxsize=None)
def int2_unsupported_reason() -> str | None:
    """None when ORT loads and runs a packed int2 initializer -> Cast(int8) at opset 25."""
    import ml_dtypes

    from faaq_onnx.runtime.session import make_session

    w = numpy_helper.from_array(np.array([-2, -1, 0, 1], ml_dtypes.int2), "w")
    g = helper.make_graph(
        [helper.make_node("Cast", ["w"], ["c"], to=TensorProto.INT8),
         helper.make_node("Cast", ["c"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["x", "f"], ["y"])],
        "int2_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])
    model.ir_version = 11
    try:
        out = make_session(model).run(None, {"x": np.zeros(4, np.float32)})[0]
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"onnxruntime {_ort_version()} cannot run int2 at opset 25 ({str(exc).splitlines()[0][:120]})"
    if not np.array_equal(out, [-2, -1, 0, 1]):
        return f"onnxruntime {_ort_version()} decodes int2 incorrectly"
    return None


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


__all__ = ["int2_unsupported_reason", "onnx"]
