"""Turn what the user gave as calibration data into validated model inputs.

Accepts a dict of arrays (Python API), a path (.npz, .npy folder, image folder; see
faaq_onnx.data) or 'random[:N]' for a smoke run without data.
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from faaq_onnx import data
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import model_input_dtypes, model_input_shapes


def random_inputs(proto: onnx.ModelProto, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal data shaped like the inputs (symbolic dims become 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    dtypes = model_input_dtypes(proto)
    for name, dims in model_input_shapes(proto).items():
        shape = [d if _fixed(d) else 1 for d in dims]
        if shape:
            shape[0] = dims[0] * max(1, n // dims[0]) if _fixed(dims[0]) else n
        dt = dtypes[name]
        if np.issubdtype(dt, np.integer):
            out[name] = rng.integers(0, 2, size=shape).astype(dt)
        else:
            out[name] = rng.standard_normal(shape).astype(dt)
    return out


def prepare_calibration(calib, proto: onnx.ModelProto, config) -> tuple[dict, dict, list[str]]:
    """(calibration inputs, held-out verification inputs, notes).

    Verification measures the emitted model on samples that neither calibration nor
    sensitivity saw: `config.verify_samples` more samples drawn from the same source
    (a disjoint seeded draw, so the calibration subset is unchanged). Where the source
    has nothing left over, the first calibration samples stand in, and a note says so.
    """
    shapes = model_input_shapes(proto)
    dtypes = model_input_dtypes(proto)
    if calib is None:
        raise FaaqError(
            "no calibration data: pass --calib FILE (or --calib random for a smoke test)"
        )
    held_n = config.verify_samples
    random_note: str | None = None  # --calib random: what it made of symbolic dims
    if isinstance(calib, str) and re.fullmatch(r"(none|bn-stats)(:\d+)?", calib):
        from faaq_onnx.optimize.datafree import distill_inputs

        n = int(calib.split(":")[1]) if ":" in calib else min(config.calib_size or 128, 128)
        if n < 1:
            raise FaaqError("data-free calibration needs at least one sample")
        inputs = distill_inputs(proto, n, config.seed, progress=config.progress)
        return (
            inputs,
            {k: v[:held_n] for k, v in inputs.items()},
            [
                f"data-free calibration: {n} inputs distilled from the model's BatchNorm statistics (ZeroQ); "
                "verification runs on distilled inputs too"
            ],
        )
    if isinstance(calib, str) and re.fullmatch(r"random(:\d+)?", calib):
        n = int(calib.split(":")[1]) if ":" in calib else 32
        if n < 1:
            raise FaaqError("random calibration needs at least one sample")
        inputs = random_inputs(proto, n, config.seed)
        held = random_inputs(proto, held_n, config.seed + 1) if held_n else {}
        random_note = _symbolic_dims_note(shapes, inputs)
    elif isinstance(calib, dict):
        missing = [n for n in shapes if n not in calib]
        if missing:
            raise FaaqError(
                f"calibration data has no array for input {missing[0]!r} (found: {', '.join(calib) or 'none'})"
            )
        arrays = {n: np.asarray(calib[n]) for n in shapes}
        cut = config.calib_size or len(next(iter(arrays.values())))
        inputs = {k: v[:cut] for k, v in arrays.items()}
        held = {k: v[cut : cut + held_n] for k, v in arrays.items()}
    else:
        loaded = data.load_inputs(
            calib,
            list(shapes),
            shapes,
            preset=getattr(config, "preset", None),
            limit=config.calib_size,
            seed=config.seed,
            held_out=max(held_n, 1),
        )
        assert isinstance(loaded, tuple)  # held_out > 0: the subset and the samples held out
        inputs, held = loaded
        held = {k: v[:held_n] for k, v in held.items()}
    data.validate_inputs(inputs, shapes)
    notes: list[str] = []
    if random_note:
        notes.append(random_note)
    if not held or len(next(iter(held.values()))) == 0:
        held = {k: v[:held_n] for k, v in inputs.items()}
        notes.append(
            f"verification uses {len(next(iter(held.values())))} of the calibration samples: "
            "the calibration source has no samples left over to hold out"
        )
    else:
        data.validate_inputs(held, shapes)
    cast = {k: dtypes[k] for k in shapes}
    return (
        {k: v.astype(cast[k], copy=False) for k, v in inputs.items()},
        {k: v.astype(cast[k], copy=False) for k, v in held.items()},
        notes,
    )


def reuses_calibration(inputs: dict, held: dict) -> bool:
    """True when the verification samples are the calibration's first ones (nothing was left
    over in the source to hold out)."""
    first = next(iter(inputs))
    n, m = len(inputs[first]), len(held[first]) if held else 0
    return m == 0 or (m <= n and all(np.array_equal(held[k], inputs[k][:m]) for k in inputs))


def split_off(inputs: dict, verify_samples: int) -> tuple[dict, dict, int] | None:
    """(calibration, held out, k): the calibration set's last k samples held out (a quarter, at
    most `verify_samples`, at least 2), or None when fewer than 2 can go and one stay."""
    n = len(next(iter(inputs.values())))
    k = min(verify_samples, max(n // 4, 2))
    if k < 2 or n - k < 1:
        return None
    return (
        {name: v[: n - k] for name, v in inputs.items()},
        {name: v[n - k :] for name, v in inputs.items()},
        k,
    )


def without_reuse_note(notes: list[str]) -> list[str]:
    return [t for t in notes if not t.startswith("verification uses")]


def _symbolic_dims_note(shapes: dict, inputs: dict) -> str | None:
    """What --calib random made of symbolic dims past the batch: 1, which an image model turns
    into a 1x1 picture (PP-OCRv4's detector then outputs zeros: nothing to measure)."""
    named = {
        name: "x".join(map(str, np.shape(inputs[name])))
        for name, dims in shapes.items()
        if not all(map(_fixed, dims[1:]))
    }
    if not named:
        return None
    listed = ", ".join(f"{k!r} {v}" for k, v in named.items())
    return (
        f"random calibration: symbolic dims past the batch set to 1 ({listed}): a smoke test of "
        "the pipeline, not data to quantize with"
    )


def _fixed(dim) -> bool:
    """A dim the graph fixes (a positive int), not a symbol or unknown."""
    return isinstance(dim, int) and dim > 0
