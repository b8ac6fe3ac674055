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


def test_inputs_fed_whole_do_not_fix_the_batch():
    """A probe's quantizer parameters (shape [4], fed whole with every batch) are not a batch
    dimension: the samples run in batches of the size asked, not of 4."""
    from faaq_onnx.runtime.runner import run_batches

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("ReduceSum", ["p"], ["s"], keepdims=0),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x, p], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    m.ir_version = 10
    sess = make_session(m)
    data = np.arange(30, dtype=np.float32).reshape(10, 3)
    extra = {"p": np.ones(4, np.float32)}
    starts = [s for s, _ in run_batches(sess, {"x": data}, 8, ["y"], extra_feeds=extra)]
    assert starts == [0, 8]
    outs = np.concatenate(
        [o[0] for _, o in run_batches(sess, {"x": data}, 8, ["y"], extra_feeds=extra)]
    )
    np.testing.assert_allclose(outs, data + 4)


def test_inputs_given_one_whole_feed_per_sample_run_one_sample_at_a_time():
    """An input without a sample axis in front (a [2, B, 8] state, a scalar) is held as one
    whole feed per sample: each run gets that sample's array as it is, and what it returns
    comes back with a sample axis in front."""
    from faaq_onnx.runtime.runner import run_batches
    from tests.passes.test_sample_axis import state_feeds, state_model

    feeds = state_feeds(5, seed=1)
    sess = make_session(state_model())
    got = list(run_batches(sess, feeds, batch_size=4))
    assert [start for start, _ in got] == list(range(5))
    for i, (_, outs) in enumerate(got):
        one = {"x": feeds["x"][i : i + 1], "state": feeds["state"][i], "gain": feeds["gain"][i]}
        want = sess.run(None, {k: np.asarray(v) for k, v in one.items()})
        for a, b in zip(outs, want):
            assert a.shape == (1, *b.shape)
            np.testing.assert_array_equal(a[0], b)
