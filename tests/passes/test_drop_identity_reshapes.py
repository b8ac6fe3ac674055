"""DropIdentityReshapesPass: a chain of Squeeze / Reshape / Unsqueeze / Flatten that ends in
its first input's shape (tf2onnx's squeeze-and-excitation: GlobalAveragePool -> Squeeze ->
Reshape NHWC -> Reshape NCHW -> Conv) is removed, the function unchanged; a chain that ends in
another shape, or in a graph output, stays; and the quantized block runs with no reshape left
between its integer kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.passes.drop_identity_reshapes import DropIdentityReshapesPass
from faaq_onnx.runtime.kernels import kernel_report
from tests.conftest import apply_pass_keeping_outputs, graph_model, optimized_op_types

C = 8
X = [1, C, 6, 6]


def _w(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3


def _se_block(back_shape=(1, C, 1, 1), excite_is_output=False, value_info=True):
    """Conv -> GlobalAveragePool -> Squeeze -> Reshape [1,1,1,C] -> Reshape `back_shape` ->
    Conv 1x1 -> Sigmoid -> Mul(conv output, gate) -> Conv."""
    inits = {
        "w0": _w(C, C, 3, 3),
        "w1": _w(C, C, 1, 1, seed=2),
        "w2": _w(C, C, 3, 3, seed=3),
        "axes": np.array([2, 3], np.int64),
        "nhwc": np.array([1, 1, 1, C], np.int64),
        "back": np.array(back_shape, np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c0"], ["p"], name="pool"),
        helper.make_node("Squeeze", ["p", "axes"], ["s"], name="squeeze"),
        helper.make_node("Reshape", ["s", "nhwc"], ["r1"], name="to_nhwc"),
        helper.make_node("Reshape", ["r1", "back"], ["r2"], name="to_nchw"),
        helper.make_node("Conv", ["r2", "w1"], ["e"], name="excite"),
        helper.make_node("Sigmoid", ["e"], ["g"], name="gate"),
        helper.make_node("Mul", ["c0", "g"], ["m"], name="scale"),
        helper.make_node("Conv", ["m", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    outs = ["y", "r2"] if excite_is_output else ["y"]
    return graph_model(nodes, X, inits, outs, infer=value_info)


def _rewrite(proto):
    feeds = {"x": np.random.default_rng(0).standard_normal(X).astype(np.float32)}
    modified, after = apply_pass_keeping_outputs(DropIdentityReshapesPass(), proto, feeds)
    return modified, [n.op_type for n in after.graph.node]


@pytest.mark.parametrize("value_info", [True, False])
def test_a_chain_back_to_its_input_shape_is_removed(value_info):
    modified, ops = _rewrite(_se_block(value_info=value_info))
    assert modified
    assert "Squeeze" not in ops and "Reshape" not in ops
    assert ops[ops.index("GlobalAveragePool") + 1] == "Conv"


def test_a_chain_that_ends_in_another_shape_stays():
    modified, ops = _rewrite(_classifier())
    assert not modified and ops.count("Reshape") == 1 and "Flatten" in ops


def _classifier():
    """Conv -> GlobalAveragePool -> Reshape [1, 1, 1, C] -> Flatten -> Gemm: the chain ends
    in [1, C], not in the pooled map's [1, C, 1, 1]."""
    inits = {
        "w0": _w(C, C, 3, 3),
        "fw": _w(3, C, seed=4),
        "nhwc": np.array([1, 1, 1, C], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c0"], ["p"], name="pool"),
        helper.make_node("Reshape", ["p", "nhwc"], ["r1"], name="to_nhwc"),
        helper.make_node("Flatten", ["r1"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1),
    ]
    return graph_model(nodes, X, inits)


def test_a_chain_the_user_reads_as_an_output_stays():
    modified, ops = _rewrite(_se_block(excite_is_output=True))
    assert not modified and ops.count("Reshape") == 2 and "Squeeze" in ops


def test_quantized_no_layout_transposes_are_left_around_the_block(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_se_block(), src)
    calib = {"x": np.random.default_rng(4).standard_normal([16, *X[1:]]).astype(np.float32)}
    quantize(str(src), calib, str(out), QuantConfig(scheme="w8a8", progress=False))
    runs = {q["node"]: q["runs_as"] for q in kernel_report(str(out))["quantized_nodes"]}
    assert runs["excite"] == "QLinearConv" and runs["pool"] == "QLinearGlobalAveragePool"
    ops = optimized_op_types(out)
    assert "Reshape" not in ops and "Squeeze" not in ops
