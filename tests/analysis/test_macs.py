"""MACs per sample where the graph's shapes are symbolic: from the inputs, from calibration."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from faaq_onnx.analysis.macs import op_macs


def _matmul() -> ir.Node:
    a, b = ir.Value(name="a"), ir.Value(name="b")
    return ir.Node("", "MatMul", [a, b], num_outputs=1)


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ((1, 4, 8, 16), (1, 4, 16, 8), 4 * 8 * 16 * 8),  # attention scores: heads x s x d x s
        ((1, 8, 16), (16, 32), 8 * 16 * 32),  # a projection over a sequence
        ((1, 16), (16, 32), 16 * 32),  # rank 2: axis 0 is the sample
        ((1, 3, 8, 16), (1, 1, 16, 8), 3 * 8 * 16 * 8),  # batch dims broadcast
        ((1, 3, 8, 16), (1, 2, 16, 8), 0),  # they do not broadcast: nothing counted
        ((16,), (16, 32), 0),  # a vector: no rows to count
    ],
)
def test_a_matmul_without_an_output_shape_counts_from_its_inputs(a, b, want):
    node = _matmul()
    shapes = {"a": a, "b": b}
    assert op_macs(node, lambda v: shapes.get(v.name) if v is not None else None) == want


def test_a_matmul_with_an_unknown_input_counts_nothing():
    node = _matmul()
    assert op_macs(node, lambda v: (1, 8, 16) if v is not None and v.name == "a" else None) == 0


def test_a_gemm_over_flattened_sequence_rows_counts_every_row_of_a_sample():
    """fuse_matmul_add writes a fixed-shape [1, 8, 32] x [32, 16] layer as Reshape -> Gemm: its
    MACs per sample are 8 * 32 * 16, as the MatMul's; a CNN's [1, C, 1, 1] -> [1, C] Gemm
    keeps C * N."""
    from faaq_onnx.analysis.macs import _static_shape

    def gemm_after_reshape(src_dims, flat_dims, n):
        x = ir.Value(name="x", shape=ir.Shape(src_dims), type=ir.TensorType(ir.DataType.FLOAT))
        r = ir.node("Reshape", [x])
        r.outputs[0].shape = ir.Shape(flat_dims)
        w = ir.Value(name="w", shape=ir.Shape([flat_dims[-1], n]))
        w.const_value = ir.tensor(np.zeros((flat_dims[-1], n), np.float32))
        g = ir.node("Gemm", [r.outputs[0], w])
        g.outputs[0].shape = ir.Shape([flat_dims[0], n])
        return op_macs(g, _static_shape)

    assert gemm_after_reshape([1, 8, 32], [8, 32], 16) == 8 * 32 * 16
    assert gemm_after_reshape([1, 64, 1, 1], [1, 64], 10) == 64 * 10
