"""SpatialMeanToGlobalPoolPass: a ReduceMean over every spatial axis (the dynamo exporter's
global pooling) becomes GlobalAveragePool, Flatten behind it where keepdims=0, the function
unchanged; any other ReduceMean stays, and the quantized model runs the pooling and the
residual Add before it on integer kernels."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.passes.spatial_mean import SpatialMeanToGlobalPoolPass
from faaq_onnx.runtime.kernels import kernel_report
from tests.conftest import apply_pass_keeping_outputs, graph_model

X = [2, 4, 6, 6]


def _w(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _model(axes, keepdims=1, opset=18, mean_is_output=False, classifier=True):
    """Conv -> Add(residual) -> Relu -> ReduceMean(axes) -> Flatten -> Gemm (or -> Relu)."""
    inits = {"w": _w(4, 4, 3, 3), "fw": _w(3, 4, seed=2), "fb": _w(3, seed=3)}
    if opset >= 18:
        inits["axes"] = np.array(axes, np.int64)
        mean = helper.make_node("ReduceMean", ["r", "axes"], ["m"], name="mean", keepdims=keepdims)
    else:
        mean = helper.make_node(
            "ReduceMean", ["r"], ["m"], name="mean", axes=axes, keepdims=keepdims
        )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "x"], ["a"], name="residual"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        mean,
    ]
    if classifier:
        nodes += [
            helper.make_node("Flatten", ["m"], ["f"], name="flatten", axis=1),
            helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
        ]
    else:
        nodes.append(helper.make_node("Relu", ["m"], ["y"], name="after"))
    outs = ["y", "m"] if mean_is_output else ["y"]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, []) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def _rewrite(proto):
    """(modified, op types after); outputs must not change."""
    feeds = {"x": np.random.default_rng(0).standard_normal(X).astype(np.float32)}
    modified, after = apply_pass_keeping_outputs(SpatialMeanToGlobalPoolPass(), proto, feeds)
    return modified, [n.op_type for n in after.graph.node]


@pytest.mark.parametrize("axes", [[2, 3], [-1, -2], [3, 2]])
def test_a_mean_over_the_spatial_axes_becomes_global_average_pool(axes):
    modified, ops = _rewrite(_model(axes))
    assert modified and "ReduceMean" not in ops and "GlobalAveragePool" in ops


@pytest.mark.parametrize("opset", [13, 18])
def test_keepdims_0_adds_a_flatten_with_axes_as_attribute_or_input(opset):
    modified, ops = _rewrite(_model([2, 3], keepdims=0, opset=opset))
    assert modified
    assert ops[ops.index("GlobalAveragePool") + 1] == "Flatten"


@pytest.mark.parametrize("axes", [[1, 2, 3], [3], [0, 2, 3]])
def test_a_mean_over_other_axes_stays(axes):
    modified, ops = _rewrite(_model(axes, classifier=False))
    assert not modified and "ReduceMean" in ops


def test_a_mean_the_user_reads_as_an_output_stays():
    modified, ops = _rewrite(_model([2, 3], mean_is_output=True))
    assert not modified and "ReduceMean" in ops


def test_quantized_the_pooling_and_the_residual_add_run_on_integer_kernels(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    import onnx

    onnx.save(_model([-1, -2]), src)
    calib = {"x": np.random.default_rng(4).standard_normal([16, *X[1:]]).astype(np.float32)}
    quantize(str(src), calib, str(out), QuantConfig(scheme="w8a8", progress=False))
    runs = {q["node"]: q["runs_as"] for q in kernel_report(str(out))["quantized_nodes"]}
    assert runs["residual"] == "QLinearAdd"
    assert runs["mean"] == "QLinearGlobalAveragePool"


def _nhwc_squeeze_excite(perm=(0, 3, 1, 2), keepdims=1):
    """tf2onnx's squeeze-excite on an NHWC map: x (NCHW) -> Transpose to NHWC -> Relu ->
    ReduceMean(axes 1, 2) -> Transpose `perm` -> Conv 1x1."""
    inits = {"w": _w(4, 4, 1, 1), "axes": np.array([1, 2], np.int64)}
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["t"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r", "axes"], ["m"], name="mean", keepdims=keepdims),
        helper.make_node("Transpose", ["m"], ["mt"], name="to_nchw", perm=list(perm)),
        helper.make_node("Conv", ["mt", "w"], ["y"], name="excite"),
    ]
    return graph_model(nodes, X, inits, opset=18)


def test_an_nhwc_mean_before_the_layout_transpose_becomes_transpose_then_pool():
    modified, ops = _rewrite(_nhwc_squeeze_excite())
    assert modified and "ReduceMean" not in ops
    assert ops[ops.index("GlobalAveragePool") - 1] == "Transpose"


def test_an_nhwc_mean_read_through_another_permutation_stays():
    modified, ops = _rewrite(_nhwc_squeeze_excite(perm=(0, 3, 2, 1)))
    assert not modified and "ReduceMean" in ops
