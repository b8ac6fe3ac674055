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
    np.testing.assert_allclose(
        run_model(to_proto(model), x)[0], run_model(tiny_cnn, x)[0], rtol=1e-4, atol=1e-5
    )


def test_fold_pass_reports_change():
    model = ir.from_proto(build_tiny_cnn())
    assert FoldBatchNormPass()(model).modified
    assert not FoldBatchNormPass()(model).modified


def test_constant_node_weights_become_initializers(tmp_path):
    w = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Constant", [], ["w"], value=numpy_helper.from_array(w, "w"), name="const_w"
        ),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
    )
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


def test_constant_zero_pad_folds_into_the_conv(foreign_cnn):
    """The constant Pad before the depthwise Conv becomes the Conv's pads; the Pad whose
    pads are computed from a dynamic shape stays; the function is unchanged."""
    model, _ = canonicalize(load_model(foreign_cnn))
    pads = [n for n in model.graph if n.op_type == "Pad"]
    assert [n.name for n in pads] == ["same_pad"]
    dw = next(n for n in model.graph if n.name == "conv2_dw")
    assert list(dw.attributes["pads"].value) == [1, 1, 1, 1]
    assert dw.inputs[0].name == "hsw1"
    x = {"input": np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(
        run_model(to_proto(model), x)[0], run_model(foreign_cnn, x)[0], rtol=1e-4, atol=1e-5
    )


def _pad_conv(pad_attrs=None, value=None, pads=(0, 0, 1, 2, 0, 0, 2, 1), conv_pads=(1, 0, 0, 1)):
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(pads, np.int64), "pads"),
        numpy_helper.from_array(w, "w"),
    ]
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    nodes = [
        helper.make_node("Pad", pad_inputs, ["xp"], name="pad", **(pad_attrs or {})),
        helper.make_node("Conv", ["xp", "w"], ["y"], pads=list(conv_pads), name="conv"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_pad_folding_adds_to_existing_pads_and_keeps_what_conv_cannot_express():
    from faaq_onnx.passes.fold_pad import FoldPadIntoConvPass

    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    proto = _pad_conv()
    model = ir.from_proto(proto)
    assert FoldPadIntoConvPass()(model).modified
    conv = next(iter(model.graph))
    assert conv.op_type == "Conv" and list(conv.attributes["pads"].value) == [2, 2, 2, 2]
    np.testing.assert_allclose(
        run_model(to_proto(model), x)[0], run_model(proto, x)[0], rtol=1e-4, atol=1e-5
    )
    for kept in (
        _pad_conv(value=1.0),
        _pad_conv({"mode": "reflect"}),
        _pad_conv(pads=(0, 1, 1, 1, 0, 0, 1, 1)),
        _pad_conv(pads=(0, 0, -1, 0, 0, 0, 1, 1)),
    ):
        assert not FoldPadIntoConvPass()(ir.from_proto(kept)).modified


def test_matmul_and_bias_add_become_one_gemm(foreign_cnn):
    """A classifier exported as MatMul + Add: ORT would fuse it into a float Gemm whose bias
    blocks QGemm; as a Gemm here its bias becomes faaq's int32 bias."""
    model, _ = canonicalize(load_model(foreign_cnn))
    ops = [n.op_type for n in model.graph]
    assert "MatMul" not in ops and ops.count("Gemm") == 1
    gemm = next(n for n in model.graph if n.op_type == "Gemm")
    assert [v.name for v in gemm.inputs[1:]] == ["fc.w", "fc.b"] and gemm.outputs[
        0
    ].name == "logits"
    x = {"input": np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(
        run_model(to_proto(model), x)[0], run_model(foreign_cnn, x)[0], rtol=1e-4, atol=1e-5
    )


def test_matmul_without_a_constant_bias_or_of_dynamic_rank_3_stays(tiny_mlp):
    from faaq_onnx.passes.fuse_matmul_add import FuseMatMulAddPass

    w = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [5]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [w],
    )
    assert not FuseMatMulAddPass()(ir.from_proto(helper.make_model(g))).modified  # bias is an input
    g3 = helper.make_graph(
        nodes,
        "g3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 5])],
        [w, numpy_helper.from_array(np.ones(5, np.float32), "b")],
    )
    assert not FuseMatMulAddPass()(
        ir.from_proto(helper.make_model(g3))
    ).modified  # a transformer's 3-D MatMul with a dynamic batch (ORT leaves it too)


def test_matmul_with_a_row_bias_fuses_and_a_broadcast_matrix_does_not():
    """A [1, N] bias is a Gemm bias; a bias Add with more rows is not."""
    from faaq_onnx.passes.fuse_matmul_add import FuseMatMulAddPass

    def model(bias):
        w = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
        b = numpy_helper.from_array(bias.astype(np.float32), "b")
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["y"]),
        ]
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
            [w, b],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    x = {"x": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)}
    row = model(np.arange(5).reshape(1, 5))
    fused = ir.from_proto(row)
    assert FuseMatMulAddPass()(fused).modified and [n.op_type for n in fused.graph] == ["Gemm"]
    np.testing.assert_allclose(run_model(to_proto(fused), x)[0], run_model(row, x)[0], rtol=1e-6)
    assert not FuseMatMulAddPass()(ir.from_proto(model(np.ones((3, 5))))).modified
