"""A constant scale or shift behind a Conv folds into its weight and bias (Paddle's affines)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from faaq_onnx.graph import to_proto
from faaq_onnx.passes.fold_conv_affine import FoldConvAffinePass
from tests.conftest import graph_model, run_model

RNG = np.random.default_rng(0)


def affine_net(scale_shape, shift_shape, bias: bool = True, extra_reader: bool = False):
    """Conv(x, w[, b]) * s + t -> Relu, opset 13."""
    inits = [nh.from_array(RNG.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32), "w")]
    conv_in = ["x", "w"]
    if bias:
        inits.append(nh.from_array(RNG.normal(0, 0.1, 6).astype(np.float32), "b"))
        conv_in.append("b")
    nodes = [h.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1], name="conv")]
    y = "c"
    if scale_shape is not None:
        inits.append(nh.from_array(RNG.uniform(0.5, 2, scale_shape).astype(np.float32), "s"))
        nodes.append(h.make_node("Mul", ["s", y], ["cs"], name="scale"))
        y = "cs"
    if shift_shape is not None:
        inits.append(nh.from_array(RNG.normal(0, 0.5, shift_shape).astype(np.float32), "t"))
        nodes.append(h.make_node("Add", [y, "t"], ["ct"], name="shift"))
        y = "ct"
    nodes.append(h.make_node("Relu", [y], ["r"], name="relu"))
    outputs = [h.make_tensor_value_info("r", T.FLOAT, ["N", 6, 8, 8])]
    if extra_reader:
        outputs.append(h.make_tensor_value_info("c", T.FLOAT, ["N", 6, 8, 8]))
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])], outputs, inits
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


X = {"x": RNG.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize(
    "scale,shift,bias",
    [
        ((1,), (1,), True),  # scalars (PP-OCRv4's learnable affine)
        ((6, 1, 1), (1, 6, 1, 1), True),  # per channel
        (None, (1, 6, 1, 1), False),  # a bias-free Conv and its bias as an Add
        ((), None, False),
    ],
)
def test_the_affine_folds_and_the_function_is_kept(scale, shift, bias):
    m = affine_net(scale, shift, bias)
    model = ir.from_proto(m)
    assert FoldConvAffinePass()(model).modified
    proto = to_proto(model)
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu"]
    assert len(proto.graph.node[0].input) == 3  # a bias now, whether or not there was one
    np.testing.assert_allclose(run_model(proto, X)[0], run_model(m, X)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "scale,shift,extra",
    [
        ((1, 6, 8, 1), None, False),  # varies over a spatial axis: not per channel
        ((3, 1, 1), None, False),  # another channel count
        ((1,), None, True),  # the Conv's own output is read elsewhere
    ],
)
def test_what_is_not_a_per_channel_affine_of_the_conv_alone_stays(scale, shift, extra):
    m = affine_net(scale, shift, extra_reader=extra)
    model = ir.from_proto(m)
    if scale == (3, 1, 1):
        with pytest.raises(Exception):  # noqa: B017  (the model itself does not broadcast)
            onnx.checker.check_model(m, full_check=True)
        return
    assert not FoldConvAffinePass()(model).modified


def test_a_bias_add_and_a_batchnorm_behind_a_conv_transpose_fold_into_it(tmp_path):
    """PP-OCRv4 det's head: ConvTranspose (no bias) -> Add(bias) -> BatchNormalization."""
    from faaq_onnx.model_io import load_model
    from faaq_onnx.passes.canonicalize import canonicalize

    rng = np.random.default_rng(3)
    c = 4
    inits = [
        nh.from_array(rng.normal(0, 0.4, (6, c, 2, 2)).astype(np.float32), "w"),
        nh.from_array(rng.normal(0, 0.5, (1, c, 1, 1)).astype(np.float32), "t"),
        nh.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "g"),
        nh.from_array(rng.normal(0, 0.2, c).astype(np.float32), "be"),
        nh.from_array(rng.normal(0, 0.2, c).astype(np.float32), "mu"),
        nh.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "var"),
        nh.from_array(np.array(1.3, np.float32), "s"),
    ]
    nodes = [
        h.make_node("ConvTranspose", ["x", "w"], ["ct"], strides=[2, 2], name="up"),
        h.make_node("Mul", ["ct", "s"], ["cts"], name="scale"),
        h.make_node("Add", ["cts", "t"], ["cb"], name="bias"),
        h.make_node("BatchNormalization", ["cb", "g", "be", "mu", "var"], ["bn"], name="bn"),
        h.make_node("Sigmoid", ["bn"], ["y"], name="sig"),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 6, 4, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", c, 8, 8])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    path = str(tmp_path / "ct.onnx")
    onnx.save(m, path)
    model, _ = canonicalize(load_model(path), target_opset=13, simplify=False)
    proto = to_proto(model)
    assert [n.op_type for n in proto.graph.node] == ["ConvTranspose", "Sigmoid"]
    x = {"x": rng.normal(0, 1, (2, 6, 4, 4)).astype(np.float32)}
    np.testing.assert_allclose(run_model(proto, x)[0], run_model(m, x)[0], rtol=1e-5, atol=1e-5)


def test_the_affine_folds_when_shapes_are_known_too():
    """Canonicalization infers shapes before this pass: with the Conv output's rank known (equal
    to the weight's), the fold still happens."""
    m = onnx.shape_inference.infer_shapes(affine_net((1,), (1, 6, 1, 1)))
    model = ir.from_proto(m)
    conv_out = next(n for n in model.graph if n.op_type == "Conv").outputs[0]
    assert conv_out.shape is not None and len(conv_out.shape) == 4
    assert FoldConvAffinePass()(model).modified
    proto = to_proto(model)
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu"]


def _second_conv(m, share: str):
    """A second Conv reading the first one's weight or bias too (its output a graph output)."""
    conv2_in = ["x", "w", "b"] if share == "b" else ["x", "w"]
    if share == "b":
        m.graph.initializer.append(nh.from_array(np.zeros((6, 3, 3, 3), np.float32), "w2"))
        conv2_in[1] = "w2"
    m.graph.node.append(h.make_node("Conv", conv2_in, ["c2"], pads=[1, 1, 1, 1], name="conv2"))
    m.graph.output.append(h.make_tensor_value_info("c2", T.FLOAT, ["N", 6, 8, 8]))
    return m


@pytest.mark.parametrize("share", ["w", "b"])
def test_a_weight_or_bias_another_conv_reads_is_left_alone(share):
    """Folding would change what the other Conv computes: nothing folds."""
    m = _second_conv(affine_net((1,), (1,), bias=True), share)
    model = ir.from_proto(m)
    assert not FoldConvAffinePass()(model).modified
    np.testing.assert_allclose(
        run_model(to_proto(model), X)[1], run_model(m, X)[1], rtol=1e-6, atol=1e-6
    )


def test_a_mul_by_a_computed_tensor_stays():
    m = affine_net((1,), None)
    s = next(i for i in m.graph.initializer if i.name == "s")
    m.graph.initializer.remove(s)
    m.graph.node.insert(0, h.make_node("ReduceMean", ["x"], ["s"], keepdims=1, name="mean"))
    assert not FoldConvAffinePass()(ir.from_proto(m)).modified


def test_a_scale_of_one_element_at_the_conv_outputs_rank_folds():
    """A (1, 1, 1, 1) constant is a scalar however many dims it has."""
    m = affine_net((1, 1, 1, 1), None)
    model = ir.from_proto(m)
    assert FoldConvAffinePass()(model).modified
    np.testing.assert_allclose(
        run_model(to_proto(model), X)[0], run_model(m, X)[0], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("op", ["Mul", "Add"])
def test_a_grouped_conv_transpose_takes_a_shift_but_not_a_scale(op):
    """Its output channels (groups x C_out/g) are not one weight axis: a per-channel scale
    cannot be folded into the weight, a per-channel shift still folds into the bias."""
    rng = np.random.default_rng(5)
    inits = [
        nh.from_array(rng.normal(0, 0.4, (4, 2, 2, 2)).astype(np.float32), "w"),  # g=2: 4 out
        nh.from_array(rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32), "k"),
    ]
    nodes = [
        h.make_node("ConvTranspose", ["x", "w"], ["ct"], strides=[2, 2], group=2, name="up"),
        h.make_node(op, ["ct", "k"], ["y"], name="affine"),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 3, 3])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    model = ir.from_proto(m)
    assert FoldConvAffinePass()(model).modified == (op == "Add")
    x = {"x": rng.normal(0, 1, (2, 4, 3, 3)).astype(np.float32)}
    np.testing.assert_allclose(
        run_model(to_proto(model), x)[0], run_model(m, x)[0], rtol=1e-5, atol=1e-5
    )


def test_an_affine_that_is_the_graph_output_folds_and_the_output_stays():
    """The Mul's output is the model's output: the Conv now produces it."""
    m = affine_net((6, 1, 1), None)
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    m.graph.node.remove(relu)
    m.graph.output[0].name = "cs"
    model = ir.from_proto(m)
    assert FoldConvAffinePass()(model).modified
    proto = to_proto(model)
    assert [n.op_type for n in proto.graph.node] == ["Conv"]
    assert len(proto.graph.output) == 1
    np.testing.assert_allclose(run_model(proto, X)[0], run_model(m, X)[0], rtol=1e-5, atol=1e-5)


def _nhwc_affine_net(scale_shape, shift_shape):
    """tf2onnx's form: Conv -> Transpose to NHWC -> * s + t (along the last axis) -> Relu."""
    inits = {
        "w": RNG.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32),
        "s": RNG.uniform(0.5, 2, scale_shape).astype(np.float32),
        "t": RNG.normal(0, 0.5, shift_shape).astype(np.float32),
    }
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        h.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 3, 1], name="to_nhwc"),
        h.make_node("Mul", ["ct", "s"], ["cs"], name="scale"),
        h.make_node("Add", ["cs", "t"], ["ca"], name="shift"),
        h.make_node("Relu", ["ca"], ["r"], name="relu"),
    ]
    return graph_model(nodes, ["N", 3, 8, 8], inits, ["r"], opset=13, infer=False)


@pytest.mark.parametrize(
    "scale,shift,folds",
    [
        ((6,), (1, 1, 1, 6), True),  # per channel along the NHWC channel axis: folds
        ((8, 1, 1), (6,), False),  # along H after the Transpose: not per output channel
    ],
)
def test_an_affine_behind_a_layout_transpose_folds_through_it(scale, shift, folds):
    m = _nhwc_affine_net(scale, shift)
    model = ir.from_proto(m)
    FoldConvAffinePass()(model)
    after = to_proto(model)
    ops = [n.op_type for n in after.graph.node]
    assert (ops == ["Conv", "Transpose", "Relu"]) == folds, ops
    np.testing.assert_allclose(run_model(after, X)[0], run_model(m, X)[0], rtol=1e-5, atol=1e-5)
