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


@pytest.mark.parametrize(
    "op,extra",
    [
        ("AveragePool", {"count_include_pad": 0}),
        ("AveragePool", {"count_include_pad": 1}),
        ("MaxPool", {}),
    ],
)
@pytest.mark.parametrize("shape,pads", [((1, 2, 9), [0, 1]), ((1, 2, 7, 7), [1, 1, 2, 2])])
def test_ceil_mode_pooling_drops_a_window_that_starts_in_the_end_padding(op, extra, shape, pads):
    """ORT drops a last window that would start inside the end padding; pooling the padded
    input would keep it (one more output cell per axis)."""
    nd = len(shape) - 2
    m = _model(
        [
            helper.make_node(
                op,
                ["x"],
                ["y"],
                kernel_shape=[3] * nd,
                strides=[3] * nd,
                pads=pads,
                ceil_mode=1,
                **extra,
            )
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    _same_as_ort(
        m, {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}, atol=1e-5
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
    with pytest.raises(FaaqError, match=r"'Constant' \(node 'k9'\).*a string value") as err:
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


# ---- the op table, op by op, against ONNX Runtime (non-default attributes everywhere) ----

_NP2ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}
_R = np.random.default_rng(7)


def _f(*shape):
    return _R.standard_normal(shape).astype(np.float32)


def _i(*vals):
    return np.array(vals, np.int64)


def _case(op, feeds, attrs=None, inits=None, opset=18, out=TensorProto.FLOAT, n_out=1, inputs=None):
    """(model, feeds): one `op` node reading `feeds` then `inits` (or `inputs`, by name)."""
    inits = inits or {}
    names = inputs if inputs is not None else [*feeds, *inits]
    outs = [f"y{k}" for k in range(n_out)]
    m = _model(
        [helper.make_node(op, names, outs, **(attrs or {}))],
        [helper.make_tensor_value_info(k, _NP2ONNX[v.dtype], v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, out, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
        opset,
    )
    return m, feeds


OP_CASES = {
    "Conv 2d strides dilations group bias": lambda: _case(
        "Conv",
        {"x": _f(2, 4, 9, 8)},
        {"strides": [2, 1], "dilations": [1, 2], "group": 2, "pads": [1, 2, 1, 2]},
        {"w": _f(6, 2, 3, 2), "b": _f(6)},
    ),
    "Conv 2d asymmetric pads": lambda: _case(
        "Conv",
        {"x": _f(1, 3, 7, 6)},
        {"pads": [0, 1, 2, 0], "strides": [2, 2]},
        {"w": _f(4, 3, 3, 3)},
    ),
    "Conv 1d": lambda: _case("Conv", {"x": _f(2, 3, 11)}, {"pads": [2, 1]}, {"w": _f(5, 3, 4)}),
    "Conv 3d": lambda: _case(
        "Conv", {"x": _f(1, 2, 5, 6, 4)}, {"pads": [1, 0, 1, 1, 0, 1]}, {"w": _f(3, 2, 3, 2, 3)}
    ),
    "ConvTranspose 2d strides output_padding group": lambda: _case(
        "ConvTranspose",
        {"x": _f(2, 4, 5, 4)},
        {"strides": [2, 3], "pads": [1, 0, 1, 0], "output_padding": [1, 2], "group": 2},
        {"w": _f(4, 3, 3, 3), "b": _f(6)},
    ),
    "ConvTranspose 1d": lambda: _case(
        "ConvTranspose", {"x": _f(1, 3, 6)}, {"strides": [2]}, {"w": _f(3, 2, 3)}
    ),
    "ConvTranspose 3d": lambda: _case(
        "ConvTranspose", {"x": _f(1, 2, 3, 4, 2)}, {}, {"w": _f(2, 3, 2, 2, 2)}
    ),
    "Gemm transA transB alpha beta": lambda: _case(
        "Gemm",
        {"a": _f(5, 3)},
        {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0},
        {"b": _f(4, 5), "c": _f(4)},
    ),
    "Gemm defaults": lambda: _case("Gemm", {"a": _f(3, 5)}, {}, {"b": _f(5, 4), "c": _f(3, 4)}),
    "Gemm no C": lambda: _case("Gemm", {"a": _f(3, 5)}, {"alpha": 3.0}, {"b": _f(5, 2)}),
    "MatMul": lambda: _case("MatMul", {"a": _f(2, 3, 4)}, {}, {"b": _f(4, 5)}),
    "Add": lambda: _case("Add", {"a": _f(2, 3), "b": _f(3)}),
    "Sub": lambda: _case("Sub", {"a": _f(2, 3), "b": _f(2, 1)}),
    "Mul": lambda: _case("Mul", {"a": _f(2, 3), "b": _f(3)}),
    "Div float": lambda: _case("Div", {"a": _f(2, 3), "b": _f(3) + 3}),
    "Div int truncates": lambda: _case(
        "Div", {"a": _i(-7, 7, -8, 9, 5), "b": _i(2, -2, 3, 4, -5)}, out=TensorProto.INT64
    ),
    "Pow": lambda: _case("Pow", {"a": np.abs(_f(2, 3)) + 0.5, "b": _f(3)}),
    "Sqrt": lambda: _case("Sqrt", {"a": np.abs(_f(2, 3))}),
    "Exp": lambda: _case("Exp", {"a": _f(2, 3)}),
    "Log": lambda: _case("Log", {"a": np.abs(_f(2, 3)) + 0.1}),
    "Neg": lambda: _case("Neg", {"a": _f(2, 3)}),
    "Abs": lambda: _case("Abs", {"a": _f(2, 3)}),
    "Reciprocal": lambda: _case("Reciprocal", {"a": np.abs(_f(2, 3)) + 0.5}),
    "Erf": lambda: _case("Erf", {"a": _f(2, 3)}),
    "Tanh": lambda: _case("Tanh", {"a": _f(2, 3)}),
    "Sigmoid": lambda: _case("Sigmoid", {"a": _f(2, 3)}),
    "HardSigmoid defaults": lambda: _case("HardSigmoid", {"a": 4 * _f(4, 5)}),
    "HardSigmoid alpha beta": lambda: _case(
        "HardSigmoid", {"a": 4 * _f(4, 5)}, {"alpha": 0.3, "beta": 0.4}
    ),
    "HardSwish": lambda: _case("HardSwish", {"a": 4 * _f(4, 5)}),
    "Relu": lambda: _case("Relu", {"a": _f(4, 5)}),
    "LeakyRelu default": lambda: _case("LeakyRelu", {"a": _f(4, 5)}),
    "LeakyRelu alpha": lambda: _case("LeakyRelu", {"a": _f(4, 5)}, {"alpha": 0.3}),
    "Gelu": lambda: _case("Gelu", {"a": 3 * _f(4, 5)}, opset=20),
    "Gelu tanh": lambda: _case("Gelu", {"a": 3 * _f(4, 5)}, {"approximate": "tanh"}, opset=20),
    "Clip inputs": lambda: _case(
        "Clip",
        {"a": _f(4, 5)},
        {},
        {"lo": np.array(-0.3, np.float32), "hi": np.array(0.6, np.float32)},
    ),
    "Clip max only": lambda: _case(
        "Clip", {"a": _f(4, 5)}, inits={"hi": np.array(0.2, np.float32)}, inputs=["a", "", "hi"]
    ),
    "Clip attributes opset 6": lambda: _case(
        "Clip", {"a": _f(4, 5)}, {"min": -0.4, "max": 0.1}, opset=6
    ),
    "Softmax axis": lambda: _case("Softmax", {"a": _f(2, 3, 4)}, {"axis": 1}),
    "Softmax default": lambda: _case("Softmax", {"a": _f(2, 3, 4)}),
    "LogSoftmax axis": lambda: _case("LogSoftmax", {"a": _f(2, 3, 4)}, {"axis": 0}),
    "MaxPool strides pads dilations": lambda: _case(
        "MaxPool",
        {"x": _f(2, 3, 9, 8)},
        {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2]},
    ),
    "MaxPool ceil": lambda: _case(
        "MaxPool",
        {"x": _f(1, 2, 8, 7)},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    ),
    "MaxPool 1d": lambda: _case(
        "MaxPool", {"x": _f(1, 2, 9)}, {"kernel_shape": [2], "strides": [2]}
    ),
    "MaxPool 3d": lambda: _case("MaxPool", {"x": _f(1, 2, 4, 5, 6)}, {"kernel_shape": [2, 2, 3]}),
    "AveragePool count pads": lambda: _case(
        "AveragePool",
        {"x": _f(1, 2, 7, 6)},
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    ),
    "AveragePool exclude pads": lambda: _case(
        "AveragePool", {"x": _f(1, 2, 7, 6)}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    ),
    "AveragePool ceil": lambda: _case(
        "AveragePool",
        {"x": _f(1, 2, 8, 7)},
        {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
    ),
    "AveragePool 1d asymmetric": lambda: _case(
        "AveragePool", {"x": _f(1, 2, 9)}, {"kernel_shape": [3], "strides": [2], "pads": [2, 0]}
    ),
    "AveragePool 1d": lambda: _case(
        "AveragePool", {"x": _f(1, 2, 9)}, {"kernel_shape": [3], "pads": [1, 1]}
    ),
    "AveragePool 3d asymmetric": lambda: _case(
        "AveragePool",
        {"x": _f(1, 2, 4, 5, 6)},
        {"kernel_shape": [2, 3, 2], "pads": [1, 0, 0, 0, 1, 1]},
    ),
    "AveragePool 3d": lambda: _case(
        "AveragePool", {"x": _f(1, 2, 4, 5, 6)}, {"kernel_shape": [2, 3, 2]}
    ),
    "GlobalAveragePool": lambda: _case("GlobalAveragePool", {"x": _f(2, 3, 4, 5)}),
    "GlobalMaxPool": lambda: _case("GlobalMaxPool", {"x": _f(2, 3, 4, 5)}),
    "ReduceMean axes attribute": lambda: _case(
        "ReduceMean", {"x": _f(2, 3, 4)}, {"axes": [1, -1]}, opset=13
    ),
    "ReduceMean axes input keepdims 0": lambda: _case(
        "ReduceMean", {"x": _f(2, 3, 4)}, {"keepdims": 0}, {"axes": _i(0, 2)}
    ),
    "ReduceSum all": lambda: _case("ReduceSum", {"x": _f(2, 3, 4)}),
    "ReduceSum all keepdims 0": lambda: _case("ReduceSum", {"x": _f(2, 3, 4)}, {"keepdims": 0}),
    "ReduceSum noop with empty axes": lambda: _case(
        "ReduceSum", {"x": _f(2, 3, 4)}, {"noop_with_empty_axes": 1}
    ),
    "ReduceMax axes input": lambda: _case("ReduceMax", {"x": _f(2, 3, 4)}, {}, {"axes": _i(1)}),
    "Flatten default": lambda: _case("Flatten", {"x": _f(2, 3, 4, 5)}),
    "Flatten axis 2": lambda: _case("Flatten", {"x": _f(2, 3, 4, 5)}, {"axis": 2}),
    "Flatten axis 0": lambda: _case("Flatten", {"x": _f(2, 3, 4)}, {"axis": 0}),
    "Reshape 0 and -1": lambda: _case("Reshape", {"x": _f(2, 3, 4)}, {}, {"s": _i(0, -1, 2)}),
    "Transpose perm": lambda: _case("Transpose", {"x": _f(2, 3, 4)}, {"perm": [1, 2, 0]}),
    "Transpose default": lambda: _case("Transpose", {"x": _f(2, 3, 4)}),
    "Squeeze axes input": lambda: _case("Squeeze", {"x": _f(1, 3, 1, 4)}, {}, {"a": _i(2)}),
    "Squeeze axes attribute": lambda: _case(
        "Squeeze", {"x": _f(1, 3, 1, 4)}, {"axes": [0]}, opset=11
    ),
    "Squeeze all": lambda: _case("Squeeze", {"x": _f(1, 3, 1, 4)}),
    "Unsqueeze axes input": lambda: _case("Unsqueeze", {"x": _f(3, 4)}, {}, {"a": _i(-1, 0)}),
    "Unsqueeze axes attribute": lambda: _case(
        "Unsqueeze", {"x": _f(3, 4)}, {"axes": [1, 3]}, opset=11
    ),
    "Concat": lambda: _case("Concat", {"a": _f(2, 3), "b": _f(2, 2)}, {"axis": -1}),
    "Identity": lambda: _case("Identity", {"a": _f(2, 3)}),
    "Dropout": lambda: _case("Dropout", {"a": _f(2, 3)}),
    "Slice positive": lambda: _case(
        "Slice",
        {"x": _f(4, 6, 5)},
        {},
        {"s": _i(0, 1), "e": _i(3, 100), "a": _i(0, -1), "st": _i(1, 2)},
    ),
    "Slice negative starts ends": lambda: _case(
        "Slice", {"x": _f(4, 6, 5)}, {}, {"s": _i(-3, -100), "e": _i(-1, 4)}
    ),
    "Slice to an end before the start": lambda: _case(
        "Slice", {"x": _f(4, 6)}, {}, {"s": _i(0), "e": _i(-100), "a": _i(1)}
    ),
    "Slice to end 0": lambda: _case("Slice", {"x": _f(4, 6)}, {}, {"s": _i(0), "e": _i(0)}),
    "Slice ends past the end with negative steps": lambda: _case(
        "Slice",
        {"x": _f(4, 6)},
        {},
        {"s": _i(100, 0), "e": _i(-100, 0), "a": _i(0, 1), "st": _i(-1, -1)},
    ),
    "Pad axes input with value": lambda: _case(
        "Pad",
        {"x": _f(2, 3, 4)},
        {},
        {"p": _i(1, 2, 0, 3), "v": np.array(1.5, np.float32), "a": _i(-1, 1)},
    ),
    "Pad attribute opset 10": lambda: _case(
        "Pad", {"x": _f(2, 3)}, {"pads": [0, 1, 1, 2], "value": -2.0}, opset=10
    ),
    "Pad reflect one axis": lambda: _case(
        "Pad", {"x": _f(2, 3, 5)}, {"mode": "reflect"}, {"p": _i(0, 0, 2, 0, 0, 1)}
    ),
    "Pad edge no padding": lambda: _case(
        "Pad", {"x": _f(2, 3)}, {"mode": "edge"}, {"p": _i(0, 0, 0, 0)}
    ),
    "Pad edge leading axis": lambda: _case(
        "Pad", {"x": _f(2, 3, 4)}, {"mode": "edge"}, {"p": _i(1, 0, 0, 0, 2, 1)}
    ),
    "Gather axis 0 scalar index": lambda: _case(
        "Gather", {"x": _f(4, 3)}, {}, {"i": np.array(-2, np.int64)}
    ),
    "Shape": lambda: _case("Shape", {"x": _f(2, 3, 4, 5)}, out=TensorProto.INT64),
    "Shape start end": lambda: _case(
        "Shape", {"x": _f(2, 3, 4, 5)}, {"start": 1, "end": -1}, out=TensorProto.INT64
    ),
    "Shape start": lambda: _case(
        "Shape", {"x": _f(2, 3, 4, 5)}, {"start": 2}, out=TensorProto.INT64
    ),
    "Cast to int32": lambda: _case(
        "Cast", {"x": 5 * _f(2, 3)}, {"to": TensorProto.INT32}, out=TensorProto.INT32
    ),
    "Cast to int64": lambda: _case(
        "Cast", {"x": 5 * _f(2, 3)}, {"to": TensorProto.INT64}, out=TensorProto.INT64
    ),
    "Cast to bool": lambda: _case(
        "Cast",
        {"x": np.array([0.0, 1.5, -2.0], np.float32)},
        {"to": TensorProto.BOOL},
        out=TensorProto.BOOL,
    ),
    "Cast to float16": lambda: _case(
        "Cast", {"x": _f(2, 3)}, {"to": TensorProto.FLOAT16}, out=TensorProto.FLOAT16
    ),
    "Cast to double": lambda: _case(
        "Cast", {"x": _f(2, 3)}, {"to": TensorProto.DOUBLE}, out=TensorProto.DOUBLE
    ),
    "Cast to float": lambda: _case("Cast", {"x": _i(1, -2, 3)}, {"to": TensorProto.FLOAT}),
    "BatchNormalization epsilon": lambda: _case(
        "BatchNormalization",
        {"x": _f(2, 3, 4, 5)},
        {"epsilon": 0.5},
        {"s": _f(3), "b": _f(3), "m": _f(3), "v": np.abs(_f(3)) + 0.1},
    ),
    "BatchNormalization default epsilon": lambda: _case(
        "BatchNormalization",
        {"x": _f(2, 3, 4)},
        {},
        {"s": _f(3), "b": _f(3), "m": _f(3), "v": np.abs(_f(3)) * 1e-4},
    ),
    "Where": lambda: _case(
        "Where", {"c": np.array([True, False, True]), "a": _f(2, 3), "b": _f(3)}
    ),
    "Equal": lambda: _case(
        "Equal", {"a": _i(1, 2, 3, 4), "b": _i(1, 0, 3, 5)}, out=TensorProto.BOOL
    ),
    "Expand": lambda: _case("Expand", {"x": _f(3, 1)}, {}, {"s": _i(2, 3, 4)}),
    "Expand int64": lambda: _case(
        "Expand", {"x": _i(7, -3)}, {}, {"s": _i(3, 2)}, out=TensorProto.INT64
    ),
    "ConstantOfShape no value": lambda: _case("ConstantOfShape", {"s": _i(2, 3)}),
}


@pytest.mark.parametrize("case", OP_CASES)
def test_op_matches_ort(case):
    """Each op (with non-default attributes) computes what ONNX Runtime computes, dtype and shape included."""
    model, feeds = OP_CASES[case]()
    _same_as_ort(model, feeds, atol=1e-5)
