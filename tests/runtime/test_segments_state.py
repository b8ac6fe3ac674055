"""SegmentedRun's bookkeeping: what it keeps and how many bytes, the cut it hands to the next
segment, bias shifts of kept tensors, and tensors without a sample axis."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from faaq_onnx.runtime.segments import SegmentedRun
from tests.runtime.test_segments import residual_model, whole_model

torch = pytest.importorskip("torch")


def _x(n=7, seed=3):
    return np.random.default_rng(seed).normal(size=(n, 3, 6, 6)).astype(np.float32)


def test_kept_tensors_and_their_bytes():
    x = _x()
    run = SegmentedRun(residual_model(), {"x": x}, batch_size=3)  # 7 samples: 3 + 3 + 1
    assert run.kept_bytes() == 0 and run.n == 7  # the model's own inputs do not count
    a2 = run.get("a2")
    np.testing.assert_allclose(a2, whole_model(residual_model(), "a2", x, {}), rtol=1e-5, atol=1e-6)
    # a is read later by Add and Shape; a2 by the second Conv; x by nothing still to run
    assert set(run.kept) == {"x", "a", "a2"}
    assert run.kept_bytes() == 2 * 7 * 4 * 6 * 6 * 4
    assert run.get("a2") is run.kept["a2"]  # asked again: nothing runs
    assert run.kept["a"].shape == (7, 4, 6, 6)


def test_cut_describes_kept_tensors_with_a_symbolic_sample_axis():
    x = _x()
    run = SegmentedRun(residual_model(), {"x": x}, batch_size=4)
    run.get("a2")
    cut = run.cut()
    assert set(cut) == {"x", "a", "a2"}
    assert cut["x"] is run.graph_inputs["x"]  # a graph input keeps its own description
    t = cut["a"].type.tensor_type
    assert t.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in t.shape.dim] == ["n", 4, 6, 6]
    run.kept["h"] = np.zeros((7, 2), np.float16)
    assert run.cut()["h"].type.tensor_type.elem_type == TensorProto.FLOAT16
    run.kept["i"] = np.zeros((7, 2), np.int64)
    assert run.cut()["i"].type.tensor_type.elem_type == TensorProto.INT64


def test_shift_adds_along_the_channel_axis_of_a_kept_tensor():
    x = _x()
    run = SegmentedRun(residual_model(), {"x": x}, batch_size=4)
    a = run.get("a2").copy()
    delta = np.array([1.0, -2.0, 0.5, 3.0])
    run.shift("a2", delta)
    np.testing.assert_allclose(run.kept["a2"], a + delta.reshape(1, 4, 1, 1), rtol=1e-6)
    assert run.kept["a2"].dtype == np.float32
    run.shift("a2", np.arange(6.0), axis=3)
    np.testing.assert_allclose(
        run.kept["a2"],
        a + delta.reshape(1, 4, 1, 1) + np.arange(6.0).reshape(1, 1, 1, 6),
        rtol=1e-6,
    )
    run.shift("not_kept", delta)  # nothing to shift: nothing happens
    assert "not_kept" not in run.kept
    # what later nodes read is the shifted tensor: b = Conv(a2 + delta)
    shifted = run.kept["a2"].copy()
    b = run.get("b")
    w2 = next(
        numpy_helper.to_array(t) for t in residual_model().graph.initializer if t.name == "w2"
    )
    want = torch.nn.functional.conv2d(
        torch.from_numpy(shifted), torch.from_numpy(w2.copy()), padding=1
    )
    np.testing.assert_allclose(b, want.numpy(), rtol=1e-4, atol=1e-5)


def test_a_tensor_without_a_sample_axis_is_returned_and_computed_again_later():
    x = _x(5)
    run = SegmentedRun(residual_model(), {"x": x}, batch_size=2)
    run.get("a")
    shape = run.get("cs")  # Shape(a): one [4] per batch, no sample axis
    assert shape.tolist() == [2, 4, 6, 6] * 2 + [1, 4, 6, 6]
    assert "cs" not in run.kept
    names = {run.nodes[i].name for i in run.done}
    assert "shape" not in names and {"c1", "r1"} <= names


def test_a_one_dimensional_tensor_per_sample_is_kept():
    """(n,) has a sample axis like any (n, ...) tensor: kept for its later reader, not recomputed."""
    from onnx import helper

    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Mul", ["s", "s"], ["y"], name="square"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    run = SegmentedRun(model, {"x": x}, batch_size=2)
    np.testing.assert_array_equal(run.get("s"), x.sum(1))
    assert "s" in run.kept and run.kept["s"].shape == (5,)
    assert {run.nodes[i].name for i in run.done} == {"sum"}
    np.testing.assert_array_equal(run.get("y"), x.sum(1) ** 2)


def _fixed_batch_model():
    """Conv -> Relu -> Reshape(x, [1, -1]) -> Gemm: exported for batch 1 (the dynamo and
    TorchScript exporters write a Flatten of a fixed-shape model this way)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
        nh.from_array(np.array([1, -1], np.int64), "shape"),
        nh.from_array(rng.normal(0, 0.1, (5, 4 * 8 * 8)).astype(np.float32), "fc"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
        h.make_node("Relu", ["c"], ["r"]),
        h.make_node("Reshape", ["r", "shape"], ["f"]),
        h.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 5])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_a_model_exported_for_batch_1_runs_one_sample_per_segment():
    """Kept tensors are declared with a free batch dim, but the model's own Reshape to [1, -1]
    takes one sample: every segment runs at the model's fixed batch (before: 32 samples into
    the Reshape, an ORT error), and the outputs are ORT's per sample."""
    from faaq_onnx.runtime.segments import SegmentedRun
    from faaq_onnx.runtime.session import make_session

    m = _fixed_batch_model()
    x = np.random.default_rng(1).normal(0, 1, (6, 3, 8, 8)).astype(np.float32)
    run = SegmentedRun(m, {"x": x}, batch_size=32)
    assert run.batch_size == 1
    relu = run.get("r")  # a first segment, kept
    y = run.get("y")  # a second one, fed from the kept tensor
    ref = make_session(m)
    for i in range(6):
        np.testing.assert_allclose(y[i : i + 1], ref.run(["y"], {"x": x[i : i + 1]})[0], rtol=1e-5)
    assert relu.shape == (6, 4, 8, 8)


def test_the_default_w4a8_quantizes_a_model_exported_for_batch_1(tmp_path):
    """GPTQ and bias correction run through segments: the plain command, end to end, on a
    fixed-batch export (the test above is the one that fails without the fix: here onnxsim's
    shapes let the Reshape's segment start at the model input)."""
    import onnx

    from faaq_onnx import quantize
    from faaq_onnx.config import QuantConfig

    src = tmp_path / "fixed.onnx"
    onnx.save(_fixed_batch_model(), src)
    x = np.random.default_rng(2).normal(0, 1, (12, 3, 8, 8)).astype(np.float32)
    result = quantize(
        str(src), {"x": x}, str(tmp_path / "q.onnx"), QuantConfig(scheme="w4a8", optimize="auto")
    )
    # corrections were made (auto then measures them: only made ones are measured), kept or not
    assert result.report["optimization"]["bias_correction_check"]["kept"] in ("all", "none")
    assert next(iter(result.report["verify"]["outputs"].values()))["sqnr_db"] > 10


def test_batches_of_a_per_sample_output_fill_one_array_and_others_are_joined():
    """A float output with a sample axis is written batch by batch into one array of every
    sample (no second copy when the batches are joined); an output that turns out to have no
    sample axis (here a batch whose length is not its row count) is joined from its batches,
    the rows already written included."""
    from faaq_onnx.runtime.segments import _Gathered

    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
    g = _Gathered(10)
    for start, b in zip((0, 4, 8), (batches[0], batches[1], batches[2][:2])):
        g.add(start, len(b), b)
    assert g.per_sample and g.buffer is not None and g.array() is g.buffer
    np.testing.assert_array_equal(g.array(), np.concatenate([*batches[:2], batches[2][:2]]))

    g = _Gathered(10)
    g.add(0, 4, batches[0])
    g.add(4, 4, batches[1])
    g.add(8, 2, batches[2])  # 4 rows where 2 samples remain: not a per-sample tensor
    assert not g.per_sample
    np.testing.assert_array_equal(g.array(), np.concatenate(batches))
