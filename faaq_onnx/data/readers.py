"""Finding data files and reading them: paths, .npz/.npy files, folder listings, subsets."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faaq_onnx.errors import FaaqError

DATA_DIR_ENV = "FAAQ_DATA_DIR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


def _held_out(n: int, taken: np.ndarray | None, count: int, seed: int) -> np.ndarray:
    """Sorted indices of `count` samples not in `taken`, drawn with their own seed.

    The calibration subset stays what `_subset` gives for (limit, seed): holding samples
    out for verification never changes which samples calibrate.
    """
    if count <= 0:
        return np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(n), taken) if taken is not None else np.zeros(0, np.int64)
    if len(rest) == 0:
        return rest
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(rest, size=min(count, len(rest)), replace=False))


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
    """Files of the model's rank are batches, one rank lower are samples (see the package doc)."""
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
            raise FaaqError(
                f"input {name!r}: {f.name} has dtype {a.dtype}, {files[0].name} {first.dtype}"
            )
    return np.concatenate(parts, axis=0)
