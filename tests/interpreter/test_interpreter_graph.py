"""Whatever the interpreter cannot run is a one-line FaaqError naming the node and op."""

import pytest
import torch
from onnx import TensorProto, helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.interpreter import TorchGraph, check_supported


def _model(nodes, outputs, opset=18):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    g = helper.make_graph(
        nodes,
        "g",
        [x],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_a_missing_attribute_is_a_one_line_faaq_error_not_a_key_error():
    m = _model(
        [helper.make_node("Unsqueeze", ["x"], ["y"], name="unsq")], ["y"], opset=11
    )  # opset 11: axes attr
    with pytest.raises(
        FaaqError, match="'Unsqueeze' \\(node 'unsq'\\): attribute 'axes' is missing"
    ) as err:
        TorchGraph(m).run({"x": torch.zeros(1, 2, 4, 4)})
    assert "\n" not in str(err.value)


def test_a_second_output_the_interpreter_does_not_compute_is_refused_before_running():
    m = _model(
        [helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="pool")],
        ["y", "idx"],
    )
    with pytest.raises(FaaqError, match=r"'MaxPool' \(node 'pool'\).*'idx'"):
        check_supported(m)
