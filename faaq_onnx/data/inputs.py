"""Model inputs from a data source: loading, preset guessing and validation.

See the package doc (``faaq_onnx.data``) for the sources and the preset rule.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, overload

import numpy as np

from faaq_onnx.data.presets import (
    PRESETS,
    _preset,
    _preset_for_model,
    apply_preset,
    guess_preset,
    load_image,
)
from faaq_onnx.data.readers import (
    IMAGE_SUFFIXES,
    _held_out,
    _image_files,
    _npy_files,
    _read_npy,
    _read_npz,
    _stack_npy,
    _subset,
    resolve_data_path,
)
from faaq_onnx.errors import FaaqError


def _is_raw_images(arr: np.ndarray) -> bool:
    return arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3)


def _fits(arr_shape: Sequence[int], shape: Sequence | None) -> bool:
    if shape is None or len(arr_shape) != len(shape):
        return False
    return all(not isinstance(d, int) or d < 0 or d == a for a, d in zip(arr_shape[1:], shape[1:]))


def _prepare(arr: np.ndarray, name: str, preset: str | None, shape: Sequence | None) -> np.ndarray:
    """Apply the explicit or guessed preset; see the package doc for the rule."""
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


def validate_inputs(
    inputs: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence] | None
) -> None:
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
            if arr.ndim == len(shape) + 1:  # one whole feed per sample: every axis must fit
                _check_stacked(arr, name, shape, want)
            elif arr.ndim != len(shape):
                raise FaaqError(
                    f"input {name!r} has rank {arr.ndim} (shape {tuple(arr.shape)}); "
                    f"the model expects rank {len(shape)} {want}, or rank {len(shape) + 1} "
                    "for one whole feed per sample"
                )
            else:
                _check_batch(arr, name, shape, want)
        if np.issubdtype(arr.dtype, np.floating) and isinstance(
            arr, np.ndarray
        ):  # raw images hold no NaN
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(np.isinf(arr).sum())
            if n_nan or n_inf:
                raise FaaqError(f"input {name!r} has {n_nan} NaN and {n_inf} Inf values")
        counts[name] = arr.shape[0]
    if len(set(counts.values())) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in counts.items())
        raise FaaqError(f"inputs have different sample counts: {desc}")


def _check_batch(arr: np.ndarray, name: str, shape: Sequence, want: str) -> None:
    for axis, (a, d) in enumerate(zip(arr.shape, shape)):
        if axis > 0 and isinstance(d, (int, np.integer)) and d >= 0 and a != d:
            raise FaaqError(
                f"input {name!r} has shape {tuple(arr.shape)}; the model expects {want} "
                f"(axis {axis}: {a} vs {d})"
            )


def _check_stacked(arr: np.ndarray, name: str, shape: Sequence, want: str) -> None:
    for axis, (a, d) in enumerate(zip(arr.shape[1:], shape)):
        if isinstance(d, (int, np.integer)) and d > 0 and a != d:
            raise FaaqError(
                f"input {name!r} has shape {tuple(arr.shape)}: read as one whole feed per sample "
                f"(rank {arr.ndim} for an input of rank {len(shape)}), each must have the "
                f"model's shape {want} (axis {axis}: {a} vs {d})"
            )


def stacked_inputs(inputs: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence]) -> list[str]:
    """Inputs given as one whole feed per sample (rank one more than the model's input): the
    way to feed inputs that have no sample axis of their own, or none in front."""
    return [n for n, a in inputs.items() if n in shapes and a.ndim == len(shapes[n]) + 1]


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
        raise FaaqError(
            f"cannot guess a preset for images like {files[0].name}; choose one of: {', '.join(PRESETS)}"
        )
    return guess


def _load_images(files: list[Path], preset: str) -> np.ndarray:
    return np.stack([load_image(f, preset) for f in files]).astype(np.float32)


Arrays = dict[str, np.ndarray]


@overload
def load_inputs(
    path: str | os.PathLike,
    input_names: list[str],
    input_shapes: dict[str, list] | None = None,
    preset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    held_out: Literal[0] = 0,
) -> Arrays: ...
@overload
def load_inputs(
    path: str | os.PathLike,
    input_names: list[str],
    input_shapes: dict[str, list] | None = None,
    preset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    *,
    held_out: int,
) -> Arrays | tuple[Arrays, Arrays]: ...
def load_inputs(
    path: str | os.PathLike,
    input_names: list[str],
    input_shapes: dict[str, list] | None = None,
    preset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    held_out: int = 0,
) -> Arrays | tuple[Arrays, Arrays]:
    """Load and validate one stacked array per model input (batch on axis 0).

    ``input_shapes`` are the model's shapes (ints, or None / str / -1 for symbolic dims);
    when given, every non-batch dimension must match. ``limit`` keeps a seeded random
    subset, in the original order. With ``held_out=N`` the result is a pair: the subset,
    and up to N other samples of the source (none when the subset took them all).
    """
    if held_out:
        return _load_split(path, input_names, input_shapes, preset, limit, seed, held_out)
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
                    raise FaaqError(
                        f"input folders {ref!r} and {n!r} in {p} do not hold the same file names"
                    )
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
            raise FaaqError(
                f"folder {p} is empty: no .npy files or images ({', '.join(IMAGE_SUFFIXES)})"
            )
    else:
        raw = _raw_file_arrays(p, names)

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


def iter_batches(inputs: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Slice all inputs in step so every batch stays a consistent feed dict."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise FaaqError(f"batch size must be a positive integer, got {batch_size!r}")
    if not inputs:
        return
    counts = {k: v.shape[0] for k, v in inputs.items()}
    if len(set(counts.values())) > 1:
        raise FaaqError(
            "inputs have different sample counts: "
            + ", ".join(f"{k}={v}" for k, v in counts.items())
        )
    n = next(iter(counts.values()))
    for i in range(0, n, batch_size):
        yield {k: v[i : i + batch_size] for k, v in inputs.items()}


def _raw_file_arrays(p: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays of an .npz/.npy file for each input, as stored (no preset applied yet)."""
    single = names[0] if len(names) == 1 else None
    if p.suffix.lower() == ".npy":
        if single is None:
            raise FaaqError(
                f"a .npy file feeds one input, but the model has {len(names)}: {', '.join(names)}"
            )
        return {single: _read_npy(p)}
    arrays = _read_npz(p)
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if single is not None and "x" in arrays:
        return {single: arrays["x"]}
    if single is not None and len(arrays) == 1:
        return {single: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    raise FaaqError(
        f"input {', '.join(map(repr, missing))} missing from {p.name}; "
        f"found arrays: {', '.join(arrays) or 'none'}"
    )


def _prepared_subset(raw: dict, idx, names, preset, shapes) -> dict[str, np.ndarray]:
    """Select samples first, then apply the preset: raw images stay raw until a batch is read
    (data.lazy.PresetArray), so memory does not grow with the number of samples."""
    from faaq_onnx.data.lazy import PresetArray

    out: dict[str, np.ndarray] = {}
    for n, a in raw.items():
        shape = (shapes or {}).get(n)
        name = _preset_name(a, n, preset, shape)
        if name is not None and len(a):
            validate_inputs({n: a if idx is None else a[idx[:1]]}, None)
            # an ndarray stand-in that prepares the samples it is asked for
            out[n] = PresetArray(a, idx, name)  # type: ignore[assignment]
        else:
            sub = a if idx is None else a[idx]
            validate_inputs({n: sub}, None)
            out[n] = _prepare(sub, n, preset, shape)
    validate_inputs(out, shapes)
    return out


def _preset_name(arr: np.ndarray, name: str, preset: str | None, shape) -> str | None:
    """The preset _prepare would apply to these raw arrays (None: used as they are)."""
    _check_dtype(arr, name)
    if preset is not None:
        return _preset(preset).name
    if _is_raw_images(arr) and not _fits(arr.shape, shape):
        guess = _preset_for_model(shape) or guess_preset(*arr.shape[1:])
        if guess is None:
            raise FaaqError(
                f"input {name!r} holds uint8 images of shape {tuple(arr.shape[1:])} and no "
                f"preset fits them; choose one of: {', '.join(PRESETS)}"
            )
        return guess
    return None


def _load_split(path, names, shapes, preset, limit, seed, held_out):
    """(calibration subset, held-out samples): disjoint index sets of one source."""
    p = resolve_data_path(path)
    if p.is_file():
        raw = _raw_file_arrays(p, list(names))
        for n, a in raw.items():
            _check_dtype(a, n)
            if a.ndim == 0 or a.shape[0] == 0:
                validate_inputs({n: a}, None)
        n = len(next(iter(raw.values())))
        idx = _subset(n, limit, seed)
        hidx = _held_out(n, idx, held_out, seed)
        calib = _prepared_subset(raw, idx, names, preset, shapes)
        held = (
            _prepared_subset(raw, hidx, names, preset, shapes)
            if len(hidx)
            else {k: v[:0] for k, v in calib.items()}
        )
        return calib, held
    calib = load_inputs(path, names, shapes, preset, limit, seed)
    p = resolve_data_path(path)
    files = _npy_files(p) or _image_files(p) if len(names) == 1 else []
    idx = _subset(len(files), limit, seed) if files else None
    hidx = _held_out(len(files), idx, held_out, seed) if files else []
    if len(hidx) == 0:  # nothing left over (or one subfolder per input): no held-out set
        return calib, {k: v[:0] for k, v in calib.items()}
    chosen = [files[i] for i in hidx]
    name = names[0]
    if chosen[0].suffix.lower() == ".npy":
        held = _stack_npy(chosen, (shapes or {}).get(name), name)
        held = _prepare(held, name, preset, (shapes or {}).get(name))
    else:
        held = _load_images(chosen, _guess_image_preset(chosen, (shapes or {}).get(name), preset))
    validate_inputs({name: held}, shapes)
    return calib, {name: held}
