import ml_dtypes
import pytest
from onnx import TensorProto

from faaq_onnx.errors import FaaqError
from faaq_onnx.quant.formats import SUPPORTED_BITS, IntFormat, numpy_type


@pytest.mark.parametrize(
    "bits,signed,qmin,qmax,container",
    [
        (8, True, -128, 127, 8),
        (8, False, 0, 255, 8),
        (4, True, -8, 7, 4),
        (4, False, 0, 15, 4),
        (3, True, -4, 3, 4),
        (6, False, 0, 63, 8),
        (2, True, -2, 1, 4),
        (16, False, 0, 65535, 16),
    ],
)
def test_int_format_ranges(bits, signed, qmin, qmax, container):
    fmt = IntFormat(bits, signed)
    assert (fmt.qmin, fmt.qmax, fmt.container_bits) == (qmin, qmax, container)
    assert fmt.fills_container == (bits == container)


def test_int4_is_packed_two_per_byte():
    assert IntFormat(4, True).stored_bytes(1001) == 501
    assert IntFormat(4, True).numpy_type is ml_dtypes.int4
    assert IntFormat(6, True).stored_bytes(1001) == 1001


def test_int2_container_where_allowed():
    fmt = IntFormat(2, True, min_container=2)
    assert fmt.container_bits == 2 and fmt.onnx_type == TensorProto.INT2
    assert fmt.stored_bytes(1001) == 251
    assert IntFormat(2, False, min_container=2).numpy_type is ml_dtypes.uint2
    assert IntFormat(3, True, min_container=2).container_bits == 4


def test_kernel_container_is_8_bit():
    assert IntFormat(2, True, 2).kernel_container.onnx_type == TensorProto.INT8
    assert IntFormat(4, False).kernel_container.onnx_type == TensorProto.UINT8


def test_activation_container_floor():
    assert IntFormat(4, False, min_container=8).container_bits == 8


def test_unsupported_bits_rejected():
    with pytest.raises(FaaqError, match="unsupported bit width 9"):
        IntFormat(9, True)


@pytest.mark.parametrize(
    "container,signed,onnx_type,np_type",
    [
        (2, True, TensorProto.INT2, ml_dtypes.int2),
        (2, False, TensorProto.UINT2, ml_dtypes.uint2),
        (4, True, TensorProto.INT4, ml_dtypes.int4),
        (4, False, TensorProto.UINT4, ml_dtypes.uint4),
        (8, True, TensorProto.INT8, "int8"),
        (8, False, TensorProto.UINT8, "uint8"),
        (16, True, TensorProto.INT16, "int16"),
        (16, False, TensorProto.UINT16, "uint16"),
    ],
)
def test_every_container_has_its_onnx_and_numpy_type(container, signed, onnx_type, np_type):
    """The ONNX element type and the numpy dtype of one container must name the same thing."""
    import numpy as np
    from onnx import helper

    fmt = IntFormat(container, signed, min_container=container)
    assert fmt.onnx_type == onnx_type
    assert np.dtype(fmt.numpy_type) == np.dtype(np_type)
    assert helper.tensor_dtype_to_np_dtype(fmt.onnx_type) == np.dtype(fmt.numpy_type)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_levels_stored_bytes_and_names_per_width(bits):
    """2^bits levels (qmax - qmin + 1, signed or not); stored bytes round up whole containers;
    the name says the width, not the container; only widths with a type of their own fill it."""
    for signed in (True, False):
        f = IntFormat(bits, signed)
        assert f.levels == 2**bits == f.qmax - f.qmin + 1
        assert str(f) == ("int" if signed else "uint") + str(bits)
        c = f.container_bits
        assert f.stored_bytes(0) == 0 and f.stored_bytes(1) == -(-c // 8)
        assert f.stored_bytes(3) == -(-3 * c // 8) and f.stored_bytes(16) == 2 * c
        assert f.fills_container == (bits in (4, 8, 16))
        assert numpy_type(c, signed) == f.numpy_type


def test_a_container_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="container must be one of"):
        IntFormat(4, True, min_container=3)
