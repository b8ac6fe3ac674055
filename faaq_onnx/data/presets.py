"""Preprocessing presets: how raw images (arrays or decoded files) become model input.

Each preset has two entry points: ``from_array`` for a batch of raw images already in
memory (``N x H x W x C`` uint8, or the digits set's 0..16 values) and ``from_image``
for one decoded PIL image. Both return float32 in NCHW / CHW order.

The ImageNet-style presets follow torchvision's evaluation transform
(``Resize(256)`` on the shorter side, ``CenterCrop(224)``, ``ToTensor``, ``Normalize``)
and differ only in the normalization:

- ``imagenet``: torchvision's mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225);
- ``imagenet-inception``: (x/255 - 0.5) / 0.5, i.e. [-1, 1], the Inception / TF-slim
  convention that EfficientNet-Lite was trained with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faaq_onnx.errors import FaaqError

#: ONNX ``metadata_props`` key under which a zoo export records its preset.
PRESET_METADATA_KEY = "faaq.preset"

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_INCEPTION_MEAN = np.array([0.5, 0.5, 0.5], dtype=np.float32)
_INCEPTION_STD = np.array([0.5, 0.5, 0.5], dtype=np.float32)


def _pil_resize(img, size: tuple[int, int]):
    from PIL import Image

    return img.resize(size, Image.Resampling.BILINEAR)


def _to_pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def _resize_shorter_center_crop(img, shorter: int, crop: int):
    """torchvision's Resize(shorter) + CenterCrop(crop), integer rounding included."""
    w, h = img.size
    if w <= h:
        nw, nh = shorter, int(shorter * h / w)
    else:
        nw, nh = int(shorter * w / h), shorter
    if (nw, nh) != (w, h):
        img = _pil_resize(img, (nw, nh))
    left = int(round((nw - crop) / 2.0))
    top = int(round((nh - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def _normalize_rgb(
    hwc_u8: np.ndarray, mean: np.ndarray = _IMAGENET_MEAN, std: np.ndarray = _IMAGENET_STD
) -> np.ndarray:
    x = hwc_u8.astype(np.float32) / 255.0
    return ((x - mean) / std).transpose(2, 0, 1)


def _cifar10_image(img) -> np.ndarray:
    img = img.convert("RGB")
    if img.size != (32, 32):
        img = _pil_resize(img, (32, 32))
    return _normalize_rgb(np.asarray(img))


def _imagenet_image(img) -> np.ndarray:
    img = _resize_shorter_center_crop(img.convert("RGB"), 256, 224)
    return _normalize_rgb(np.asarray(img))


def _inception_image(img) -> np.ndarray:
    img = _resize_shorter_center_crop(img.convert("RGB"), 256, 224)
    return _normalize_rgb(np.asarray(img), _INCEPTION_MEAN, _INCEPTION_STD)


def _digits_image(img) -> np.ndarray:
    # a grayscale image file is 0..255; scale to the 0..16 of the digits set, then /16
    img = img.convert("L")
    if img.size != (8, 8):
        img = _pil_resize(img, (8, 8))
    return (np.asarray(img, dtype=np.float32) / 255.0)[None]


def _none_image(img) -> np.ndarray:
    arr = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return arr.astype(np.float32).transpose(2, 0, 1)


def _rgb_array(x: np.ndarray, preset: str, per_image: Callable) -> np.ndarray:
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise FaaqError(
            f"preset {preset!r} expects uint8 RGB images N x H x W x 3, got shape "
            f"{tuple(x.shape)} dtype {x.dtype}; use preset 'none' for preprocessed data"
        )
    if preset == "cifar10" and x.shape[1:3] == (32, 32):  # fast path, no PIL round trip
        x = x.astype(np.float32) / 255.0
        return np.ascontiguousarray(((x - _IMAGENET_MEAN) / _IMAGENET_STD).transpose(0, 3, 1, 2))
    return np.stack([per_image(_to_pil(im)) for im in x]).astype(np.float32)


def _digits_array(x: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise FaaqError(f"preset 'digits' expects numeric images, got dtype {x.dtype}")
    if x.ndim < 1 or x[:1].size != 64 or x.ndim > 4:
        raise FaaqError(
            f"preset 'digits' expects 8x8 images (N x 8 x 8, N x 64, N x 8 x 8 x 1 or "
            f"N x 1 x 8 x 8), got shape {tuple(x.shape)}"
        )
    return np.ascontiguousarray(x.reshape(len(x), 1, 8, 8).astype(np.float32) / 16.0)


@dataclass(frozen=True)
class Preset:
    """How raw images become model input; one for arrays, one for decoded image files."""

    name: str
    from_array: Callable[[np.ndarray], np.ndarray]
    from_image: Callable[[object], np.ndarray]
    description: str


PRESETS: dict[str, Preset] = {
    "cifar10": Preset(
        "cifar10",
        lambda x: _rgb_array(x, "cifar10", _cifar10_image),
        _cifar10_image,
        "32x32 RGB, /255, mean (0.485,0.456,0.406) std (0.229,0.224,0.225)",
    ),
    "imagenet": Preset(
        "imagenet",
        lambda x: _rgb_array(x, "imagenet", _imagenet_image),
        _imagenet_image,
        "resize shorter side 256 (bilinear), centre crop 224, /255, ImageNet mean/std",
    ),
    "imagenet-inception": Preset(
        "imagenet-inception",
        lambda x: _rgb_array(x, "imagenet-inception", _inception_image),
        _inception_image,
        "resize shorter side 256 (bilinear), centre crop 224, /255, then (x-0.5)/0.5 (EfficientNet-Lite)",
    ),
    "digits": Preset(
        "digits",
        _digits_array,
        _digits_image,
        "scikit-learn digits: values 0..16 /16, N x 1 x 8 x 8 (image files: /255)",
    ),
    "none": Preset(
        "none",
        lambda x: np.asarray(x, dtype=np.float32),
        _none_image,
        "cast to float32, nothing else (image files: HWC -> CHW)",
    ),
}


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise FaaqError(f"unknown data preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def guess_preset(height: int, width: int, channels: int) -> str | None:
    """The preset raw images of this size most likely want, or None if there is no good guess."""
    if (height, width) == (8, 8) and channels == 1:
        return "digits"
    if channels == 3:
        return "cifar10" if (height, width) == (32, 32) else "imagenet"
    return None


def _preset_for_model(shape: Sequence | None) -> str | None:
    """Guess from the model's NCHW input when known: its spatial size names the preset."""
    if shape is None or len(shape) != 4:
        return None
    c, h, w = shape[1:]
    if (c, h, w) == (1, 8, 8):
        return "digits"
    if (c, h, w) == (3, 32, 32):
        return "cifar10"
    if c == 3 and isinstance(h, int) and h >= 64:
        return "imagenet"
    return None


def model_preset(model) -> str | None:
    """The preset a model records in its metadata (zoo exports do), or None.

    ``model`` is an ``onnx.ModelProto`` or anything with ``metadata_props`` as a list of
    key/value entries or a dict (onnx_ir's ``Model.metadata_props``).
    """
    props = getattr(model, "metadata_props", None)
    if props is None:
        return None
    items = props.items() if isinstance(props, dict) else ((p.key, p.value) for p in props)
    for key, value in items:
        if key == PRESET_METADATA_KEY and value in PRESETS:
            return value
    return None


def apply_preset(x: np.ndarray, preset: str) -> np.ndarray:
    """Preprocess a batch of raw images (N x H x W x C uint8, or digits) into float32 NCHW."""
    return _preset(preset).from_array(np.asarray(x))


def load_image(path: str | os.PathLike, preset: str) -> np.ndarray:
    """Decode one image file and preprocess it into a float32 CHW array."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            return _preset(preset).from_image(img)
    except (UnidentifiedImageError, OSError) as e:
        raise FaaqError(f"cannot decode image {p}: {e}") from None
