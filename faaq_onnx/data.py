"""Turn the user's calibration / evaluation data into arrays a model can take.

Everything a user can get wrong here (a missing file, a wrong input name, a shape that
does not fit, NaN in the data, an empty folder) becomes a one-line ``FaaqError`` that
names the problem, so a bad calibration set fails before any quantization work starts.

Sources ``load_inputs`` understands:

(a) ``.npz`` with one array per model input name (batch on axis 0);
(b) ``.npz`` with ``x`` (and optionally ``y``, ignored here) for a one-input model;
    a single-array ``.npz`` or a ``.npy`` file also works for one input;
(c) a folder of ``.npy`` files: for a one-input model the ``*.npy`` files in the folder;
    for any model, one subfolder per input name holding ``*.npy`` files, paired across
    inputs by sorted file name. A file whose rank equals the model input's rank is a
    batch; one rank lower is a single sample. Without known shapes every file is a batch;
(d) a folder of images (``.jpg .jpeg .png``, any case) for a one-input model, decoded
    and preprocessed by a preset.

Raw uint8 images (``N x H x W x C`` with C = 1 or 3) get a preprocessing preset
(explicit, or guessed: 8x8x1 digits, 32x32x3 cifar10, other RGB imagenet) unless they
already have the model's input shape. Other floating arrays are passed as float32 and
integer arrays keep their dtype (token ids must stay int64).

Relative paths are looked up in ``$FAAQ_DATA_DIR`` when they do not exist as given.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from faaq_onnx.errors import FaaqError

__all__ = [
    "DATA_DIR_ENV",
    "IMAGE_SUFFIXES",
    "PRESETS",
    "Preset",
    "apply_preset",
    "guess_preset",
    "iter_batches",
    "load_image",
    "load_inputs",
    "load_labeled",
    "read_labels_file",
    "resolve_data_path",
]

DATA_DIR_ENV = "FAAQ_DATA_DIR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# ---------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------


def _pil_resize(img, size: tuple[int, int]):
    from PIL import Image

    return img.resize(size, Image.BILINEAR)


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


def _normalize_rgb(hwc_u8: np.ndarray) -> np.ndarray:
    x = hwc_u8.astype(np.float32) / 255.0
    return ((x - _IMAGENET_MEAN) / _IMAGENET_STD).transpose(2, 0, 1)


def _cifar10_image(img) -> np.ndarray:
    img = img.convert("RGB")
    if img.size != (32, 32):
        img = _pil_resize(img, (32, 32))
    return _normalize_rgb(np.asarray(img))


def _imagenet_image(img) -> np.ndarray:
    img = _resize_shorter_center_crop(img.convert("RGB"), 256, 224)
    return _normalize_rgb(np.asarray(img))


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
        "cifar10", lambda x: _rgb_array(x, "cifar10", _cifar10_image), _cifar10_image,
        "32x32 RGB, /255, mean (0.485,0.456,0.406) std (0.229,0.224,0.225)",
    ),
    "imagenet": Preset(
        "imagenet", lambda x: _rgb_array(x, "imagenet", _imagenet_image), _imagenet_image,
        "resize shorter side 256 (bilinear), centre crop 224, /255, ImageNet mean/std",
    ),
    "digits": Preset(
        "digits", _digits_array, _digits_image,
        "scikit-learn digits: values 0..16 /16, N x 1 x 8 x 8 (image files: /255)",
    ),
    "none": Preset(
        "none", lambda x: np.asarray(x, dtype=np.float32), _none_image,
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


# ---------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------


def resolve_data_path(p: str | os.PathLike) -> Path:
    """Find a data file as given, else under $FAAQ_DATA_DIR, so ``--data cifar10/x.npz`` works."""
    path = Path(p).expanduser()
    if path.exists():
        return path
    root = os.environ.get(DATA_DIR_ENV)
    if root and not path.is_absolute():
        cand = Path(root).expanduser() / path
        if cand.exists():
            return cand
        raise FaaqError(f"data not found: {p} (looked here and in {DATA_DIR_ENV}={root})")
    hint = "" if root else f" (set {DATA_DIR_ENV} to look for relative paths in a data directory)"
    raise FaaqError(f"data not found: {p}{hint}")


# ---------------------------------------------------------------------------------
# Reading sources
# ---------------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise FaaqError(f"not a readable .npz file: {path} ({type(e).__name__}: {e})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise FaaqError(f"not a readable .npy file: {path} ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise FaaqError(f"not a .npy array file: {path}")
    return arr


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded random subset (order kept), or None for everything."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise FaaqError(f"limit must be a positive integer, got {limit!r}")
    if limit >= n:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(limit), replace=False))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _npy_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".npy")


def _stack_npy(files: list[Path], shape: Sequence | None, name: str) -> np.ndarray:
    """Files of the model's rank are batches, one rank lower are samples (see module doc)."""
    parts = []
    for f in files:
        arr = _read_npy(f)
        if shape is not None and arr.ndim == len(shape) - 1:
            arr = arr[None]
        elif arr.ndim == 0:
            raise FaaqError(f"{f} holds a scalar, not a sample or batch for input {name!r}")
        parts.append(arr)
    first = parts[0]
    for f, a in zip(files, parts):
        if a.shape[1:] != first.shape[1:]:
            raise FaaqError(
                f"input {name!r}: {f.name} has sample shape {tuple(a.shape[1:])}, "
                f"but {files[0].name} has {tuple(first.shape[1:])}"
            )
        if a.dtype != first.dtype:
            raise FaaqError(f"input {name!r}: {f.name} has dtype {a.dtype}, {files[0].name} {first.dtype}")
    return np.concatenate(parts, axis=0)


def _is_raw_images(arr: np.ndarray) -> bool:
    return arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3)


def _fits(arr_shape: Sequence[int], shape: Sequence | None) -> bool:
    if shape is None or len(arr_shape) != len(shape):
        return False
    return all(not isinstance(d, int) or d < 0 or d == a for a, d in zip(arr_shape[1:], shape[1:]))


def _prepare(arr: np.ndarray, name: str, preset: str | None, shape: Sequence | None) -> np.ndarray:
    """Apply the explicit or guessed preset; see the module doc for the rule."""
    _check_dtype(arr, name)
    if preset is not None:
        return apply_preset(arr, preset)
    if _is_raw_images(arr) and not _fits(arr.shape, shape):
        guess = _preset_for_model(shape) or guess_preset(*arr.shape[1:])
        if guess is None:
            raise FaaqError(
                f"input {name!r} holds uint8 images of shape {tuple(arr.shape[1:])} and no "
                f"preset fits them; choose one of: {', '.join(PRESETS)}"
            )
        return apply_preset(arr, guess)
    if np.issubdtype(arr.dtype, np.floating) and arr.dtype != np.float32:
        return arr.astype(np.float32)
    return arr


def _check_dtype(arr: np.ndarray, name: str) -> None:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(
        arr.dtype, np.complexfloating
    ):
        raise FaaqError(f"input {name!r} has non-numeric dtype {arr.dtype}")


def validate_inputs(inputs: dict[str, np.ndarray], shapes: dict[str, Sequence] | None) -> None:
    counts = {}
    for name, arr in inputs.items():
        _check_dtype(arr, name)
        if arr.ndim == 0:
            raise FaaqError(f"input {name!r} is a scalar; expected a batch with samples on axis 0")
        if arr.shape[0] == 0 or arr.size == 0:
            raise FaaqError(f"input {name!r} is empty (shape {tuple(arr.shape)}, zero samples)")
        shape = (shapes or {}).get(name)
        if shape is not None:
            want = "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"
            if arr.ndim != len(shape):
                raise FaaqError(
                    f"input {name!r} has rank {arr.ndim} (shape {tuple(arr.shape)}); "
                    f"the model expects rank {len(shape)} {want}"
                )
            for axis, (a, d) in enumerate(zip(arr.shape, shape)):
                if axis > 0 and isinstance(d, (int, np.integer)) and d >= 0 and a != d:
                    raise FaaqError(
                        f"input {name!r} has shape {tuple(arr.shape)}; the model expects {want} "
                        f"(axis {axis}: {a} vs {d})"
                    )
        if np.issubdtype(arr.dtype, np.floating):
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(np.isinf(arr).sum())
            if n_nan or n_inf:
                raise FaaqError(f"input {name!r} has {n_nan} NaN and {n_inf} Inf values")
        counts[name] = arr.shape[0]
    if len(set(counts.values())) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in counts.items())
        raise FaaqError(f"inputs have different sample counts: {desc}")


def _guess_image_preset(files: list[Path], shape: Sequence | None, preset: str | None) -> str:
    if preset is not None:
        return _preset(preset).name
    guess = _preset_for_model(shape)
    if guess is None:
        from PIL import Image

        try:
            with Image.open(files[0]) as img:
                w, h = img.size
                c = 1 if img.mode in ("L", "1") else 3
        except OSError as e:
            raise FaaqError(f"cannot decode image {files[0]}: {e}") from None
        guess = guess_preset(h, w, c)
    if guess is None:
        raise FaaqError(f"cannot guess a preset for images like {files[0].name}; choose one of: {', '.join(PRESETS)}")
    return guess


def _load_images(files: list[Path], preset: str) -> np.ndarray:
    return np.stack([load_image(f, preset) for f in files]).astype(np.float32)


def load_inputs(
    path: str | os.PathLike,
    input_names: list[str],
    input_shapes: dict[str, list] | None = None,
    preset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Load and validate one stacked array per model input (batch on axis 0).

    ``input_shapes`` are the model's shapes (ints, or None / str / -1 for symbolic dims);
    when given, every non-batch dimension must match. ``limit`` keeps a seeded random
    subset, in the original order.
    """
    if not input_names:
        raise FaaqError("the model has no inputs to load data for")
    names = list(input_names)
    shapes = input_shapes or {}
    p = resolve_data_path(path)
    single = names[0] if len(names) == 1 else None
    if preset is not None:
        _preset(preset)
    raw: dict[str, np.ndarray]

    if p.is_dir():
        sub = {n: p / n for n in names if (p / n).is_dir()}
        npys = _npy_files(p)
        images = _image_files(p)
        if len(sub) == len(names):
            raw = {}
            listing = {n: _npy_files(d) for n, d in sub.items()}
            stems = {n: [f.name for f in fs] for n, fs in listing.items()}
            ref = names[0]
            for n in names:
                if not listing[n]:
                    raise FaaqError(f"no .npy files in {sub[n]} for input {n!r}")
                if stems[n] != stems[ref]:
                    raise FaaqError(f"input folders {ref!r} and {n!r} in {p} do not hold the same file names")
            idx = _subset(len(listing[ref]), limit, seed)
            for n in names:
                fs = listing[n] if idx is None else [listing[n][i] for i in idx]
                raw[n] = _stack_npy(fs, shapes.get(n), n)
            limit = None  # already applied per file
        elif single is None:
            missing = [n for n in names if n not in sub]
            found = sorted(d.name for d in p.iterdir() if d.is_dir())
            raise FaaqError(
                f"folder {p} needs one subfolder per input; missing: {', '.join(missing)} "
                f"(found: {', '.join(found) or 'none'})"
            )
        elif npys and images:
            raise FaaqError(f"folder {p} holds both .npy files and images; keep one kind")
        elif npys:
            idx = _subset(len(npys), limit, seed)
            fs = npys if idx is None else [npys[i] for i in idx]
            raw = {single: _stack_npy(fs, shapes.get(single), single)}
            limit = None
        elif images:
            idx = _subset(len(images), limit, seed)
            fs = images if idx is None else [images[i] for i in idx]
            ps = _guess_image_preset(fs, shapes.get(single), preset)
            arr = _load_images(fs, ps)
            validate_inputs({single: arr}, shapes)
            return {single: arr}
        else:
            raise FaaqError(f"folder {p} is empty: no .npy files or images ({', '.join(IMAGE_SUFFIXES)})")
    elif p.suffix.lower() == ".npy":
        if single is None:
            raise FaaqError(f"a .npy file feeds one input, but the model has {len(names)}: {', '.join(names)}")
        raw = {single: _read_npy(p)}
    else:
        arrays = _read_npz(p)
        if all(n in arrays for n in names):
            raw = {n: arrays[n] for n in names}
        elif single is not None and "x" in arrays:
            raw = {single: arrays["x"]}
        elif single is not None and len(arrays) == 1:
            raw = {single: next(iter(arrays.values()))}
        else:
            missing = [n for n in names if n not in arrays]
            raise FaaqError(
                f"input {', '.join(map(repr, missing))} missing from {p.name}; "
                f"found arrays: {', '.join(arrays) or 'none'}"
            )

    out = {}
    for n, arr in raw.items():
        _check_dtype(arr, n)
        if arr.ndim == 0 or arr.shape[0] == 0:
            validate_inputs({n: arr}, None)
        idx = _subset(arr.shape[0], limit, seed)
        out[n] = arr if idx is None else arr[idx]
    validate_inputs({n: a for n, a in out.items()}, None)  # counts, NaN on raw data
    out = {n: _prepare(a, n, preset, shapes.get(n)) for n, a in out.items()}
    validate_inputs(out, shapes)
    return out


# ---------------------------------------------------------------------------------
# Labeled data
# ---------------------------------------------------------------------------------


def read_labels_file(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Parse ``FILENAME, LABEL`` lines (blank lines and '#' comments skipped)."""
    p = resolve_data_path(path)
    out = []
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FaaqError(f"cannot read labels file {p}: {e}") from None
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [s.strip() for s in line.replace("\t", ",").split(",")]
        parts = [s for s in parts if s]
        if len(parts) != 2:
            parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            out.append((parts[0], int(parts[1])))
        except ValueError:
            raise FaaqError(f"labels file {p} line {i}: expected 'FILENAME, LABEL', got {line!r}") from None
    if not out:
        raise FaaqError(f"labels file {p} is empty")
    return out


def _default_labels(folder: Path) -> Path | None:
    for cand in (folder / "labels.txt", folder.parent / f"{folder.name}_labels.txt"):
        if cand.is_file():
            return cand
    return None


def load_labeled(
    path: str | os.PathLike,
    preset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    labels: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load (x float32, y int64) for accuracy: an ``x``/``y`` .npz, or images plus a labels file.

    For an image folder the labels file defaults to ``FOLDER/labels.txt`` or a sibling
    ``FOLDER_labels.txt`` (the layout of the ImageNet val1300 set); only the images it
    lists are used, in its order.
    """
    p = resolve_data_path(path)
    if preset is not None:
        _preset(preset)
    if p.is_dir():
        lab_path = resolve_data_path(labels) if labels is not None else _default_labels(p)
        if lab_path is None:
            raise FaaqError(f"image folder {p} needs a labels file (FILENAME, LABEL lines); pass labels=")
        entries = read_labels_file(lab_path)
        idx = _subset(len(entries), limit, seed)
        if idx is not None:
            entries = [entries[i] for i in idx]
        files = []
        for fname, _ in entries:
            f = p / fname
            if not f.is_file():
                raise FaaqError(f"labels file {lab_path.name} names {fname}, which is not in {p}")
            files.append(f)
        ps = _guess_image_preset(files, None, preset)
        x = _load_images(files, ps)
        y = np.array([lab for _, lab in entries], dtype=np.int64)
    else:
        arrays = _read_npz(p)
        for k in ("x", "y"):
            if k not in arrays:
                raise FaaqError(f"labeled data {p.name} needs arrays 'x' and 'y'; found: {', '.join(arrays) or 'none'}")
        x, y = arrays["x"], arrays["y"]
        _check_dtype(x, "x")
        if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise FaaqError(f"labels 'y' in {p.name} must be a 1-D integer array, got shape {tuple(y.shape)} dtype {y.dtype}")
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
            raise FaaqError(f"labels 'y' in {p.name} are not whole numbers")
        if x.ndim == 0 or len(x) != len(y):
            raise FaaqError(f"{p.name}: 'x' has {len(x) if x.ndim else 0} samples but 'y' has {len(y)}")
        idx = _subset(len(y), limit, seed)
        if idx is not None:
            x, y = x[idx], y[idx]
        validate_inputs({"x": x}, None)
        x = _prepare(x, "x", preset, None)
        y = y.astype(np.int64)
    validate_inputs({"x": x}, None)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x, y


def iter_batches(inputs: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Slice all inputs in step so every batch stays a consistent feed dict."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise FaaqError(f"batch size must be a positive integer, got {batch_size!r}")
    if not inputs:
        return
    counts = {k: v.shape[0] for k, v in inputs.items()}
    if len(set(counts.values())) > 1:
        raise FaaqError("inputs have different sample counts: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    n = next(iter(counts.values()))
    for i in range(0, n, batch_size):
        yield {k: v[i:i + batch_size] for k, v in inputs.items()}
