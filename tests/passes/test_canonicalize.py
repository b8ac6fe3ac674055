import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.graph import to_proto
from faaq_onnx.model_io import load_model
from faaq_onnx.passes.canonicalize import canonicalize
from faaq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from tests.conftest import build_tiny_cnn, run_model


def test_batchnorm_folded_and_outputs_unchanged(tiny_cnn, cnn_calib):
    model, _ = canonicalize(load_model(tiny_cnn))
    ops = [n.op_type for n in model.graph]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2
    x = {"input": cnn_calib["input"][:4]}
    np.testing.assert_allclose(run_model(to_proto(model), x)[0], run_model(tiny_cnn, x)[0], rtol=1e-4, atol=1e-5)


def test_fold_pass_reports_change():
    model = ir.from_proto(build_tiny_cnn())
    assert FoldBatchNormPass()(model).modified
    assert not FoldBatchNormPass()(model).modified


def test_constant_node_weights_become_initializers(tmp_path):
    w = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w"), name="const_w"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 10
    onnx.save(m, tmp_path / "c.onnx")
    model, _ = canonicalize(load_model(tmp_path / "c.onnx"), simplify=False)
    conv = next(n for n in model.graph if n.op_type == "Conv")
    assert conv.inputs[1].is_initializer()


def test_old_opset_upgraded_when_asked(tmp_path):
    m = build_tiny_cnn(opset=11)
    m.ir_version = 10
    onnx.save(m, tmp_path / "old.onnx")
    model, _ = canonicalize(load_model(tmp_path / "old.onnx"), target_opset=21)
    assert model.opset_imports[""] == 21
