from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.model_io import load_model
from tests.conftest import build_tiny_cnn


def test_loads_a_valid_model(tiny_cnn):
    model = load_model(tiny_cnn)
    assert any(n.op_type == "Conv" for n in model.graph)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"this is not a protobuf at all \xff\xfe", "not"),
    ],
)
def test_not_onnx(tmp_path, content, match):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(FaaqError, match=match):
        load_model(p)


def test_truncated_file(tmp_path, tiny_cnn):
    data = Path(tiny_cnn).read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaaqError):
        load_model(p)


def test_missing_file(tmp_path):
    with pytest.raises(FaaqError, match="not found"):
        load_model(tmp_path / "nope.onnx")


def test_custom_domain_op_is_named(tmp_path):
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="fancy")
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    m.ir_version = 10
    p = tmp_path / "custom.onnx"
    onnx.save(m, p)
    with pytest.raises(FaaqError, match=r"unsupported op 'FancyOp'.*fancy"):
        load_model(p)


def test_unsupported_opset(tmp_path):
    m = build_tiny_cnn(opset=17)
    m.opset_import[0].version = 99
    m.ir_version = 10
    p = tmp_path / "future.onnx"
    onnx.save(m, p)
    with pytest.raises(FaaqError, match="unsupported opset 99"):
        load_model(p)


def _external_model(tmp_path, location):
    """A one-initializer model whose weight is said to live in `location`."""
    import numpy as np
    from onnx import numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    return p


@pytest.mark.parametrize(
    "location,match",
    [
        ("../../etc/passwd", "points outside the model's folder"),
        ("/etc/passwd", "points outside the model's folder"),
        ("missing.data", "is missing"),
    ],
)
def test_external_data_outside_folder_or_missing_is_one_line(tmp_path, location, match):
    with pytest.raises(FaaqError, match=match):
        load_model(_external_model(tmp_path, location))


def test_truncated_external_data(tmp_path):
    (tmp_path / "w.data").write_bytes(b"\0" * 8)
    with pytest.raises(FaaqError, match="shorter"):
        load_model(_external_model(tmp_path, "w.data"))
