import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from faaq_onnx.runtime.runner import channel_means
from faaq_onnx.runtime.session import make_session


def _double(batch) -> onnx.ModelProto:
    """y = x + x, with a dynamic or a fixed batch dimension."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 2, 2])
    g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("batch,batch_size", [("N", 3), (4, 4)])
def test_channel_means_over_ragged_and_padded_batches(batch, batch_size):
    """Summed batch by batch: a ragged last batch counts its samples once, and so does the
    padding a fixed-batch model needs (its repeated samples are cut off)."""
    x = (np.random.default_rng(0).normal(size=(10, 3, 2, 2)) + np.arange(3)[:, None, None]).astype(
        np.float32
    )
    sess = make_session(_double(batch))
    (got,) = channel_means(sess, {"x": x}, batch_size, ["y"])
    np.testing.assert_allclose(got, 2 * x.astype(np.float64).mean((0, 2, 3)), rtol=1e-6)
    (last,) = channel_means(sess, {"x": x}, batch_size, ["y"], axis=3)
    np.testing.assert_allclose(last, 2 * x.astype(np.float64).mean((0, 1, 2)), rtol=1e-6)
