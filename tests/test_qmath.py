import ml_dtypes
import numpy as np
import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.qmath import affine_params, dequantize, fake_quantize, quantize, sqnr_db
from faaq_onnx.qtypes import IntFormat


@pytest.mark.parametrize("bits,signed,qmin,qmax,container", [
    (8, True, -128, 127, 8), (8, False, 0, 255, 8), (4, True, -8, 7, 4), (4, False, 0, 15, 4),
    (3, True, -4, 3, 4), (6, False, 0, 63, 8), (2, True, -2, 1, 4), (16, False, 0, 65535, 16),
])
def test_int_format_ranges(bits, signed, qmin, qmax, container):
    fmt = IntFormat(bits, signed)
    assert (fmt.qmin, fmt.qmax, fmt.container_bits) == (qmin, qmax, container)
    assert fmt.fills_container == (bits == container)


def test_int4_is_packed_two_per_byte():
    assert IntFormat(4, True).stored_bytes(1001) == 501
    assert IntFormat(4, True).numpy_type is ml_dtypes.int4
    assert IntFormat(6, True).stored_bytes(1001) == 1001


def test_activation_container_floor():
    assert IntFormat(4, False, min_container=8).container_bits == 8


def test_unsupported_bits_rejected():
    with pytest.raises(FaaqError, match="unsupported bit width 9"):
        IntFormat(9, True)


def test_asymmetric_params_map_range_exactly():
    fmt = IntFormat(8, False)
    scale, zp = affine_params(np.array([-1.0]), np.array([3.0]), fmt, symmetric=False)
    assert scale[0] == pytest.approx(4.0 / 255)
    assert 0 <= zp[0] <= 255
    # zero is exactly representable
    assert dequantize(quantize(0.0, scale[0], zp[0], fmt), scale[0], zp[0]) == 0.0


def test_symmetric_signed_has_zero_zero_point():
    scale, zp = affine_params(np.array([-2.0, -0.5]), np.array([1.0, 4.0]), IntFormat(8, True), True)
    np.testing.assert_allclose(scale, [2 / 127, 4 / 127], rtol=1e-6)
    assert not zp.any()


def test_all_zero_tensor_gets_a_usable_scale():
    scale, zp = affine_params(np.array([0.0]), np.array([0.0]), IntFormat(8, True), True)
    assert scale[0] > 0 and np.isfinite(scale[0])


def test_quantize_rounds_half_to_even_and_clamps():
    fmt = IntFormat(4, True)
    q = quantize(np.array([0.5, 1.5, 2.5, 100.0, -100.0]), 1.0, 0, fmt)
    np.testing.assert_array_equal(q, [0, 2, 2, 7, -8])


def test_fake_quant_error_bounded_by_half_step():
    x = np.linspace(-1, 1, 1001).astype(np.float32)
    fmt = IntFormat(8, True)
    scale, zp = affine_params(np.array(-1.0), np.array(1.0), fmt, True)
    err = np.abs(fake_quantize(x, scale, zp, fmt) - x)
    assert err.max() <= scale / 2 + 1e-7


def test_sqnr_db_known_value():
    ref = np.ones((4, 10))
    assert sqnr_db(ref, ref + 0.1) == pytest.approx(20.0, abs=1e-6)
