"""optimize/datafree.py on a BatchNorm that reads the model input itself: the distilled inputs'
per-channel statistics are then the running ones, which numpy checks directly."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.optimize import datafree
from faaq_onnx.optimize.datafree import bn_mismatch, distill_inputs

torch = pytest.importorskip("torch")

MEAN = np.array([1.0, -2.0, 0.5], np.float32)
VAR = np.array([0.25, 4.0, 0.0], np.float32)  # a dead channel: running variance 0


def bn_model(
    dims=(None, 3, 4, 4),
    mean=MEAN,
    var=VAR,
    extra_input=False,
    stats_as_inputs=False,
    extra_type=TensorProto.FLOAT,
    x_type=TensorProto.FLOAT,
):
    inits = [
        numpy_helper.from_array(np.ones(3, np.float32), "s"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b"),
    ]
    if not stats_as_inputs:
        inits += [numpy_helper.from_array(mean, "m"), numpy_helper.from_array(var, "v")]
    ins = [helper.make_tensor_value_info("x", x_type, list(dims))]
    if extra_input:
        ins.append(helper.make_tensor_value_info("x2", extra_type, list(dims)))
    nodes = []
    if stats_as_inputs:  # running statistics computed by nodes, not stored as initializers
        nodes += [
            helper.make_node("Constant", [], ["m"], value=numpy_helper.from_array(mean)),
            helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(var)),
        ]
    nodes += [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn")]
    graph = helper.make_graph(
        nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_distilled_inputs_take_the_running_mean_and_std():
    threads = torch.get_num_threads()
    x = distill_inputs(bn_model(), 5, seed=1, iters=150, batch_size=2)["x"]
    assert torch.get_num_threads() == threads  # restored after the single-thread loop
    assert x.shape == (5, 3, 4, 4) and x.dtype == np.float32 and np.isfinite(x).all()
    # three batches of 2, 2 and 1 sample, each matched on its own
    for part in (x[:2], x[2:4]):
        per_c = part.transpose(1, 0, 2, 3).reshape(3, -1)
        np.testing.assert_allclose(per_c.mean(1), MEAN, atol=0.05)
        np.testing.assert_allclose(per_c.std(1, ddof=1)[:2], np.sqrt(VAR[:2] + 1e-5), rtol=0.05)
        # the dead channel's target std is sqrt(0 + 1e-5): near constant, and never NaN
        assert per_c[2].std() < 0.05


def test_distillation_is_seeded_and_cached_as_copies():
    proto = bn_model()
    a = distill_inputs(proto, 3, seed=4, iters=5, batch_size=4)
    b = distill_inputs(proto, 3, seed=4, iters=5, batch_size=4)
    np.testing.assert_array_equal(a["x"], b["x"])
    a["x"][:] = 0
    assert np.abs(distill_inputs(proto, 3, seed=4, iters=5, batch_size=4)["x"]).sum() > 0
    c = distill_inputs(proto, 3, seed=5, iters=5, batch_size=4)
    assert not np.array_equal(c["x"], b["x"])


def test_mismatch_is_the_squared_gaps_of_mean_and_std():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 3, 4, 4)) * 1.5 + 0.3).astype(np.float32)
    per_c = x.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    sd = np.sqrt(VAR.astype(np.float64) + 1e-5)
    want = np.mean((per_c.mean(1) - MEAN) ** 2) + np.mean((per_c.std(1, ddof=1) - sd) ** 2)
    assert bn_mismatch(bn_model(), {"x": x}) == pytest.approx(want, rel=1e-5)
    # inputs with exactly the running statistics score about 0
    z = rng.standard_normal((4, 3, 4, 4))
    z = (z - z.mean((0, 2, 3), keepdims=True)) / z.std((0, 2, 3), ddof=1, keepdims=True)
    exact = (z * sd[None, :, None, None] + MEAN[None, :, None, None]).astype(np.float32)
    assert bn_mismatch(bn_model(), {"x": exact}) < 1e-10


def test_refusals_say_what_is_missing():
    no_bn = bn_model()
    no_bn.graph.node[0].op_type = "Identity"
    del no_bn.graph.node[0].input[1:]
    with pytest.raises(FaaqError, match="has no BatchNormalization"):
        distill_inputs(no_bn, 2, iters=1)
    with pytest.raises(FaaqError, match="needs a model with a single float input"):
        distill_inputs(bn_model(extra_input=True), 2, iters=1)
    # one float input among two inputs, or one input that is not float: refused too
    with pytest.raises(FaaqError, match="needs a model with a single float input"):
        distill_inputs(bn_model(extra_input=True, extra_type=TensorProto.INT64), 2, iters=1)
    with pytest.raises(FaaqError, match="needs a model with a single float input"):
        distill_inputs(bn_model(x_type=TensorProto.INT64), 2, iters=1)
    with pytest.raises(FaaqError) as e:
        distill_inputs(bn_model(dims=(None, 3, "h", 4)), 2, iters=1)
    assert "non-batch dimensions fixed; 'x' is [None, 3, 'h', 4]" in str(e.value)
    with pytest.raises(FaaqError, match=r"'x' is \[1, 'c', 4, 4\]"):  # a symbolic channel count too
        distill_inputs(bn_model(dims=(1, "c", 4, 4)), 2, iters=1)
    with pytest.raises(FaaqError, match="'bn' has no constant running statistics"):
        distill_inputs(bn_model(stats_as_inputs=True), 2, iters=1)


def test_defaults():
    assert (datafree.DISTILL_ITERS, datafree.DISTILL_LR) == (300, 0.2)
