"""Graphs other exporters write get the integer kernels ORT's own quantizer gives them.

The acceptance check of quantization that follows the graph: on a model with a computed
SAME Pad, HardSigmoid*Mul and HardSwish behind Convs, a constant Pad before a depthwise
Conv, every weighted op runs on an integer kernel, no fewer than under ONNX Runtime's
`quantize_static`, and the output is no further from the float model's.
"""

from __future__ import annotations

import numpy as np
import pytest

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.runtime.kernels import kernel_report
from tests.conftest import run_model


@pytest.fixture
def foreign_calib():
    return {"input": np.random.default_rng(3).standard_normal((32, 3, 16, 16)).astype(np.float32)}


def _ort_quantize(src, calib, out):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"input": calib["input"][i : i + 1]} for i in range(len(calib["input"])))

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        src,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    return out


def _sqnr(ref, y):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2))


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_every_weighted_op_on_an_integer_kernel(foreign_cnn, foreign_calib, tmp_path, scheme):
    out = tmp_path / f"{scheme}.onnx"
    quantize(foreign_cnn, foreign_calib, str(out), QuantConfig(scheme=scheme, progress=False))
    weighted = kernel_report(str(out))["weighted_ops"]
    assert weighted["total"] == 4, weighted  # three Convs and the Gemm
    assert weighted["integer"] == 4, weighted["float"]


def test_at_least_ort_quantizers_kernels_and_fidelity(foreign_cnn, foreign_calib, tmp_path):
    ours = tmp_path / "faaq.onnx"
    quantize(foreign_cnn, foreign_calib, str(ours), QuantConfig(scheme="w8a8", progress=False))
    theirs = _ort_quantize(foreign_cnn, foreign_calib, str(tmp_path / "ort.onnx"))
    mine, ort = kernel_report(str(ours)), kernel_report(theirs)
    assert mine["weighted_ops"]["integer"] >= ort["weighted_ops"]["integer"]
    # node by node: what ORT runs on an integer kernel, faaq does too (or folded it away)
    ort_int = {q["node"] for q in ort["quantized_nodes"] if q["integer_kernel"]}
    mine_int = {q["node"] for q in mine["quantized_nodes"] if q["integer_kernel"]}
    import onnx

    mine_nodes = {n.name for n in onnx.load(str(ours)).graph.node}
    assert ort_int & mine_nodes <= mine_int, sorted(ort_int & mine_nodes - mine_int)
    assert len(ort_int & mine_nodes) >= 4
    x = {"input": np.random.default_rng(9).standard_normal((64, 3, 16, 16)).astype(np.float32)}
    ref = run_model(foreign_cnn, x)[0]
    assert _sqnr(ref, run_model(str(ours), x)[0]) >= _sqnr(ref, run_model(theirs, x)[0]) - 0.5


def test_kernel_report_sees_weights_held_in_constant_nodes(tmp_path):
    """Paddle and TF converters keep weights in Constant nodes; ORT's quantizer then writes
    Q(constant) -> DQ, which ORT folds at load: the report must count those weighted ops."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "wv")),
            helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    src = tmp_path / "const.onnx"
    onnx.save(model, src)
    calib = {"input": np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    theirs = _ort_quantize(str(src), calib, str(tmp_path / "ort.onnx"))
    weighted = kernel_report(theirs)["weighted_ops"]
    assert weighted["total"] == 1 and weighted["integer"] == 1


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_inputs_without_a_sample_axis_quantize_and_keep_the_users_interface(tmp_path, scheme):
    """A recurrent state laid out [2, B, 8] and a scalar input (silero-vad's state and sr),
    given one whole feed per sample: the model written takes and returns what the user's
    does, its weighted ops on integer kernels, close to the float model."""
    import onnx

    from faaq_onnx.graph import model_input_shapes
    from faaq_onnx.runtime.session import make_session
    from tests.passes.test_sample_axis import state_feeds, state_model

    src, out = tmp_path / "state.onnx", tmp_path / "q.onnx"
    onnx.save(state_model(), src)
    result = quantize(
        str(src), state_feeds(48), str(out), QuantConfig(scheme=scheme, progress=False)
    )
    written = onnx.load(out)
    assert model_input_shapes(written) == model_input_shapes(state_model())
    assert [o.name for o in written.graph.output] == ["y", "stateN"]
    f = state_feeds(8, seed=5)
    ref, got = make_session(state_model()), make_session(str(out))
    for i in range(8):
        feed = {"x": f["x"][i : i + 1], "state": f["state"][i], "gain": np.asarray(f["gain"][i])}
        for a, b in zip(ref.run(None, feed), got.run(None, feed)):
            assert a.shape == b.shape
            assert _sqnr(a, b) > (25 if scheme == "w8a8" else 12)
    assert set(result.report["verify"]["outputs"]) == {"y", "stateN"}  # each checked per sample
    assert kernel_report(str(out))["weighted_ops"]["integer"] >= 1


def test_weighted_ops_only_inside_if_branches_are_quantized_there(tmp_path):
    """silero-vad keeps its whole network inside an If on the sample rate: the branch the
    samples take is quantized (its output declared without a shape, as exporters write
    subgraphs), the other left float."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    w = nh.from_array(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32), "W")
    branch = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["y1"])],
        "b",
        [],
        [h.make_tensor_value_info("y1", T.FLOAT, None)],
        [w],
    )
    other = h.make_graph(
        [h.make_node("Identity", ["x"], ["y2"])],
        "c",
        [],
        [h.make_tensor_value_info("y2", T.FLOAT, None)],
    )
    g = h.make_graph(
        [h.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)],
        "g",
        [
            h.make_tensor_value_info("x", T.FLOAT, ["B", 4]),
            h.make_tensor_value_info("c", T.BOOL, []),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, ["B", 4])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "if.onnx")
    x = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    calib = {"x": x, "c": np.ones(12, bool)}
    result = quantize(
        str(tmp_path / "if.onnx"),
        calib,
        str(tmp_path / "q.onnx"),
        QuantConfig(progress=False, calib_size=8, verify_samples=4),
    )
    from faaq_onnx.runtime.session import make_session

    then = next(a.g for a in result.model.graph.node[0].attribute if a.name == "then_branch")
    assert "DequantizeLinear" in [n.op_type for n in then.node]
    assert [e["quantized"] for e in result.report["branches"]] == [True, False]
    got = make_session(str(tmp_path / "q.onnx")).run(None, {"x": x[:2], "c": np.array(True)})[0]
    assert _sqnr(x[:2] @ nh.to_array(w), got) > 25


def test_weighted_ops_only_inside_a_loop_are_named_in_the_refusal(tmp_path):
    """A Loop body is not quantized: the one-line error says where the weighted ops are,
    not that there are none."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from faaq_onnx.errors import FaaqError

    body = h.make_graph(
        [
            h.make_node("Identity", ["cond_in"], ["cond_out"]),
            h.make_node("MatMul", ["v_in", "W"], ["v_out"]),
        ],
        "body",
        [
            h.make_tensor_value_info("i", T.INT64, []),
            h.make_tensor_value_info("cond_in", T.BOOL, []),
            h.make_tensor_value_info("v_in", T.FLOAT, None),
        ],
        [
            h.make_tensor_value_info("cond_out", T.BOOL, []),
            h.make_tensor_value_info("v_out", T.FLOAT, None),
        ],
        [nh.from_array(np.eye(4, dtype=np.float32), "W")],
    )
    g = h.make_graph(
        [
            h.make_node("Constant", [], ["n"], value=nh.from_array(np.array(2, np.int64))),
            h.make_node("Constant", [], ["t"], value=nh.from_array(np.array(True))),
            h.make_node("Loop", ["n", "t", "x"], ["y"], body=body),
        ],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["B", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["B", 4])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "loop.onnx")
    with pytest.raises(FaaqError, match=r"weighted ops \(1 MatMul\) are all inside If/Loop/Scan"):
        quantize(
            str(tmp_path / "loop.onnx"),
            {"x": np.ones((4, 4), np.float32)},
            str(tmp_path / "q.onnx"),
            QuantConfig(progress=False),
        )
    assert not (tmp_path / "q.onnx").exists()


def test_a_budget_on_a_graph_exported_for_a_batch_of_one(tmp_path):
    """The budget's sensitivity sweep runs each group's suffix from kept float tensors, at the
    batch the model fixes (1 here: Conv, Relu, Reshape to [1, -1], Gemm): fed 8 at once, the
    Reshape made the Gemm fail (EfficientNet-Lite0's TorchScript export and silero-vad's 16 kHz
    model crashed there)."""
    import onnx

    from tests.runtime.test_segments_state import _fixed_batch_model

    src, out = tmp_path / "b1.onnx", tmp_path / "q.onnx"
    onnx.save(_fixed_batch_model(), src)
    calib = {"x": np.random.default_rng(2).standard_normal((16, 3, 8, 8)).astype(np.float32)}
    result = quantize(
        str(src),
        calib,
        str(out),
        QuantConfig(progress=False),
        budget="avg-bits=6",
        candidates="w4a8,w8a8",
        cache_dir=False,
    )
    widths = {str(c) for c in result.plan.choices.values()}
    assert widths == {"w4a8", "w8a8"}  # a mixed plan, from a measured sweep
    assert result.report["verify"]["outputs"]["y"]["sqnr_db"] > 15
