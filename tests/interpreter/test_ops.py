"""The torch interpreter computes what ONNX Runtime computes, op by op (the audit's gaps)."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.interpreter import TorchGraph, UnsupportedOp
from tests.conftest import run_model


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def _same_as_ort(model, feeds, atol=1e-6):
    ref = run_model(model, feeds)
    got, _ = TorchGraph(model).run({k: torch.from_numpy(v) for k, v in feeds.items()})
    for r, g in zip(ref, got):
        assert r.dtype == g.numpy().dtype
        np.testing.assert_allclose(g.numpy(), r, atol=atol)


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 6])


@pytest.mark.parametrize("mode", ["edge", "reflect", "constant", "wrap"])
def test_pad_modes(mode):
    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
    m = _model([helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode)], [X],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads])
    _same_as_ort(m, {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)})


def test_gather_with_negative_indices():
    idx = numpy_helper.from_array(np.array([[-1, 0], [2, -3]], np.int64), "i")
    m = _model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], [X],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [idx])
    _same_as_ort(m, {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)})


def test_constant_of_shape_keeps_int64():
    shape = numpy_helper.from_array(np.array([2, 2], np.int64), "s")
    value = numpy_helper.from_array(np.array([7], np.int64), "v")
    m = _model([helper.make_node("ConstantOfShape", ["s"], ["c"], value=value),
                helper.make_node("Add", ["c", "s"], ["y"])], [X],  # int64 + int64: fails if c were float
               [helper.make_tensor_value_info("y", TensorProto.INT64, None)], [shape])
    _same_as_ort(m, {"x": np.zeros((2, 3, 5, 6), np.float32)})


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_with_asymmetric_pads(count_include_pad):
    m = _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                 pads=[0, 0, 1, 2], count_include_pad=count_include_pad)], [X],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    _same_as_ort(m, {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)}, atol=1e-5)


def test_unsupported_attribute_is_named_when_the_interpreter_is_built():
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", name="conv7")], [X],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
               [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    with pytest.raises(UnsupportedOp, match="conv7.*auto_pad"):
        TorchGraph(m)


def test_unknown_op_is_named():
    m = _model([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i", name="ein")], [X],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(UnsupportedOp, match="'Einsum' \\(node 'ein'\\)"):
        TorchGraph(m)


def test_slice_with_negative_steps():
    names = {"s": [4, -1], "e": [0, -10], "a": [3, 2], "st": [-2, -1]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in names.items()]
    m = _model([helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])], [X],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    _same_as_ort(m, {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)})
