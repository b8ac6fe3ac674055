"""The ImageNet zoo's building blocks compute what torchvision's do (torchvision does not import
with this CPU torch, so the reference is written out)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_basic_block_adds_its_input_back():
    """With its second BatchNorm zeroed, a residual block returns relu(x): the identity is
    added, not subtracted."""
    from faaq_onnx.zoo.imagenet import _BasicBlock

    block = _BasicBlock(4, 4).eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        x = torch.randn(2, 4, 6, 6)
        torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize(
    "v,want", [(44.0, 48), (12.0, 16), (3.0, 8), (30.0, 32), (20.0, 24), (37.0, 40), (100.0, 104)]
)
def test_make_divisible_rounds_to_the_nearest_multiple_of_8(v, want):
    """MobileNetV2's channel rounding: nearest multiple of 8 (halves up), never below 90 %."""
    from faaq_onnx.zoo.imagenet import _make_divisible

    assert _make_divisible(v) == want


@pytest.mark.parametrize("n", [16, 24, 32])
def test_make_divisible_keeps_a_round_down_of_exactly_10_percent(n):
    """'Never below 90 %': a width whose nearest multiple of 8 is exactly 90 % of it (0.9 v == n
    in floating point too) keeps that multiple; only a deeper cut adds 8."""
    from faaq_onnx.zoo.imagenet import _make_divisible

    v = n / 0.9
    assert 0.9 * v == n and _make_divisible(v) == n
    assert int(v + 0.25 + 4) // 8 * 8 == n  # the nearest multiple is still n ...
    assert _make_divisible(v + 0.25) == n + 8  # ... now below 90 %: one step up
