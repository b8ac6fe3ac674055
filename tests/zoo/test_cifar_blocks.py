"""zoo/cifar.py's pieces: option-A shortcuts, block strides and the depth rule."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from faaq_onnx.errors import FaaqError  # noqa: E402
from faaq_onnx.zoo.cifar import CifarResNet, _CifarBasicBlock, _ShortcutA  # noqa: E402


def test_shortcut_a_subsamples_and_zero_pads_channels():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    s = _ShortcutA(8)
    assert s.pad == 2 and not list(s.parameters())
    y = s(x).numpy()
    assert y.shape == (2, 8, 2, 2)
    want = np.zeros((2, 8, 2, 2), np.float32)
    want[:, 2:6] = x.numpy()[:, :, ::2, ::2]
    np.testing.assert_array_equal(y, want)


def test_a_block_keeps_its_input_shape_by_default_and_halves_it_with_stride_2():
    torch.manual_seed(0)
    same = _CifarBasicBlock(16, 16).eval()
    assert same.conv1.stride == (1, 1) and same.conv2.stride == (1, 1)
    assert isinstance(same.shortcut, torch.nn.Sequential) and len(same.shortcut) == 0
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert same(x).shape == (2, 16, 8, 8)
        # identity shortcut: out = relu(bn2(conv2(relu(bn1(conv1 x)))) + x)
        inner = same.bn2(same.conv2(torch.relu(same.bn1(same.conv1(x)))))
        torch.testing.assert_close(same(x), torch.relu(inner + x))
    down = _CifarBasicBlock(16, 32, 2).eval()
    assert down.conv1.stride == (2, 2) and down.conv2.stride == (1, 1)
    assert isinstance(down.shortcut, _ShortcutA) and down.shortcut.pad == 8
    with torch.no_grad():
        assert down(x).shape == (2, 32, 4, 4)
    widen = _CifarBasicBlock(16, 32)  # stride 1, more channels: still option A
    assert isinstance(widen.shortcut, _ShortcutA)


def test_depth_must_be_6n_plus_2():
    with pytest.raises(FaaqError) as e:
        CifarResNet(21)
    assert str(e.value) == "CIFAR ResNet depth must be 6n+2, got 21"


def test_resnet20_layout():
    m = CifarResNet(20, num_classes=7).eval()
    assert [len(m.layer1), len(m.layer2), len(m.layer3)] == [3, 3, 3]
    strides = [[b.conv1.stride[0] for b in layer] for layer in (m.layer1, m.layer2, m.layer3)]
    assert strides == [[1, 1, 1], [2, 1, 1], [2, 1, 1]]
    assert m.conv1.stride == (1, 1) and m.conv1.padding == (1, 1)
    assert (m.linear.in_features, m.linear.out_features) == (64, 7)
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert [len(CifarResNet(d).layer1) for d in (8, 32)] == [1, 5]
