"""The one fake-quant: numpy, torch and the ONNX subgraph agree with ONNX's own QDQ."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.analysis.metrics import sqnr_db
from faaq_onnx.quant.affine import (
    affine_params,
    dequantize,
    fake_quant,
    fake_quantize,
    onnx_fake_quant,
    quantize,
)
from faaq_onnx.quant.formats import IntFormat


def test_asymmetric_params_map_range_exactly():
    fmt = IntFormat(8, False)
    scale, zp = affine_params(np.array([-1.0]), np.array([3.0]), fmt, symmetric=False)
    assert scale[0] == pytest.approx(4.0 / 255)
    assert 0 <= zp[0] <= 255
    # zero is exactly representable
    assert dequantize(quantize(0.0, scale[0], zp[0], fmt.qmin, fmt.qmax), scale[0], zp[0]) == 0.0


def test_symmetric_signed_clips_nothing_and_uses_qmin_when_negative_side_is_larger():
    scale, zp = affine_params(
        np.array([-2.0, -0.5, -1.0]), np.array([1.0, 4.0, 1.0]), IntFormat(8, True), True
    )
    np.testing.assert_allclose(scale, [2 / 128, 4 / 127, 1 / 127], rtol=1e-6)
    assert not zp.any()


@pytest.mark.parametrize("bits", [2, 3])
def test_symmetric_low_bits_use_every_code(bits):
    """2-bit symmetric is four levels, not ternary; 3-bit eight, not seven."""
    fmt = IntFormat(bits, True)
    w = np.linspace(-1.001, 1.001, 4001).astype(np.float32)
    s, z = affine_params(np.array(-1.0), np.array(1.0), fmt, True)
    codes = np.unique(quantize(w, s, z, fmt.qmin, fmt.qmax))
    assert len(codes) == 2**bits
    assert codes.min() == fmt.qmin and codes.max() == fmt.qmax


def test_all_zero_tensor_gets_a_usable_scale():
    scale, _zp = affine_params(np.array([0.0]), np.array([0.0]), IntFormat(8, True), True)
    assert scale[0] > 0 and np.isfinite(scale[0])


def test_quantize_rounds_half_to_even_and_clamps():
    q = quantize(np.array([0.5, 1.5, 2.5, 100.0, -100.0]), 1.0, 0, -8, 7)
    np.testing.assert_array_equal(q, [0, 2, 2, 7, -8])


def test_fake_quant_error_bounded_by_half_step():
    x = np.linspace(-1, 1, 1001).astype(np.float32)
    fmt = IntFormat(8, True)
    scale, zp = affine_params(np.array(-1.0), np.array(1.0), fmt, True)
    err = np.abs(fake_quantize(x, scale, zp, fmt) - x)
    assert err.max() <= scale / 2 + 1e-7


def _onnx_qdq(x, scale, zp, fmt):
    """What ONNX Runtime's QuantizeLinear -> DequantizeLinear gives."""
    import onnxruntime as ort

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), "s"),
        numpy_helper.from_array(np.array(zp, fmt.numpy_type), "z"),
    ]
    g = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]


def _onnx_subgraph(x, scale, zp, fmt):
    import onnxruntime as ort

    names = {"s": scale, "z": float(zp), "lo": float(fmt.qmin), "hi": float(fmt.qmax)}
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in names.items()]
    nodes = onnx_fake_quant(helper, "x", "s", "z", "lo", "hi", "y", prefix="fq")
    g = helper.make_graph(
        nodes,
        "fq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]


@pytest.mark.parametrize(
    "fmt,symmetric",
    [
        (IntFormat(8, False, 8), False),
        (IntFormat(8, True, 8), True),
        (IntFormat(4, True), True),
        (IntFormat(4, False), False),
    ],
)
def test_numpy_torch_and_onnx_forms_agree_with_qdq(fmt, symmetric):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(5000) * 2).astype(np.float32)
    x[:8] = [0.5, 1.5, -2.5, 0.0, 40, -40, 1e-9, 3.0]  # ties, clamps, zero
    s, z = affine_params(np.array(-3.0), np.array(2.0), fmt, symmetric)
    ref = _onnx_qdq(x, s, z, fmt)
    np.testing.assert_array_equal(fake_quant(x, s, z, fmt.qmin, fmt.qmax), ref)
    got_t = fake_quant(torch.from_numpy(x), float(s), float(z), fmt.qmin, fmt.qmax).numpy()
    np.testing.assert_array_equal(got_t, ref)
    np.testing.assert_array_equal(_onnx_subgraph(x, s, z, fmt), ref)


def test_round_fn_plugs_in_learned_rounding():
    x = np.array([0.2, 0.7, -0.2], np.float32)
    up = fake_quant(x, 1.0, 0, -8, 7, round_fn=np.ceil)
    np.testing.assert_array_equal(up, [1, 1, 0])


def test_sqnr_db_known_value():
    ref = np.ones((4, 10))
    assert sqnr_db(ref, ref + 0.1) == pytest.approx(20.0, abs=1e-6)


@pytest.mark.parametrize(
    "bits,lo,hi,scale",
    [
        (2, -1.0, 0.5, 2 / 3),  # full spread: 2*amax over 3 steps (codes -2..1)
        (3, -1.0, 0.5, 2 / 7),  # 2*amax over 7 steps
        (4, -1.0, 0.5, 1 / 8),  # from 4 bits: the smallest scale that clips nothing (|lo| / 8)
        (4, -0.5, 1.4, 1.4 / 7),  # ... positive side larger: hi / 7
    ],
)
def test_signed_symmetric_scale_per_width(bits, lo, hi, scale):
    s, z = affine_params(np.array([lo]), np.array([hi]), IntFormat(bits, True), True)
    assert s[0] == pytest.approx(scale, rel=1e-6) and z[0] == 0


def test_unsigned_symmetric_centres_zero_point():
    s, z = affine_params(np.array([-1.0]), np.array([2.0]), IntFormat(8, False), True)
    assert s[0] == pytest.approx(4 / 255, rel=1e-6) and z[0] == 128
    s, z = affine_params(np.array([-1.0]), np.array([0.5]), IntFormat(4, False), True)
    assert s[0] == pytest.approx(2 / 15, rel=1e-6) and z[0] == 8


def test_asymmetric_zero_point_value_and_all_zero_channel():
    fmt = IntFormat(8, False)
    s, z = affine_params(np.array([-1.0, 0.0]), np.array([3.0, 0.0]), fmt, False)
    assert z[0] == 64  # round(0 - (-1) / (4/255)) = round(63.75)
    assert z[1] == 0 and s[1] == 1.0  # an all-zero channel: zero at qmin, unit scale


def test_broadcast_param_puts_the_channel_on_its_axis():
    from faaq_onnx.quant.affine import broadcast_param

    p = np.array([1.0, 2.0, 3.0])
    assert broadcast_param(p, 4, 1).shape == (1, 3, 1, 1)
    assert broadcast_param(np.float32(2.0), 4, 1) == 2.0
    assert broadcast_param(p, 4, None) is p
