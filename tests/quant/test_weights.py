import numpy as np
import pytest

from faaq_onnx.quant.weights import quantize_weight


@pytest.fixture
def conv_w():
    return np.random.default_rng(0).normal(0, 0.1, (8, 40, 3, 3)).astype(np.float32)


def test_per_channel_scales_and_error(conv_w):
    qw = quantize_weight(conv_w, 8, "per-channel", 0, 1)
    assert qw.scale.shape == (8,) and qw.axis == 0
    assert qw.q.min() >= -128 and qw.q.max() <= 127
    step = qw.scale.reshape(-1, 1, 1, 1)
    assert np.all(np.abs(qw.dequantized() - conv_w) <= step / 2 + 1e-7)


def test_per_tensor(conv_w):
    qw = quantize_weight(conv_w, 4, "per-tensor", 0, 1)
    assert qw.scale.shape == () and qw.axis is None
    assert qw.q.min() >= -8 and qw.q.max() <= 7


def test_blocked_layout_matches_onnx(conv_w):
    qw = quantize_weight(conv_w, 4, "block", 0, 1, block_size=16)
    # ONNX blocked DequantizeLinear: scale has ceil(40/16)=3 entries along the blocked axis
    assert qw.scale.shape == (8, 3, 3, 3) and qw.block_size == 16 and qw.axis == 1
    # every block's max |w| maps to the top code, so blocks beat per-channel on error
    pc = quantize_weight(conv_w, 4, "per-channel", 0, 1)
    assert np.mean((qw.dequantized() - conv_w) ** 2) < np.mean((pc.dequantized() - conv_w) ** 2)


def test_odd_widths_stay_in_their_range(conv_w):
    for bits, (lo, hi) in {3: (-4, 3), 5: (-16, 15), 6: (-32, 31), 2: (-2, 1)}.items():
        qw = quantize_weight(conv_w, bits, "per-channel", 0, 1)
        assert qw.q.min() >= lo and qw.q.max() <= hi


def test_asymmetric_weights_use_unsigned(conv_w):
    qw = quantize_weight(conv_w + 0.05, 8, "per-channel", 0, 1, symmetric=False)
    assert qw.q.min() >= 0 and qw.q.max() <= 255 and qw.zero_point.any()
    assert np.abs(qw.dequantized() - (conv_w + 0.05)).max() < qw.scale.max()


def test_stored_bytes_counts_packing(conv_w):
    qw = quantize_weight(conv_w, 4, "per-channel", 0, 1)
    assert qw.stored_bytes == conv_w.size // 2 + 8 * 4


def test_codes_use_the_smallest_numpy_integer():
    from faaq_onnx.quant.formats import IntFormat
    from faaq_onnx.quant.weights import compact

    q = np.array([0, 1, 2])
    assert compact(q, IntFormat(4, True)).dtype == np.int8
    assert compact(q, IntFormat(7, False)).dtype == np.int8
    assert compact(q, IntFormat(8, True)).dtype == np.int8
    assert compact(np.array([0, 255]), IntFormat(8, False)).dtype == np.uint8
    assert compact(np.array([0, 65535]), IntFormat(16, False)).dtype == np.int32


def test_stored_bytes_of_asymmetric_weights_count_zero_points(conv_w):
    qw = quantize_weight(conv_w + 0.05, 4, "per-channel", 0, 1, symmetric=False)
    channels = conv_w.shape[0]
    assert qw.stored_bytes == (conv_w.size + 1) // 2 + 4 * channels + (channels + 1) // 2


def test_default_block_is_32_along_the_block_axis():
    w = np.random.default_rng(0).standard_normal((4, 96)).astype(np.float32)
    qw = quantize_weight(w, 4, "block", 0, 1)
    assert qw.block_size == 32 and qw.scale.shape == (4, 3)
