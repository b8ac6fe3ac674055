"""Reference models: plain torch modules that load public checkpoints and export to ONNX.

The zoo exists so that a user without a model at hand (and the benchmarks) can get a
float ONNX model whose accuracy is known. The architectures are written out here
rather than imported, because torchvision is not installed everywhere faaq runs; the
module and parameter names follow the public projects exactly so their checkpoints
load with ``strict=True``:

- CIFAR-10 ResNet-20/32/44/56: the pytorch_resnet_cifar10 project (He et al. 2016,
  option-A shortcuts).
- ImageNet ResNet-18/50 and MobileNetV2: torchvision.
- ``digits-cnn``: a tiny CNN trained in seconds on scikit-learn's bundled 8x8 digits,
  the embedded default demo that needs no downloaded data at all.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from faaq_onnx.errors import FaaqError

__all__ = [
    "ZOO",
    "ZooEntry",
    "CifarResNet",
    "ImageNetResNet",
    "MobileNetV2",
    "DigitsCNN",
    "build",
    "export",
    "export_module",
    "load_state_dict_file",
    "train_digits_cnn",
    "digits_split",
]

# ---------------------------------------------------------------------------------
# CIFAR-10 ResNet (pytorch_resnet_cifar10)
# ---------------------------------------------------------------------------------


class _ShortcutA(nn.Module):
    """Option-A shortcut: parameter-free, so the checkpoints have no keys for it."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class _CifarBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet with the pytorch_resnet_cifar10 names."""

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise FaaqError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(_CifarBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


# ---------------------------------------------------------------------------------
# ImageNet ResNet-18/50 (torchvision names)
# ---------------------------------------------------------------------------------


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)  # stride on the 3x3 (torchvision v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    """torchvision's ResNet (v1.5), so torchvision state dicts load unchanged."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------------
# ImageNet MobileNetV2 (torchvision names)
# ---------------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class _ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation: indices 0/1/2 are what the keys name."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_ConvBNReLU6(inp, hidden, kernel=1))
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0): depthwise convs stress per-channel quantization."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                    [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
        inp, last = 32, 1280
        features: list[nn.Module] = [_ConvBNReLU6(3, inp, stride=2)]
        for t, c, n, s in settings:
            oup = _make_divisible(c)
            for i in range(n):
                features.append(_InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        features.append(_ConvBNReLU6(inp, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------------
# digits-cnn: the embedded demo
# ---------------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    """Small enough to train in seconds, yet has Conv, BN, Relu, MaxPool and Gemm to quantize."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def digits_split(split_seed: int = 0):
    """The fixed stratified 2/3 : 1/3 split of scikit-learn's digits, as float32 NCHW in [0, 1].

    The split does not depend on the model seed, so every digits-cnn is scored on
    the same held-out images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=1 / 3, stratify=y, random_state=split_seed
    )
    return (np.ascontiguousarray(x_tr), y_tr), (np.ascontiguousarray(x_te), y_te)


def train_digits_cnn(seed: int = 0, epochs: int = 30, split_seed: int = 0):
    """Train digits-cnn from scratch; returns (module, (x_train, y_train), (x_test, y_test)).

    Same seed, same weights: the torch RNG is driven by a local generator and the
    training runs single-threaded inside, so the result does not depend on the
    caller's thread count.
    """
    (x_tr, y_tr), (x_te, y_te) = digits_split(split_seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsCNN()
            gen = torch.Generator().manual_seed(seed)
            xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
            model.train()
            for _ in range(epochs):
                perm = torch.randperm(len(xt), generator=gen)
                for i in range(0, len(xt), 64):
                    idx = perm[i:i + 64]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(model(xt[idx]), yt[idx]).backward()
                    opt.step()
                sched.step()
    finally:
        torch.set_num_threads(prev_threads)
    model.eval()
    return model, (x_tr, y_tr), (x_te, y_te)


@functools.lru_cache(maxsize=4)
def _trained_digits_state(seed: int) -> dict:
    """Training is deterministic, so one process need not repeat it."""
    model, _, _ = train_digits_cnn(seed=seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooEntry:
    """What the CLI and benchmarks need to know about a zoo model without building it."""

    name: str
    builder: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    preset: str
    description: str = ""


ZOO: dict[str, ZooEntry] = {
    **{
        f"resnet{d}-cifar10": ZooEntry(
            f"resnet{d}-cifar10", functools.partial(CifarResNet, d), (1, 3, 32, 32), 10,
            "cifar10", f"CIFAR-10 ResNet-{d}, option-A shortcuts (pytorch_resnet_cifar10)",
        )
        for d in (20, 32, 44, 56)
    },
    "resnet18-imagenet": ZooEntry(
        "resnet18-imagenet", functools.partial(ImageNetResNet, _BasicBlock, [2, 2, 2, 2]),
        (1, 3, 224, 224), 1000, "imagenet", "ImageNet ResNet-18 (torchvision names)",
    ),
    "resnet50-imagenet": ZooEntry(
        "resnet50-imagenet", functools.partial(ImageNetResNet, _Bottleneck, [3, 4, 6, 3]),
        (1, 3, 224, 224), 1000, "imagenet", "ImageNet ResNet-50 (torchvision names)",
    ),
    "mobilenetv2-imagenet": ZooEntry(
        "mobilenetv2-imagenet", MobileNetV2, (1, 3, 224, 224), 1000, "imagenet",
        "ImageNet MobileNetV2 1.0 (torchvision names)",
    ),
    "digits-cnn": ZooEntry(
        "digits-cnn", DigitsCNN, (1, 1, 8, 8), 10, "digits",
        "tiny CNN on scikit-learn's 8x8 digits; trained on the spot when no weights are given",
    ),
}


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise FaaqError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")
    return ZOO[name]


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
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        raise FaaqError(f"cannot read weights file {p}: {type(e).__name__}: {e}") from None
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
        out[k[len("module."):] if k.startswith("module.") else k] = v
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
    """Build a zoo model in eval mode, loading ``weights`` if given.

    Without weights the init is seeded (same seed, same model), except digits-cnn,
    which is trained on the spot because an untrained demo teaches nothing.
    """
    entry = _entry(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.builder()
    if weights is not None:
        _load_into(model, load_state_dict_file(weights), name, weights)
    elif name == "digits-cnn":
        model.load_state_dict(_trained_digits_state(seed))
    return model.eval()


# ---------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------

#: ORT 1.2x rejects models with a newer IR version than it knows; 10 is what it reads.
EXPORT_IR_VERSION = 10


def export_module(
    module: nn.Module,
    example_input: torch.Tensor,
    out_path: str | os.PathLike,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export with the TorchScript exporter and save atomically.

    The legacy exporter (dynamo=False) is used because it gives plain, stable graphs
    with one node per torch op and named initializers, which is what the passes expect.
    """
    import onnx

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        kwargs = {}
        if dynamic_batch:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
        with torch.no_grad(), warnings.catch_warnings():
            # the option-A shortcut's strided slice cannot be folded; harmless, and noisy
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                module, (example_input,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"], do_constant_folding=True,
                **kwargs,
            )
        model = onnx.load(str(tmp))
        model.ir_version = EXPORT_IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))
        os.replace(tmp, out)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    return out


def export(
    name: str,
    out_path: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    opset: int = 17,
    batch: int | None = None,
    seed: int = 0,
) -> Path:
    """Build a zoo model and export it; ``batch=None`` leaves a dynamic 'batch' dimension."""
    entry = _entry(name)
    if batch is not None and batch < 1:
        raise FaaqError(f"batch must be a positive integer, got {batch}")
    model = build(name, weights=weights, seed=seed)
    shape = (batch or 1,) + tuple(entry.input_shape[1:])
    example = torch.zeros(shape, dtype=torch.float32)
    return export_module(model, example, out_path, opset=opset, dynamic_batch=batch is None)


if __name__ == "__main__":  # quick manual check of the demo's cost
    t0 = time.perf_counter()
    m, _, (xt, yt) = train_digits_cnn()
    with torch.no_grad():
        acc = (m(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean()
    print(f"digits-cnn: test acc {acc:.4f}, {time.perf_counter() - t0:.1f}s")
