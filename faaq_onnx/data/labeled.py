"""Labeled data for accuracy: ``x``/``y`` arrays from an .npz, or images plus a labels file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from faaq_onnx.data.inputs import (
    _check_dtype,
    _guess_image_preset,
    _load_images,
    _prepare,
    validate_inputs,
)
from faaq_onnx.data.presets import _preset
from faaq_onnx.data.readers import _read_npz, _subset, resolve_data_path
from faaq_onnx.errors import FaaqError


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
            raise FaaqError(
                f"labels file {p} line {i}: expected 'FILENAME, LABEL', got {line!r}"
            ) from None
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
            raise FaaqError(
                f"image folder {p} needs a labels file (FILENAME, LABEL lines); pass labels="
            )
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
                raise FaaqError(
                    f"labeled data {p.name} needs arrays 'x' and 'y'; found: {', '.join(arrays) or 'none'}"
                )
        x, y = arrays["x"], arrays["y"]
        _check_dtype(x, "x")
        if y.ndim != 1 or not (
            np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
        ):
            raise FaaqError(
                f"labels 'y' in {p.name} must be a 1-D integer array, got shape {tuple(y.shape)} dtype {y.dtype}"
            )
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
            raise FaaqError(f"labels 'y' in {p.name} are not whole numbers")
        if x.ndim == 0 or len(x) != len(y):
            raise FaaqError(
                f"{p.name}: 'x' has {len(x) if x.ndim else 0} samples but 'y' has {len(y)}"
            )
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
