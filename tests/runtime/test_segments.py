"""SegmentedRun: each tensor from the ones computed before it gives what the whole model gives."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.runtime.segments import SegmentedRun
from faaq_onnx.runtime.session import make_session


def residual_model() -> onnx.ModelProto:
    """x -> Conv(w1) -> Relu -> a; a2 = Reshape(a, Shape(a)); a2 -> Conv(w2) -> b; Add(a, b) -> c;
    Reshape(c, [Shape(a)[0], -1]) -> MatMul(w3) -> y. Shape(a) has no sample axis: it is not kept,
    and the last Reshape's request computes it again from a."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4 * 6 * 6, 5)).astype(np.float32), "w3"),
        numpy_helper.from_array(np.array([0], np.int64), "i0"),
        numpy_helper.from_array(np.array([-1], np.int64), "m1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a0"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("Relu", ["a0"], ["a"], name="r1"),
        helper.make_node("Shape", ["a"], ["cs"], name="shape"),
        helper.make_node("Reshape", ["a", "cs"], ["a2"], name="same_shape"),
        helper.make_node("Conv", ["a2", "w2"], ["b"], pads=[1, 1, 1, 1], name="c2"),
        helper.make_node("Add", ["a", "b"], ["c"], name="add"),
        helper.make_node("Gather", ["cs", "i0"], ["n"], axis=0, name="gather"),
        helper.make_node("Concat", ["n", "m1"], ["flat_shape"], axis=0, name="concat"),
        helper.make_node("Reshape", ["c", "flat_shape"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "w3"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6]),
            helper.make_tensor_value_info("w1", TensorProto.FLOAT, [4, 3, 3, 3]),
            helper.make_tensor_value_info("w2", TensorProto.FLOAT, [4, 4, 3, 3]),
            helper.make_tensor_value_info("w3", TensorProto.FLOAT, [144, 5]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def whole_model(model, name, x, feeds):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_empty_tensor_value_info(name))
    sess = make_session(m, opt_level="basic")
    names = {i.name for i in sess.get_inputs() + sess.get_overridable_initializers()}
    return sess.run([name], {"x": x, **{k: v for k, v in feeds.items() if k in names}})[0]


def test_each_tensor_is_the_whole_models_with_the_weights_of_its_time():
    """Asked in graph order while weights change between requests, each answer is what the
    whole model computes with the weights at that moment; nodes run once and kept tensors
    are dropped when nothing left reads them."""
    model = residual_model()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 3, 6, 6)).astype(np.float32)
    feeds: dict = {}
    run = SegmentedRun(model, {"x": x}, batch_size=4, feeds=lambda: feeds)
    # layer c1 reads x, c2 reads a2, fc reads f: each is rounded after its input was taken
    for weight, name in (("w1", "a2"), ("w2", "f"), ("w3", "y")):
        init = next(t for t in model.graph.initializer if t.name == weight)
        feeds[weight] = (numpy_helper.to_array(init) * 0.5).astype(np.float32)  # "rounded" now
        got = run.get(name)
        np.testing.assert_allclose(got, whole_model(model, name, x, feeds), rtol=1e-5, atol=1e-5)
    assert "a" not in run.kept and "c" not in run.kept  # every reader has run
    assert run.kept_bytes() == 0  # nothing is left to read anything


def test_a_request_runs_only_what_was_not_run():
    model = residual_model()
    x = np.random.default_rng(2).normal(size=(6, 3, 6, 6)).astype(np.float32)
    run = SegmentedRun(model, {"x": x}, batch_size=4)
    run.get("a")
    first = set(run.done)
    run.get("b")
    names = {run.nodes[i].name for i in run.done - first}
    assert names == {"same_shape", "c2"}  # Shape(a) ran too, but is not kept: not done


def test_a_watched_tensor_is_summed_per_channel_as_it_is_computed(tmp_path, monkeypatch):
    """Its mean over every sample, without reading the kept tensor back (spilled to a file here)."""
    from faaq_onnx.runtime import segments, spill

    monkeypatch.setattr(segments, "SPILL_BYTES", 1)  # every kept tensor goes to a file
    monkeypatch.setattr(spill, "SPILL_BYTES", 1)
    model = residual_model()
    x = np.random.default_rng(1).standard_normal((10, 3, 6, 6)).astype(np.float32)
    run = SegmentedRun(model, {"x": x}, batch_size=4)
    run.watch(["a", "b"])
    assert run.channel_mean("a") is None  # not computed yet
    a = run.get("a")
    want = whole_model(model, "a", x, {}).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(run.channel_mean("a"), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.mean(axis=(0, 2, 3)), want, rtol=1e-5, atol=1e-6)
    run.get("b")
    b_mean = whole_model(model, "b", x, {}).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(run.channel_mean("b"), b_mean, rtol=1e-5, atol=1e-6)
    assert run.channel_mean("c") is None  # computed, not watched
