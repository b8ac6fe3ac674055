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


def test_bottleneck_adds_its_input_back():
    """ResNet-50's block: with its last BatchNorm zeroed the block returns relu(x), so the
    identity is added after the 1x1 expansion, not subtracted."""
    from faaq_onnx.zoo.imagenet import _Bottleneck

    block = _Bottleneck(16, 4).eval()  # 4 * expansion 4 = 16: no downsample needed
    with torch.no_grad():
        block.bn3.weight.zero_()
        block.bn3.bias.zero_()
        x = torch.randn(2, 16, 5, 5)
        torch.testing.assert_close(block(x), torch.relu(x))
        block.bn3.bias.fill_(-1.0)  # a residual relu after the sum: negative sums clip at 0
        torch.testing.assert_close(block(x), torch.relu(x - 1.0))


def test_inverted_residual_adds_its_input_only_at_stride_1_with_equal_widths():
    """MobileNetV2: x + conv(x) where the shapes allow it, conv(x) alone otherwise."""
    from faaq_onnx.zoo.imagenet import _InvertedResidual

    x = torch.randn(2, 8, 6, 6)
    for inp, oup, stride, residual in ((8, 8, 1, True), (8, 16, 1, False), (8, 8, 2, False)):
        block = _InvertedResidual(inp, oup, stride, 6).eval()
        assert block.use_res_connect is residual and block.out_channels == oup
        with torch.no_grad():
            last = block.conv[-1]
            last.weight.zero_()
            last.bias.fill_(0.5)  # conv(x) is 0.5 everywhere
            y = block(x)
        size = 6 // stride
        want = x + 0.5 if residual else torch.full((2, oup, size, size), 0.5)
        torch.testing.assert_close(y, want)


def test_inverted_residual_expands_only_when_asked():
    """An expansion ratio of 1 has no 1x1 expansion: depthwise 3x3, projection, BN; a ratio of
    6 expands to round(6 * inp) channels first. Every conv keeps the map size at stride 1."""
    from faaq_onnx.zoo.imagenet import _InvertedResidual

    plain = _InvertedResidual(16, 8, 1, 1)
    assert len(plain.conv) == 3 and plain.conv[0][0].groups == 16
    wide = _InvertedResidual(16, 8, 1, 6)
    assert len(wide.conv) == 4
    expand, depthwise = wide.conv[0][0], wide.conv[1][0]
    assert (expand.in_channels, expand.out_channels, expand.kernel_size) == (16, 96, (1, 1))
    assert depthwise.groups == depthwise.in_channels == 96 and depthwise.kernel_size == (3, 3)
    assert isinstance(wide.conv[0][2], torch.nn.ReLU6)
    with torch.no_grad():
        assert wide.eval()(torch.randn(1, 16, 7, 7)).shape == (1, 8, 7, 7)


def test_conv_bn_relu6_pads_to_keep_the_map_size():
    from faaq_onnx.zoo.imagenet import _ConvBNReLU6

    x = torch.randn(1, 4, 9, 9)
    for kernel in (1, 3, 5):
        layer = _ConvBNReLU6(4, 4, kernel=kernel).eval()
        assert layer[0].padding == ((kernel - 1) // 2,) * 2 and layer[0].bias is None
        with torch.no_grad():
            assert layer(x).shape == (1, 4, 9, 9)
    assert _ConvBNReLU6(4, 4, stride=2)[0].stride == (2, 2)


def _std_close(t, want, rel=0.05):
    return abs(float(t.detach().std()) - want) <= rel * want


def test_mobilenetv2_initialises_like_torchvision():
    """Convs: Kaiming normal over fan-out (std sqrt(2 / (out * k * k))); BatchNorm: weight 1,
    bias 0; the classifier: N(0, 0.01) weights and zero bias, after a dropout of 0.2."""
    from faaq_onnx.zoo.imagenet import MobileNetV2

    torch.manual_seed(0)
    model = MobileNetV2()
    fc = model.classifier[1]
    assert isinstance(model.classifier[0], torch.nn.Dropout) and model.classifier[0].p == 0.2
    assert abs(float(fc.weight.detach().mean())) < 1e-4 and _std_close(fc.weight, 0.01)
    assert float(fc.bias.detach().abs().max()) == 0.0
    last = model.features[-1][0]  # 1x1, 320 -> 1280: fan-out 1280
    assert _std_close(last.weight, (2 / 1280) ** 0.5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
    assert MobileNetV2(num_classes=10, dropout=0.5).classifier[0].p == 0.5


def test_resnet_initialises_like_torchvision():
    from faaq_onnx.zoo.imagenet import ImageNetResNet, _BasicBlock

    torch.manual_seed(0)
    model = ImageNetResNet(_BasicBlock, [1, 1, 1, 1], num_classes=10)
    conv = model.layer4[0].conv2  # 3x3, 512 -> 512: fan-out 512 * 9
    assert _std_close(conv.weight, (2 / (512 * 9)) ** 0.5)
    assert _std_close(model.conv1.weight, (2 / (64 * 49)) ** 0.5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
    assert model.fc.in_features == 512 and model.fc.out_features == 10
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_every_activation_works_in_place_like_torchvisions():
    """torchvision's ReLU/ReLU6 modules are in place (no second activation tensor per layer in
    a forward pass); so are these, in every block kind and both networks."""
    from faaq_onnx.zoo.imagenet import (
        ImageNetResNet,
        MobileNetV2,
        _BasicBlock,
        _Bottleneck,
        _ConvBNReLU6,
    )

    mods = [
        ImageNetResNet(_BasicBlock, [1, 1, 1, 1], num_classes=2),
        _Bottleneck(16, 4),
        MobileNetV2(num_classes=2),
        _ConvBNReLU6(2, 2),
    ]
    for mod in mods:
        acts = [m for m in mod.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))]
        assert acts and all(m.inplace for m in acts)
