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
