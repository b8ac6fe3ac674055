"""Labeled data for models with several inputs: an .npz with ``y`` and one array per input.

``load_labeled`` reads ``x``/``y`` for one-input models (images). A text classifier
takes ``input_ids`` and ``attention_mask`` (and maybe ``token_type_ids``): its labeled
set is an .npz holding ``y`` next to one array per model input name, the layout of a
calibration .npz plus the labels. Integer arrays keep their dtype (token ids stay
int64); other floating arrays become float32.
"""

from __future__ import annotations

import os

import numpy as np

from faaq_onnx.data.inputs import validate_inputs
from faaq_onnx.data.labeled import load_labeled
from faaq_onnx.data.readers import _read_npz, _subset, resolve_data_path
from faaq_onnx.errors import FaaqError


def is_multi_input_labeled(path: str | os.PathLike) -> bool:
    """True for an .npz with ``y``, no ``x`` and at least one other array."""
    p = resolve_data_path(path)
    if p.is_dir() or p.suffix.lower() != ".npz":
        return False
    try:
        with np.load(p, allow_pickle=False) as z:
            names = set(z.files)
    except (OSError, ValueError):
        return False  # load_labeled names the problem
    return "y" in names and "x" not in names and len(names) > 1


def load_labeled_inputs(
    path: str | os.PathLike, limit: int | None = None, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(inputs by name, y int64) from an .npz with ``y`` and one array per model input."""
    p = resolve_data_path(path)
    arrays = _read_npz(p)
    if "y" not in arrays:
        raise FaaqError(f"labeled data {p.name} needs an array 'y' of labels")
    y = arrays.pop("y")
    if not arrays:
        raise FaaqError(f"labeled data {p.name} holds labels 'y' but no input arrays")
    if y.ndim != 1 or not (
        np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    ):
        raise FaaqError(
            f"labels 'y' in {p.name} must be a 1-D integer array, got shape {tuple(y.shape)} dtype {y.dtype}"
        )
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise FaaqError(f"labels 'y' in {p.name} are not whole numbers")
    for name, a in arrays.items():
        if a.ndim == 0 or len(a) != len(y):
            raise FaaqError(
                f"{p.name}: input {name!r} has {len(a) if a.ndim else 0} samples but 'y' has {len(y)}"
            )
    idx = _subset(len(y), limit, seed)
    if idx is not None:
        arrays, y = {k: a[idx] for k, a in arrays.items()}, y[idx]
    validate_inputs(arrays, None)
    arrays = {
        k: a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a
        for k, a in arrays.items()
    }
    return arrays, y.astype(np.int64)


def load_labeled_data(
    path: str | os.PathLike,
    preset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    labels: str | os.PathLike | None = None,
) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]:
    """``load_labeled`` for x/y data and image folders, ``load_labeled_inputs`` for an .npz
    with ``y`` and named inputs (x is then a dict by input name)."""
    if labels is None and preset is None and is_multi_input_labeled(path):
        return load_labeled_inputs(path, limit=limit, seed=seed)
    kwargs = {"labels": labels} if labels is not None else {}
    return load_labeled(path, preset=preset, limit=limit, seed=seed, **kwargs)


def named_feeds(inputs, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check named arrays against an ORT session's inputs (names, rank, fixed dims)."""
    want = {i.name: i.shape for i in inputs}
    if set(x) != set(want):
        raise FaaqError(f"labeled data holds inputs {sorted(x)}; the model takes {sorted(want)}")
    for name, shape in want.items():
        a = x[name]
        if len(shape) != a.ndim or any(
            isinstance(d, int) and d != s for d, s in zip(shape[1:], a.shape[1:])
        ):
            raise FaaqError(
                f"data shape {tuple(a.shape)} does not fit model input {name!r} {shape}"
            )
    return dict(x)
