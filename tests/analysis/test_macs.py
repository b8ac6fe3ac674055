"""MACs per sample where the graph's shapes are symbolic: from the inputs, from calibration."""

from __future__ import annotations

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
