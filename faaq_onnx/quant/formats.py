"""Integer formats: a b-bit range, and the ONNX container type that stores it.

ONNX has int2/uint2 (opset 25), int4/uint4 (opset 21), int8/uint8 and int16/uint16.
Widths with no type of their own (3, 5, 6, 7) keep their integer range inside the
next container, so the report can state the effective bits and the bytes actually
stored without dressing one up as the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto

from faaq_onnx.errors import FaaqError

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
CONTAINERS = (2, 4, 8, 16)

_ONNX_TYPES = {
    (2, True): TensorProto.INT2,
    (2, False): TensorProto.UINT2,
    (4, True): TensorProto.INT4,
    (4, False): TensorProto.UINT4,
    (8, True): TensorProto.INT8,
    (8, False): TensorProto.UINT8,
    (16, True): TensorProto.INT16,
    (16, False): TensorProto.UINT16,
}
_NUMPY_TYPES = {
    (2, True): ml_dtypes.int2,
    (2, False): ml_dtypes.uint2,
    (4, True): ml_dtypes.int4,
    (4, False): ml_dtypes.uint4,
    (8, True): np.int8,
    (8, False): np.uint8,
    (16, True): np.int16,
    (16, False): np.uint16,
}


@dataclass(frozen=True)
class IntFormat:
    """A b-bit integer range and the smallest allowed ONNX type that holds it.

    `min_container` is the smallest container the target accepts: 2 where int2 is
    allowed (opset 25), 4 by default, 8 for activations (ORT has no sub-byte
    activation kernels).
    """

    bits: int
    signed: bool
    min_container: int = 4

    def __post_init__(self) -> None:
        if self.min_container not in CONTAINERS:
            raise ValueError(f"container must be one of {CONTAINERS}, got {self.min_container}")
        if self.bits not in SUPPORTED_BITS:
            raise FaaqError(f"unsupported bit width {self.bits}: choose one of {SUPPORTED_BITS}")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def levels(self) -> int:
        return 2**self.bits

    @property
    def container_bits(self) -> int:
        return max(self.min_container, next(c for c in CONTAINERS if self.bits <= c))

    @property
    def onnx_type(self) -> int:
        return _ONNX_TYPES[(self.container_bits, self.signed)]

    @property
    def numpy_type(self):
        return _NUMPY_TYPES[(self.container_bits, self.signed)]

    @property
    def fills_container(self) -> bool:
        return self.bits == self.container_bits

    @property
    def kernel_container(self) -> IntFormat:
        """The 8-bit format integer kernels compute in (a Cast widens packed storage to it)."""
        return IntFormat(self.bits, self.signed, min_container=max(8, self.container_bits))

    def stored_bytes(self, n_elements: int) -> int:
        return (n_elements * self.container_bits + 7) // 8

    def __str__(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"


def numpy_type(container_bits: int, signed: bool):
    return _NUMPY_TYPES[(container_bits, signed)]
