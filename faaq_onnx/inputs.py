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
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
        if shape:
            shape[0] = n if not (isinstance(dims[0], int) and dims[0] > 0) else dims[0] * max(1, n // dims[0])
        dt = dtypes[name]
        if np.issubdtype(dt, np.integer):
            out[name] = rng.integers(0, 2, size=shape).astype(dt)
        else:
            out[name] = rng.standard_normal(shape).astype(dt)
    return out


def prepare_calibration(calib, proto: onnx.ModelProto, config) -> dict[str, np.ndarray]:
    shapes = model_input_shapes(proto)
    dtypes = model_input_dtypes(proto)
    if calib is None:
        raise FaaqError("no calibration data: pass --calib FILE (or --calib random for a smoke test)")
    if isinstance(calib, str) and re.fullmatch(r"random(:\d+)?", calib):
        n = int(calib.split(":")[1]) if ":" in calib else 32
        if n < 1:
            raise FaaqError("random calibration needs at least one sample")
        return random_inputs(proto, n, config.seed)
    if isinstance(calib, dict):
        missing = [n for n in shapes if n not in calib]
        if missing:
            raise FaaqError(f"calibration data has no array for input {missing[0]!r} (found: {', '.join(calib) or 'none'})")
        inputs = {n: np.asarray(calib[n]) for n in shapes}
        if config.calib_size:
            inputs = {k: v[: config.calib_size] for k, v in inputs.items()}
    else:
        inputs = data.load_inputs(calib, list(shapes), shapes, limit=config.calib_size, seed=config.seed)
    data.validate_inputs(inputs, shapes)
    return {k: v.astype(dtypes[k], copy=False) for k, v in inputs.items()}
