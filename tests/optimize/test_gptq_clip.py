"""optimize/gptq_clip.py: each channel's range chosen by the output error under the Hessian."""

import numpy as np
import pytest

from faaq_onnx.optimize.gptq_clip import COARSE, output_clipped_grid
from faaq_onnx.optimize.hessian import LinearForm
from faaq_onnx.quant.weights import WeightGrid, weight_grid


def _output_error(form, w, h, grid: WeightGrid) -> np.ndarray:
    """Δᵀ H Δ per output channel of w rounded to nearest on `grid`, computed independently
    (in the weight's own layout, float64)."""
    d = form.to_gkn(grid.round_to_nearest(w).dequantized() - w).astype(np.float64)
    per_column = np.einsum("gkn,gkl,gln->gn", d, np.asarray(h, np.float64), d)
    return per_column.ravel()  # (g, n) order: output channel g * N + n


def _scaled(grid: WeightGrid, ratios) -> WeightGrid:
    scale = (grid.scale * np.asarray(ratios)).astype(grid.scale.dtype)
    return WeightGrid(scale, grid.zero_point, grid.axis, None, grid.fmt, grid.shape)


def _hessian(k, seed=0, g=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((g, 8 * k, k)) @ rng.standard_normal((g, k, k))
    return np.swapaxes(x, 1, 2) @ x / x.shape[1]


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_each_channel_is_no_worse_than_any_coarse_ratio_and_min_max(bits):
    rng = np.random.default_rng(bits)
    w = rng.standard_t(3, size=(6, 20)).astype(np.float32)  # heavy tails: clipping pays somewhere
    form = LinearForm("Conv", (6, 20, 1), kernel=(1,))
    h = _hessian(20)
    grid = weight_grid(w, bits, "per-channel", 0, None)
    shrunk, ratios = output_clipped_grid(form, w, h, grid)
    assert ratios.shape == grid.scale.shape and np.all((ratios > 0) & (ratios <= 1))
    np.testing.assert_allclose(shrunk.scale, grid.scale * ratios, rtol=1e-6)
    chosen = _output_error(form, w, h, shrunk)
    for f in COARSE:  # min-max (1.0) among them
        assert np.all(chosen <= _output_error(form, w, h, _scaled(grid, f)) * (1 + 1e-5))
    assert np.any(ratios < 1)  # and it does clip at these widths


def test_the_hessian_decides_which_weights_may_be_clipped():
    """The same weights: clipping the one large weight is cheap where its input is weak and
    costly where it is strong. A weight-space range cannot tell the two apart."""
    w = np.full((1, 8), 0.1, np.float32)
    w[0, :4] = [0.1, -0.1, 0.05, -0.05]
    w[0, 7] = 1.0  # the large weight, on input row 7
    form = LinearForm("Gemm", (1, 8), trans_w=True)  # [N, K]: one output channel
    grid = weight_grid(w, 3, "per-channel", 0, None)
    weak = np.diag([1.0] * 7 + [1e-4])[None]
    strong = np.diag([1.0] * 7 + [1e4])[None]
    _, weak_ratio = output_clipped_grid(form, w, weak, grid)
    _, strong_ratio = output_clipped_grid(form, w, strong, grid)
    assert weak_ratio[0] < 0.5  # the small weights get the steps
    assert strong_ratio[0] == 1.0  # the large one keeps its range


def test_depthwise_channels_choose_alone_and_ties_keep_min_max():
    rng = np.random.default_rng(3)
    w = rng.standard_t(3, size=(5, 1, 3, 3)).astype(np.float32)
    w[2] = 0.0  # no error at any ratio: min-max is kept
    form = LinearForm("Conv", w.shape, groups=5, kernel=(3, 3))
    h = _hessian(9, g=5)
    grid = weight_grid(w, 3, "per-channel", 0, None)
    shrunk, ratios = output_clipped_grid(form, w, h, grid)
    assert ratios[2] == 1.0
    for c in range(5):  # each channel's own best, whatever the others chose
        one = np.ones(5)
        chosen = _output_error(form, w, h, shrunk)[c]
        for f in COARSE:
            one[c] = f
            assert chosen <= _output_error(form, w, h, _scaled(grid, one))[c] * (1 + 1e-5)


def test_per_tensor_grid_takes_one_ratio_and_block_grid_is_kept():
    rng = np.random.default_rng(4)
    w = rng.standard_t(3, size=(12, 6)).astype(np.float32)
    form = LinearForm("MatMul", (12, 6))
    h = _hessian(12)
    tensor = weight_grid(w, 2, "per-tensor", None, None)
    shrunk, ratios = output_clipped_grid(form, w, h, tensor)
    assert np.shape(ratios) == np.shape(tensor.scale)
    total = _output_error(form, w, h, shrunk).sum()
    assert total <= _output_error(form, w, h, tensor).sum() * (1 + 1e-6)
    block = weight_grid(w, 2, "block", 1, 0, 4)
    same, ones = output_clipped_grid(form, w, h, block)
    assert same is block and np.all(ones == 1)
