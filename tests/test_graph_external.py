"""graph.to_proto keeps external weights where they are, under absolute paths."""

import os

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.graph import to_proto


def test_external_locations_become_absolute(tmp_path, monkeypatch):
    w = np.arange(256, dtype=np.float32).reshape(16, 16)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32([1.0]), "b")],
    )
    onnx.save_model(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        location="m.data",
        size_threshold=512,
    )
    model = ir.load(str(tmp_path / "m.onnx"))
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: a relative location would point nowhere
    proto = to_proto(model)
    locations = {
        t.name: next(e.value for e in t.external_data if e.key == "location")
        for t in proto.graph.initializer
        if t.external_data
    }
    assert locations == {"w": os.path.abspath(tmp_path / "m.data")}
    b = next(t for t in proto.graph.initializer if t.name == "b")
    assert not b.external_data and numpy_helper.to_array(b).tolist() == [1.0]
