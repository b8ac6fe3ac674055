"""Integer formats: which ONNX container type holds a b-bit quantizer.

ONNX has int4/uint4, int8/uint8 and int16/uint16. Other widths (2, 3, 5, 6, 7, ...)
keep their own integer range inside the next container, so the report can state the
effective bits and the bytes actually stored without dressing one up as the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto

from faaq_onnx.errors import FaaqError

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, 16)


@dataclass(frozen=True)
class IntFormat:
    """A b-bit integer range and the ONNX type that stores it."""

    bits: int
    signed: bool
    min_container: int = 4  # activations use 8: ORT has no 4-bit activation kernels

    def __post_init__(self) -> None:
        if self.min_container not in (4, 8, 16):
            raise ValueError(f"container must be 4, 8 or 16 bits, got {self.min_container}")
        if self.bits not in SUPPORTED_BITS:
            raise FaaqError(f"unsupported bit width {self.bits}: choose one of {SUPPORTED_BITS}")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def container_bits(self) -> int:
        return max(self.min_container, 4 if self.bits <= 4 else 8 if self.bits <= 8 else 16)

    @property
    def onnx_type(self) -> int:
        return {
            (4, True): TensorProto.INT4,
            (4, False): TensorProto.UINT4,
            (8, True): TensorProto.INT8,
            (8, False): TensorProto.UINT8,
            (16, True): TensorProto.INT16,
            (16, False): TensorProto.UINT16,
        }[(self.container_bits, self.signed)]

    @property
    def numpy_type(self):
        return {
            (4, True): ml_dtypes.int4,
            (4, False): ml_dtypes.uint4,
            (8, True): np.int8,
            (8, False): np.uint8,
            (16, True): np.int16,
            (16, False): np.uint16,
        }[(self.container_bits, self.signed)]

    @property
    def fills_container(self) -> bool:
        return self.bits == self.container_bits

    def stored_bytes(self, n_elements: int) -> int:
        return (n_elements * self.container_bits + 7) // 8

    def __str__(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"
