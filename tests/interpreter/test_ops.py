"""The torch interpreter computes what ONNX Runtime computes, op by op (the audit's gaps)."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError
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
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert r.dtype == g.numpy().dtype
        assert r.shape == tuple(g.shape)
        np.testing.assert_allclose(g.numpy(), r, atol=atol)


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 6])


@pytest.mark.parametrize("mode", ["edge", "reflect", "constant", "wrap"])
def test_pad_modes(mode):
    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
    m = _model(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode)],
        [X],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [pads],
    )
    _same_as_ort(
        m, {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)}
    )


def test_gather_with_negative_indices():
    idx = numpy_helper.from_array(np.array([[-1, 0], [2, -3]], np.int64), "i")
    m = _model(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)],
        [X],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [idx],
    )
    _same_as_ort(
        m, {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)}
    )


def test_constant_of_shape_keeps_int64():
    shape = numpy_helper.from_array(np.array([2, 2], np.int64), "s")
    value = numpy_helper.from_array(np.array([7], np.int64), "v")
    m = _model(
        [
            helper.make_node("ConstantOfShape", ["s"], ["c"], value=value),
            helper.make_node("Add", ["c", "s"], ["y"]),
        ],
        [X],  # int64 + int64: fails if c were float
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
        [shape],
    )
    _same_as_ort(m, {"x": np.zeros((2, 3, 5, 6), np.float32)})


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_with_asymmetric_pads(count_include_pad):
    m = _model(
        [
            helper.make_node(
                "AveragePool",
                ["x"],
                ["y"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[0, 0, 1, 2],
                count_include_pad=count_include_pad,
            )
        ],
        [X],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    _same_as_ort(
        m,
        {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)},
        atol=1e-5,
    )


def test_unsupported_attribute_is_named_when_the_interpreter_is_built():
    m = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", name="conv7")],
        [X],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")],
    )
    with pytest.raises(UnsupportedOp, match=r"conv7.*auto_pad"):
        TorchGraph(m)


def test_unknown_op_is_named():
    m = _model(
        [helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i", name="ein")],
        [X],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(UnsupportedOp, match="'Einsum' \\(node 'ein'\\)"):
        TorchGraph(m)


def test_slice_with_negative_steps():
    names = {"s": [4, -1], "e": [0, -10], "a": [3, 2], "st": [-2, -1]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in names.items()]
    m = _model(
        [helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
        [X],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    _same_as_ort(
        m, {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)}
    )


def _outputs(*names):
    return [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names]


X10 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 10])
SPLITS = {  # (opset, attributes, `split` input or None, outputs): every way an opset spells a Split
    "num_outputs 3 of 10: 4,4,2": (18, {"num_outputs": 3}, None, 3),
    "num_outputs 4 of 10: 3,3,3,1": (18, {"num_outputs": 4}, None, 4),
    "num_outputs 6 of 10: five 2s and an empty chunk": (18, {"num_outputs": 6}, None, 6),
    "split input, opset 18": (18, {}, [5, 2, 3], 3),
    "split input, opset 13": (13, {}, [1, 6, 3], 3),
    "equal parts, opset 13": (13, {}, None, 2),
    "split attribute, opset 11": (11, {"split": [2, 7, 1]}, None, 3),
}


@pytest.mark.parametrize("case", SPLITS)
def test_split_matches_ort(case):
    opset, attrs, split, n = SPLITS[case]
    outs = [f"y{i}" for i in range(n)]
    inputs, inits = ["x"], []
    if split is not None:
        inputs.append("s")
        inits.append(numpy_helper.from_array(np.array(split, np.int64), "s"))
    m = _model(
        [helper.make_node("Split", inputs, outs, axis=-1, **attrs)],
        [X10],
        _outputs(*outs),
        inits,
        opset,
    )
    _same_as_ort(m, {"x": np.arange(20, dtype=np.float32).reshape(2, 10)})


def test_split_that_ort_refuses_is_a_faaq_error_naming_the_node():
    m = _model(
        [helper.make_node("Split", ["x"], ["a", "b", "c", "d"], axis=1, num_outputs=4, name="sp")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        _outputs("a", "b", "c", "d"),
    )
    with pytest.raises(
        FaaqError, match=r"'Split' \(node 'sp'\).*negative final split"
    ):  # 5 in chunks of 2: 2,2,2,-1
        TorchGraph(m).run({"x": torch.zeros(2, 5)})


CONSTANTS = {
    "value_float": 1.5,
    "value_floats": [1.5, -2.0, 3.25],
    "value_int": 7,
    "value_ints": [3, -1, 4],
}


@pytest.mark.parametrize("kind", CONSTANTS)
def test_constant_attribute_kinds_match_ort(kind):
    m = _model(
        [
            helper.make_node("Constant", [], ["c"], **{kind: CONSTANTS[kind]}),
            helper.make_node("Identity", ["x"], ["y"]),
        ],
        [X],
        _outputs("c", "y"),
    )
    _same_as_ort(m, {"x": np.zeros((2, 3, 5, 6), np.float32)})


@pytest.mark.parametrize(
    "kind,value",
    [
        ("value_string", "abc"),
        ("value_strings", ["a", "b"]),
        ("value", helper.make_tensor("t", TensorProto.STRING, [1], [b"a"])),
    ],
)
def test_string_constants_are_refused_in_one_line_when_the_interpreter_is_built(kind, value):
    m = _model(
        [helper.make_node("Constant", [], ["c"], name="k9", **{kind: value})], [X], _outputs("c")
    )
    with pytest.raises(FaaqError, match=r"'Constant' \(node 'k9'\).*string") as err:
        TorchGraph(m)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "axis,outs",
    [
        (-1, ["y", "mean", "inv"]),
        (1, ["y", "mean", "inv"]),
        (2, ["y", "", "inv"]),
        (-2, ["y", "mean"]),
    ],
)
def test_layer_normalization_mean_and_inv_std_dev_match_ort(axis, outs):
    shape = [2, 3, 5, 6][axis:]
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "s"),
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "b"),
    ]
    m = _model(
        [helper.make_node("LayerNormalization", ["x", "s", "b"], outs, axis=axis, epsilon=1e-3)],
        [X],
        _outputs(*[o for o in outs if o]),
        inits,
    )
    _same_as_ort(m, {"x": rng.standard_normal((2, 3, 5, 6)).astype(np.float32)}, atol=1e-5)
