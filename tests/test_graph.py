import numpy as np

from faaq_onnx.analysis.calibrate import tap_model
from faaq_onnx.graph import prefix_model
from tests.conftest import build_tiny_cnn, run_model


def test_prefix_model_keeps_only_what_the_outputs_need():
    model = build_tiny_cnn()
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    part = prefix_model(model, [first.output[0]])
    assert [n.name for n in part.graph.node] == [first.name]
    assert {t.name for t in part.graph.initializer} == {i for i in first.input[1:] if i}
    x = {"input": np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)}
    whole = run_model(tap_model(model, [first.output[0]]), x)[-1]
    np.testing.assert_array_equal(run_model(part, x)[0], whole)


def test_prefix_model_starts_at_given_tensors():
    """With `given`, nothing before those tensors is kept: they are inputs, fed by the caller,
    and the part computes from them what the whole model computes from its input."""
    from onnx import TensorProto, helper

    model = build_tiny_cnn()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    first, second = convs[0], convs[1]
    cut = second.input[0]
    info = helper.make_tensor_value_info(cut, TensorProto.FLOAT, None)
    part = prefix_model(model, [second.output[0]], given={cut: info})
    assert [i.name for i in part.graph.input] == [cut]
    assert first.name not in {n.name for n in part.graph.node}
    assert first.input[1] not in {t.name for t in part.graph.initializer}
    x = {"input": np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)}
    *_, mid, out = run_model(tap_model(model, [cut, second.output[0]]), x)
    np.testing.assert_allclose(run_model(part, {cut: mid})[0], out, rtol=1e-6, atol=1e-6)
