"""MatMulNBits conversion: same integers, same result as the QDQ model it replaces."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
from faaq_onnx.runtime.session import make_session

_TYPES = {
    ("int", 2): (TensorProto.INT2, ml_dtypes.int2),
    ("uint", 2): (TensorProto.UINT2, ml_dtypes.uint2),
    ("int", 4): (TensorProto.INT4, ml_dtypes.int4),
    ("uint", 4): (TensorProto.UINT4, ml_dtypes.uint4),
    ("int", 8): (TensorProto.INT8, np.int8),
    ("uint", 8): (TensorProto.UINT8, np.uint8),
}


def _blocked_weight(rng, k, n, bits, signed, block, asym):
    """Random integers [K, N], blocked scales [ceil(K/block), N] and zero points."""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    q = rng.integers(lo, hi + 1, size=(k, n))
    nb = -(-k // block)
    s = rng.uniform(0.01, 0.1, size=(nb, n)).astype(np.float32)
    z = rng.integers(lo, hi + 1, size=(nb, n)) if asym else np.zeros((nb, n), np.int64)
    return q, s, z


def _qdq_matmul(
    bits=4,
    signed=True,
    k=64,
    n=24,
    block=32,
    asym=False,
    seed=0,
    op="MatMul",
    trans_b=False,
    bias=False,
    act_qdq=False,
    opset=None,
):
    rng = np.random.default_rng(seed)
    _onnx_t, np_t = _TYPES[("int" if signed else "uint", bits)]
    q, s, z = _blocked_weight(rng, k, n, bits, signed, block, asym)
    axis = 0
    if trans_b:
        q, s, z, axis = q.T, s.T, z.T, 1
    inits = [
        numpy_helper.from_array(q.astype(np_t), "w_q"),
        numpy_helper.from_array(s, "w_s"),
        numpy_helper.from_array(z.astype(np_t), "w_z"),
    ]
    nodes = [
        helper.make_node(
            "DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=axis, block_size=block
        )
    ]
    a = "x"
    if act_qdq:
        inits += [
            numpy_helper.from_array(np.array(0.05, np.float32), "a_s"),
            numpy_helper.from_array(np.array(128, np.uint8), "a_z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "a_s", "a_z"], ["x_dq"]),
        ]
        a = "x_dq"
    if op == "Gemm":
        ins = [a, "w"]
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "c"))
            ins.append("c")
        nodes.append(helper.make_node("Gemm", ins, ["y"], name="fc", transB=int(trans_b)))
        x_shape, y_shape = ["b", k], ["b", n]
    else:
        nodes.append(helper.make_node("MatMul", [a, "w"], ["y"], name="mm"))
        x_shape, y_shape = ["b", 5, k], ["b", 5, n]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    opset = opset or (25 if bits == 2 else 21)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 11 if opset >= 25 else 10
    onnx.checker.check_model(model)
    return model


def _run(model, x, opt_level="all"):
    # the QDQ reference runs unoptimized: at level 'all' ORT itself fuses a blocked
    # DQ -> MatMul into MatMulNBits with accuracy level 4, which is not a reference
    return make_session(model, opt_level=opt_level).run(None, {"x": x})[0]


def _ref(model, x):
    return _run(model, x, opt_level="disable")


def _x(model, seed=1, batch=3):
    shape = [
        batch if not d.dim_value else d.dim_value
        for d in model.graph.input[0].type.tensor_type.shape.dim
    ]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize(
    "bits,signed,asym,k,block",
    [
        (4, True, False, 64, 32),
        (4, False, True, 64, 32),
        (4, True, True, 80, 32),  # K not a multiple of the block: padded
        (8, True, False, 128, 64),
        (8, False, True, 64, 16),
        (2, True, False, 64, 16),
        (2, False, True, 96, 32),
    ],
)
def test_matmul_matches_qdq_exactly(bits, signed, asym, k, block):
    model = _qdq_matmul(bits=bits, signed=signed, asym=asym, k=k, block=block)
    conv, names = convert_to_matmulnbits(model, accuracy_level=0)
    assert names == ["mm"]
    ops = [(n.domain, n.op_type) for n in conv.graph.node]
    assert ops == [("com.microsoft", "MatMulNBits")]
    node = conv.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"K": k, "N": 24, "bits": bits, "block_size": block, "accuracy_level": 0}
    b = numpy_helper.to_array(next(t for t in conv.graph.initializer if t.name == node.input[1]))
    assert b.dtype == np.uint8 and b.shape == (24, -(-k // block), block * bits // 8)
    assert (
        len(node.input) > 3 and node.input[3] != ""
    ) == asym  # zero points only when not default
    x = _x(model)
    ref, got = _ref(model, x), _run(conv, x)
    assert got.shape == ref.shape == (3, 5, 24)
    assert _rel(got, ref) < 1e-4


def test_packed_layout_is_low_bits_first_along_k():
    model = _qdq_matmul(bits=4, signed=True, k=32, n=2, block=32)
    q = numpy_helper.to_array(model.graph.initializer[0]).astype(np.int64)  # [K, N]
    conv, _ = convert_to_matmulnbits(model, accuracy_level=0)
    b = numpy_helper.to_array(
        next(t for t in conv.graph.initializer if t.name == conv.graph.node[0].input[1])
    )
    col0 = q[:, 0] + 8  # signed codes shift by the default zero point 2^(bits-1)
    assert b[0, 0, 0] == (col0[0] | (col0[1] << 4))
    assert b[0, 0, 15] == (col0[30] | (col0[31] << 4))


def test_gemm_trans_b_with_bias():
    model = _qdq_matmul(bits=4, k=64, n=16, op="Gemm", trans_b=True, bias=True)
    conv, names = convert_to_matmulnbits(model, accuracy_level=0)
    assert names == ["fc"]
    node = conv.graph.node[0]
    assert node.op_type == "MatMulNBits" and len(node.input) == 6 and node.input[5]
    x = _x(model, batch=7)
    assert _rel(_run(conv, x), _ref(model, x)) < 1e-4


def test_activation_qdq_left_alone_unless_dropped():
    model = _qdq_matmul(bits=4, act_qdq=True)
    same, names = convert_to_matmulnbits(model)
    assert names == [] and [n.op_type for n in same.graph.node] == [
        n.op_type for n in model.graph.node
    ]
    dropped, names = convert_to_matmulnbits(model, accuracy_level=0, drop_activation_qdq=True)
    assert names == ["mm"]
    assert [n.op_type for n in dropped.graph.node] == [
        "MatMulNBits"
    ]  # the bypassed Q/DQ had no other reader
    x = _x(model)
    # weight-only now: equal to the float activation through the same dequantized weight
    float_act = _qdq_matmul(bits=4, act_qdq=False)
    assert _rel(_run(dropped, x), _ref(float_act, x)) < 1e-4
    assert (
        _rel(_run(dropped, x), _ref(model, x)) > 1e-4
    )  # the activation's quantization error is gone


def test_per_channel_int8_weights_become_blocks():
    rng = np.random.default_rng(3)
    q = rng.integers(-128, 128, size=(64, 8)).astype(np.int8)
    s = rng.uniform(0.01, 0.1, size=8).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(s, "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    conv, names = convert_to_matmulnbits(model, accuracy_level=0, per_channel_block=32)
    assert names == ["mm"]
    scales = next(
        numpy_helper.to_array(t)
        for t in conv.graph.initializer
        if t.name == conv.graph.node[0].input[2]
    )
    assert (
        scales.shape == (8, 2)
        and np.array_equal(scales[:, 0], s)
        and np.array_equal(scales[:, 1], s)
    )
    x = rng.standard_normal((4, 64)).astype(np.float32)
    assert _rel(_run(conv, x), _ref(model, x)) < 1e-4


@pytest.mark.parametrize("dq_zero_point", [False, True])
def test_offset_codes_become_matmulnbits_zero_points(dq_zero_point):
    """emit_weights' offset form (signed codes t, Cast -> Add(o), zero point 0) is read as codes t
    with zero point -o: a 4-bit MatMulNBits with the asymmetric grid's zero points; a nonzero
    DequantizeLinear zero point zp (another writer's) makes it zp - o."""
    rng = np.random.default_rng(4)
    t = rng.integers(-8, 8, size=(64, 8))
    o = rng.integers(-7, 9, size=8)
    zp = (o - 3) if dq_zero_point else np.zeros(8, np.int64)
    s = rng.uniform(0.01, 0.1, size=8).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["t"], ["t8"], to=TensorProto.INT8),
            helper.make_node("Add", ["t8", "o"], ["codes"]),
            helper.make_node("DequantizeLinear", ["codes", "s", "z"], ["w"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [
            numpy_helper.from_array(t.astype(ml_dtypes.int4), "t"),
            numpy_helper.from_array(o.reshape(1, 8).astype(np.int8), "o"),
            numpy_helper.from_array(s, "s"),
            numpy_helper.from_array(zp.astype(np.int8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    conv, names = convert_to_matmulnbits(model, accuracy_level=0, per_channel_block=32)
    assert names == ["mm"]
    node = conv.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["bits"] == 4 and len(node.input) > 3 and node.input[3]
    x = rng.standard_normal((4, 64)).astype(np.float32)
    assert _rel(_run(conv, x), _ref(model, x)) < 1e-4


def test_smallest_width_that_holds_the_integers():
    # a 2-bit weight in an int4 container becomes bits=2 when 2 is allowed, else bits=4
    model = _qdq_matmul(bits=4, k=64, block=32)
    init = model.graph.initializer[0]
    q = np.clip(numpy_helper.to_array(init).astype(np.int8), -2, 1).astype(ml_dtypes.int4)
    init.CopyFrom(numpy_helper.from_array(q, init.name))
    x = _x(model)
    for allowed, expect in (((2, 4, 8), 2), ((4, 8), 4), ((8,), 8)):
        conv, _ = convert_to_matmulnbits(model, bits_allowed=allowed, accuracy_level=0)
        bits = next(
            helper.get_attribute_value(a) for a in conv.graph.node[0].attribute if a.name == "bits"
        )
        assert bits == expect
        assert _rel(_run(conv, x), _ref(model, x)) < 1e-4
    # codes in [-2, 5] start on the 2-bit grid's floor but pass its top (1): 4 bits, not 2
    q = np.clip(numpy_helper.to_array(init).astype(np.int8) + 3, -2, 5).astype(ml_dtypes.int4)
    init.CopyFrom(numpy_helper.from_array(q, init.name))
    conv, _ = convert_to_matmulnbits(model, bits_allowed=(2, 4, 8), accuracy_level=0)
    bits = next(
        helper.get_attribute_value(a) for a in conv.graph.node[0].attribute if a.name == "bits"
    )
    assert bits == 4 and _rel(_run(conv, x), _ref(model, x)) < 1e-4


def test_accuracy_level_4_quantizes_the_activation_but_stays_close():
    model = _qdq_matmul(bits=4, k=256, n=64, block=32)
    conv, _ = convert_to_matmulnbits(model, accuracy_level=4)
    x = _x(model, batch=8)
    ref, got = _ref(model, x), _run(conv, x)
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2 + 1e-30))
    assert sqnr > 30


def test_ineligible_nodes_are_kept():
    model = _qdq_matmul(bits=4, k=64, block=32)
    for t in model.graph.node[0].attribute:
        if t.name == "block_size":
            t.i = 8  # MatMulNBits needs a power of two >= 16
    conv, names = convert_to_matmulnbits(model)
    assert names == [] and [n.op_type for n in conv.graph.node] == ["DequantizeLinear", "MatMul"]
    assert len(model.graph.node) == 2  # the input proto is untouched


def test_bad_options_are_one_line_errors():
    model = _qdq_matmul()
    with pytest.raises(FaaqError, match="bits"):
        convert_to_matmulnbits(model, bits_allowed=(3,))
    with pytest.raises(FaaqError, match="accuracy_level"):
        convert_to_matmulnbits(model, accuracy_level=7)


@pytest.mark.parametrize("zero_point", [0, 7, None])
def test_a_gemm_bias_behind_a_dequantize_linear_keeps_its_value(zero_point):
    """An int32 bias read through DequantizeLinear (with or without a zero point) becomes the
    MatMulNBits bias (q - zp) * s: same result as the QDQ Gemm."""
    model = _qdq_matmul(bits=4, k=64, n=16, op="Gemm", trans_b=True, bias=True)
    gemm = model.graph.node[-1]
    q = np.arange(-8, 8, dtype=np.int32) * 37
    inits = [
        numpy_helper.from_array(q, "c_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "c_s"),
    ]
    dq_in = ["c_q", "c_s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(np.array(zero_point, np.int32), "c_z"))
        dq_in.append("c_z")
    model.graph.initializer.extend(inits)
    model.graph.node.insert(
        len(model.graph.node) - 1, helper.make_node("DequantizeLinear", dq_in, ["c_dq"])
    )
    gemm.input[2] = "c_dq"
    conv, names = convert_to_matmulnbits(model, accuracy_level=0)
    assert names == ["fc"] and "MatMulNBits" in [n.op_type for n in conv.graph.node]
    x = _x(model, batch=5)
    assert _rel(_run(conv, x), _ref(model, x)) < 1e-4


@pytest.mark.parametrize("block", [8, 48])
def test_blocks_matmulnbits_cannot_take_are_kept(block):
    """A blocked weight along K whose block is below 16 or not a power of two stays a
    DequantizeLinear -> MatMul (scales consistent with the block, so only the block is wrong)."""
    model = _qdq_matmul(bits=4, k=96, block=block)
    conv, names = convert_to_matmulnbits(model, accuracy_level=0)
    assert names == [] and [n.op_type for n in conv.graph.node] == ["DequantizeLinear", "MatMul"]
    x = _x(model)
    np.testing.assert_array_equal(_ref(conv, x), _ref(model, x))


@pytest.mark.parametrize(
    "bias,shape,ops",
    [
        ("const", [1], ["MatMulNBits", "Add"]),  # a broadcast scalar
        ("const", [16, 1], ["MatMulNBits", "Add"]),  # one value per row (M = N = 16 here)
        ("const", [1, 16], ["MatMulNBits"]),  # one value per output: the bias input
        ("input", [16], ["MatMulNBits", "Add"]),  # not a constant
    ],
)
def test_a_gemm_bias_is_the_matmulnbits_bias_only_when_one_per_output(bias, shape, ops):
    """Gemm's C becomes MatMulNBits' bias input only when it is a constant holding one value per
    output column (N or 1 x N); a broadcast scalar, a column (one value per row) or a C that is
    not a constant (a graph input) stays an Add after MatMulNBits. Same result either way."""
    model = _qdq_matmul(bits=4, k=64, n=16, op="Gemm", trans_b=True)
    gemm = model.graph.node[-1]
    c = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    feeds = {}
    if bias == "const":
        model.graph.initializer.append(numpy_helper.from_array(c, "c"))
    else:
        model.graph.input.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, shape))
        feeds["c"] = c
    gemm.input.append("c")
    conv, names = convert_to_matmulnbits(model, accuracy_level=0)
    assert names == ["fc"]
    assert [n.op_type for n in conv.graph.node] == ops
    x = _x(model, batch=16)
    got = make_session(conv).run(None, {"x": x, **feeds})[0]
    ref = make_session(model, opt_level="disable").run(None, {"x": x, **feeds})[0]
    assert got.shape == ref.shape == (16, 16)
    assert _rel(got, ref) < 1e-4
