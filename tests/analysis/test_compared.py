"""Outputs compared at their logits where a model ends in a Softmax (analysis/compared.py)."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

from faaq_onnx.analysis.compared import compared_model, softmax_logits
from faaq_onnx.analysis.discover import discover_groups
from faaq_onnx.analysis.metrics import sqnr_ratios
from faaq_onnx.cli.summary import summary_line
from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.pipeline import Compilation, quantize
from tests.conftest import _save, build_tiny_mlp, run_model

F32 = onnx.TensorProto.FLOAT


def _mlp_softmax(opset: int = 17) -> onnx.ModelProto:
    """tiny_mlp whose logits `y` go through a Softmax to the output `probs`."""
    m = build_tiny_mlp(opset=opset)
    m.graph.node.append(helper.make_node("Softmax", ["y"], ["probs"], name="softmax", axis=-1))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("probs", F32, ["batch", 10]))
    m.ir_version = 10
    return m


def _qgraph(m: onnx.ModelProto, coverage: str = "gain"):
    return discover_groups(ir.from_proto(m), coverage=coverage)


def test_a_softmax_output_is_compared_at_its_input():
    m = _mlp_softmax()
    assert softmax_logits(m, _qgraph(m)) == {"probs": "y"}
    plain = build_tiny_mlp()
    assert softmax_logits(plain, _qgraph(plain)) == {}  # logits already: compared as they are
    both = _mlp_softmax()  # logits and probabilities both outputs: the logits are compared once
    both.graph.output.append(helper.make_tensor_value_info("y", F32, ["batch", 10]))
    assert softmax_logits(both, _qgraph(both)) == {}


def _softmax_net(opset: int, flatten: bool, op: str = "Softmax") -> onnx.ModelProto:
    """x (n, 4, 8) -> MatMul -> logits (n, 4, 5) -> a Softmax over the last axis: as opset 13+
    writes it, or through Flatten(axis=2) -> Softmax -> Reshape, or (opset < 13) a Softmax at
    axis 2, which normalizes the input as flattened there."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm")]
    if flatten:
        nodes += [
            helper.make_node("Shape", ["logits"], ["shape"]),
            helper.make_node("Flatten", ["logits"], ["flat"], axis=2),
            helper.make_node(op, ["flat"], ["sm"], axis=1),
            helper.make_node("Reshape", ["sm", "shape"], ["probs"]),
        ]
    else:
        nodes.append(helper.make_node(op, ["logits"], ["probs"], axis=2))
    w = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32) + 3.0
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, ["n", 4, 8])],
        [helper.make_tensor_value_info("probs", F32, ["n", 4, 5])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_the_opset_13_form_of_an_inner_axis_softmax_is_followed_to_the_logits():
    """Flatten -> Softmax -> Reshape(Shape(logits)): the Flatten merges the samples' axis, so
    the tensor compared is the Flatten's input."""
    m = _softmax_net(17, flatten=True)
    assert softmax_logits(m, _qgraph(m)) == {"probs": "logits"}
    # a Reshape of something else is not the pattern
    m.graph.node[-1].CopyFrom(helper.make_node("Reshape", ["flat", "shape"], ["probs"]))
    assert softmax_logits(m, _qgraph(m)) == {}


def test_a_quantized_softmax_output_is_compared_as_it_is():
    """--coverage ort quantizes the Softmax (QLinearSoftmax): its output carries quantization
    error of its own, which a comparison at the logits would not see."""
    m = _mlp_softmax()
    q = _qgraph(m, coverage="ort")
    assert "probs" in {t for a in q.activations.values() for t in a.tensors}
    assert softmax_logits(m, q) == {}


def test_compared_model_swaps_outputs_or_adds_them_in_front():
    m = _mlp_softmax()
    x = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    raw = run_model(build_tiny_mlp(), x)[0]
    centred = raw - raw.mean(1, keepdims=True)  # the logits less what the Softmax ignores
    swapped = compared_model(m, {"probs": "y"})
    assert [o.name for o in swapped.graph.output] == ["y"]
    assert "Softmax" not in {n.op_type for n in swapped.graph.node}
    np.testing.assert_allclose(run_model(swapped, x)[0], centred, rtol=1e-5, atol=1e-6)
    kept = compared_model(m, {"probs": "y"}, keep=True)
    assert [o.name for o in kept.graph.output] == ["y", "probs"]
    logits, probs = run_model(kept, x)
    np.testing.assert_allclose(logits, centred, rtol=1e-5, atol=1e-6)
    e = np.exp(raw - raw.max(1, keepdims=True))  # the model's own output is as it was
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert [o.name for o in m.graph.output] == ["probs"]  # the model given is not changed
    assert compared_model(m, {}) is m
    with pytest.raises(FaaqError, match="no tensor 'nope'"):
        compared_model(m, {"probs": "nope"})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(
    "opset,flatten", [(11, False), (11, True), (17, False), (17, True), (18, False), (21, True)]
)
def test_logits_are_compared_less_the_shift_their_softmax_ignores(opset, flatten, op):
    """Each step's 5 logits lose their common mean (the same for every form and opset: ReduceMean
    takes its axes as an input from opset 18), and the probabilities stay what they were."""
    m = _softmax_net(opset, flatten, op)
    assert softmax_logits(m, _qgraph(m)) == {"probs": "logits"}
    x = {"x": np.random.default_rng(1).standard_normal((3, 4, 8)).astype(np.float32)}
    raw = x["x"] @ onnx.numpy_helper.to_array(m.graph.initializer[0])
    swapped = compared_model(m, {"probs": "logits"})
    got = run_model(swapped, x)[0]
    np.testing.assert_allclose(got, raw - raw.mean(-1, keepdims=True), rtol=1e-4, atol=1e-5)
    probs = run_model(compared_model(m, {"probs": "logits"}, keep=True), x)[1]
    np.testing.assert_allclose(probs, run_model(m, x)[0], rtol=1e-5, atol=1e-7)


def test_logits_read_by_more_than_their_softmax_are_compared_as_they_are():
    m = _mlp_softmax()
    m.graph.node.append(helper.make_node("Relu", ["y"], ["r"], name="other"))
    m.graph.output.append(helper.make_tensor_value_info("r", F32, ["batch", 10]))
    x = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    got = run_model(compared_model(m, {"probs": "y"}), x)[0]
    np.testing.assert_allclose(got, run_model(build_tiny_mlp(), x)[0], rtol=1e-5)


def test_sweep_and_verification_measure_the_logits(tmp_path):
    """The probe's reference is the float logits, and the written model's SQNR in the report is
    the one of its logits against the float logits (not of the probabilities)."""
    src, out = _save(_mlp_softmax(), tmp_path / "m.onnx"), tmp_path / "q.onnx"
    calib = {"x": np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)}
    config = QuantConfig(scheme="w4a8", progress=False)
    comp = Compilation(src, calib, config, target_opset=21)
    assert comp.compared == {"probs": "y"}
    want = run_model(build_tiny_mlp(), {"x": calib["x"][:8]})[0]
    want -= want.mean(1, keepdims=True)
    np.testing.assert_allclose(comp.sweep._prober(8).reference[0], want, rtol=1e-5, atol=1e-6)

    result = quantize(src, calib, str(out), QuantConfig(scheme="w4a8", progress=False))
    verified = result.report["verify"]["outputs"]["probs"]
    assert verified["compared_at"] == "y"
    feeds = {"x": calib["x"]}  # verification reuses the calibration samples here
    ref = run_model(compared_model(src, {"probs": "y"}), feeds)[0]
    got = run_model(compared_model(str(out), {"probs": "y"}), feeds)[0]
    assert verified["sqnr_db"] == pytest.approx(
        10 * np.log10(np.mean(sqnr_ratios(ref, got))), abs=1e-3
    )
    assert "at the logits 'y'" in summary_line(result.report)


def _classifier_with_label() -> onnx.ModelProto:
    """skl2onnx's form: outputs `label` (int64, ArgMax of the probabilities) first, then
    `probabilities` (Softmax, then an Identity)."""
    m = build_tiny_mlp(opset=17)
    m.graph.node.extend(
        [
            helper.make_node("Softmax", ["y"], ["p"], name="softmax", axis=-1),
            helper.make_node("Identity", ["p"], ["probabilities"], name="named"),
            helper.make_node("ArgMax", ["p"], ["label"], name="argmax", axis=1, keepdims=0),
        ]
    )
    del m.graph.output[:]
    m.graph.output.extend(
        [
            helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", F32, ["batch", 10]),
        ]
    )
    m.ir_version = 10
    return m


def test_an_int_label_output_is_not_compared_and_probabilities_are_at_their_logits():
    from faaq_onnx.analysis.compared import compared_outputs

    m = _classifier_with_label()
    assert compared_outputs(m, _qgraph(m)) == {"label": None, "probabilities": "y"}
    assert [o.name for o in compared_model(m, {"label": None}).graph.output] == ["probabilities"]
    only_label = _classifier_with_label()
    del only_label.graph.output[1]  # nothing else to compare: the label is kept
    assert compared_outputs(only_label, _qgraph(only_label)) == {}


def test_the_report_and_the_sweep_leave_the_label_out(tmp_path):
    src, out = _save(_classifier_with_label(), tmp_path / "m.onnx"), tmp_path / "q.onnx"
    calib = {"x": np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)}
    result = quantize(
        src, calib, str(out), QuantConfig(scheme="w8a8", progress=False), budget="avg-bits=6"
    )
    outputs = result.report["verify"]["outputs"]
    assert list(outputs) == ["probabilities"] and outputs["probabilities"]["compared_at"] == "y"
    assert outputs["probabilities"]["sqnr_db"] < 80  # the label's exact matches inflated it
    assert run_model(onnx.load(str(out)), {"x": calib["x"][:4]})[0].dtype == np.int64
