"""clamp_bounds: the range a Relu or Clip bounds its output to, as emission reads it; container_codes:
where narrow activations' codes live."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.passes.emit_activations import clamp_bounds, container_codes
from faaq_onnx.quant.formats import IntFormat


def _node(op, inputs, inits=None):
    inits = inits or {}
    g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["nx"]), helper.make_node(op, inputs, ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in inits.items()],
    )
    model = ir.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    return list(model.graph)[-1]


def test_relu_and_clip_bounds():
    assert clamp_bounds(_node("Relu", ["x"])) == (0.0, np.inf)
    lo_hi = {"lo": -1.5, "hi": 6.0}
    assert clamp_bounds(_node("Clip", ["x", "lo", "hi"], lo_hi)) == (-1.5, 6.0)
    assert clamp_bounds(_node("Clip", ["x", "lo"], lo_hi)) == (-1.5, np.inf)
    assert clamp_bounds(_node("Clip", ["x", "", "hi"], lo_hi)) == (-np.inf, 6.0)
    assert clamp_bounds(_node("Clip", ["x"])) == (-np.inf, np.inf)


def test_computed_bounds_and_other_ops_have_none():
    assert clamp_bounds(_node("Clip", ["x", "nx"])) == (None, None)
    assert clamp_bounds(_node("Clip", ["x", "", "nx"])) == (None, None)
    assert clamp_bounds(_node("Sigmoid", ["x"])) == (None, None)


def test_narrow_activation_codes_move_to_uint8_with_their_zero_point():
    """Signed A4 codes -8..7 around zp become 120..135 around zp + 128: the same dequantized values."""
    zp, bounds = container_codes(IntFormat(4, True, min_container=8), -3)
    assert zp.dtype == np.uint8 and int(zp) == 125
    assert [(b.dtype, int(b)) for b in bounds] == [(np.uint8, 120), (np.uint8, 135)]
    zp, bounds = container_codes(IntFormat(6, False, min_container=8), 5)
    assert int(zp) == 5 and [int(b) for b in bounds] == [0, 63]
    zp, bounds = container_codes(IntFormat(8, True, min_container=8), -3)
    assert zp.dtype == np.int8 and int(zp) == -3 and bounds is None
