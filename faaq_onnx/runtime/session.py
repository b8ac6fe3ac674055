"""The one factory for ONNX Runtime inference sessions.

All sessions in faaq come from here so that execution-provider choice, threads and
optimization level are decided in one place and a missing CUDA provider is a clear
error rather than ORT's silent fallback to CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import all_nodes

ModelLike = str | os.PathLike | bytes | onnx.ModelProto

BIG_MODEL_BYTES = 1 << 30
# an in-memory model with more weight bytes than this hands them to ORT as arrays, not serialized
INLINE_HANDOVER_BYTES = 1 << 20
HANDOVER_MIN_BYTES = 4096  # initializers smaller than this stay in the serialized graph
IN_MEMORY = "faaq-in-memory"  # the external-data location of a weight light_model took out
_HANDOVER_TYPES: dict[int, type] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
}

_EP_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_eps() -> list[str]:
    """Short names ('cpu', 'cuda') of the providers this onnxruntime build offers."""
    have = set(ort.get_available_providers())
    return [short for short, full in _EP_NAMES.items() if full in have]


def resolve_ep(ep: str) -> str:
    """Map 'cpu' | 'cuda' | 'auto' to a provider that is really there."""
    ep = ep.lower()
    if ep == "auto":
        return "cuda" if "cuda" in available_eps() else "cpu"
    if ep not in _EP_NAMES:
        raise FaaqError(f"unknown execution provider {ep!r}: choose cpu, cuda or auto")
    if ep not in available_eps():
        raise FaaqError(
            f"execution provider {ep!r} is not available in this onnxruntime build "
            f"(have: {', '.join(available_eps())}); install onnxruntime-gpu and a CUDA runtime"
        )
    return ep


def make_session(
    model: ModelLike,
    ep: str = "cpu",
    threads: int | None = None,
    opt_level: str = "all",
    profile_prefix: str | None = None,
    optimized_model_path: str | None = None,
    log_severity: int = 3,
    spinning: bool = True,
    arrays: dict[str, np.ndarray] | None = None,
) -> ort.InferenceSession:
    """Create an InferenceSession on exactly the provider asked for.

    spinning=False stops the session's idle worker threads from busy-waiting after a run: with
    several sessions alive and timed in turn, those spinning threads take cores from the one
    being timed (on 2 cores this made every model 2-3x slower and the result depend on which
    model ran before).

    `arrays`: the weights of a model from light_model (or derived from one), by name.
    """
    ep = resolve_ep(ep)
    so = ort.SessionOptions()
    if opt_level not in _OPT_LEVELS:
        raise FaaqError(
            f"unknown optimization level {opt_level!r}: choose {', '.join(_OPT_LEVELS)}"
        )
    so.graph_optimization_level = _OPT_LEVELS[opt_level]
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = log_severity
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized_model_path:
        so.optimized_model_filepath = str(optimized_model_path)
        # big initializers go beside the saved graph, so the file stays under 2 GB
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name",
            Path(optimized_model_path).name + ".data",
        )
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1048576"
        )
    keep_alive = None
    if isinstance(model, onnx.ModelProto) and _in_memory_names(model):
        keep_alive = _hand_over(model, arrays or {}, so)
        payload = model.SerializeToString()
    elif isinstance(model, onnx.ModelProto):
        from faaq_onnx.external_data import external_bytes

        if external_bytes(model):  # weights in external data files: ORT maps them from disk
            if external_bytes(model) > BIG_MODEL_BYTES:
                so.add_session_config_entry(
                    "session.disable_prepacking", "1"
                )  # no second copy of the weights
            payload, keep_alive = _file_backed(model, so)
        elif _inline_bytes(model) > INLINE_HANDOVER_BYTES:
            light, held = light_model(model)
            keep_alive = _hand_over(light, held, so)
            payload = light.SerializeToString()
        else:
            payload = model.SerializeToString()
    elif isinstance(model, bytes):
        payload = model
    else:
        payload = str(Path(model))
    providers = [_EP_NAMES[ep]] + (["CPUExecutionProvider"] if ep != "cpu" else [])
    try:
        sess = ort.InferenceSession(payload, sess_options=so, providers=providers)
    except Exception as exc:  # ORT raises many types; all mean "this model does not load"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FaaqError(f"onnxruntime could not load the model: {msg}") from exc
    finally:
        if isinstance(payload, _Cleanup):
            _remove(payload.folder)
    if ep != "cpu" and _EP_NAMES[ep] not in sess.get_providers():
        raise FaaqError(f"onnxruntime did not enable {ep!r} for this session")
    if keep_alive is not None:
        sess._faaq_external = (
            keep_alive  # the session reads these buffers: they live as long as it does
        )
    return sess


def _file_backed(model: onnx.ModelProto, so: ort.SessionOptions):
    """(path, None) of the model written beside hard links to its data files, or (bytes, buffers).

    ORT maps an external data file it opens itself, so weights cost no memory until read
    and are shared with every other reader; buffers handed over in memory it copies. Its
    loader only opens data files inside the model's folder (symbolic links resolved), so
    the graph is written to a temporary folder holding hard links to the data files,
    on their filesystem. The folder is removed once the session is created: the mapped
    files live on until the session goes. Where no hard link can be made, the weights
    are handed over in memory (a copy in ORT), and the session still works.
    """
    import tempfile

    from faaq_onnx.external_data import external_initializers

    header = onnx.ModelProto()
    header.CopyFrom(model)
    files = sorted(
        {e.value for t in header.graph.initializer for e in t.external_data if e.key == "location"}
    )
    for root in _candidate_dirs(files):
        folder = Path(tempfile.mkdtemp(prefix=".faaq-session-", dir=root))
        try:
            names: dict[str, str] = {}
            for i, f in enumerate(files):
                names[f] = f"weights{i}.data"
                os.link(f, folder / names[f])
            for t in header.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = names[e.value]
            path = folder / "model.onnx"
            with open(path, "wb") as fh:
                fh.write(header.SerializeToString())
            return _Cleanup(str(path), folder), None
        except OSError:
            _remove(folder)
            header.CopyFrom(model)
    init_names, arrays = external_initializers(model)
    return model.SerializeToString(), _give(so, init_names, [np.asarray(a) for a in arrays])


def light_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(the model without the bytes of its large inline weights, those weights as arrays).

    make_session(light, arrays=...) hands the arrays to ORT (add_external_initializers)
    instead of serializing them for ORT to parse again: 1.2 s per ResNet-50 session here
    against 0.34 s. A caller deriving many models from one (the sensitivity sweep: a probe and
    a session per group) copies the light graph, not the weights. The arrays view the proto's
    bytes."""
    light = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(light, fd, value)
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(light.graph, fd, value)
    arrays = {}
    # an initializer no node reads is left out: ORT drops it at load, and then fails to find
    # it for the array handed over in its name (a model quantized by another tool may have some)
    read = {i for n in all_nodes(model.graph) for i in n.input} | {
        o.name for o in model.graph.output
    }
    for t in model.graph.initializer:
        if t.name not in read:
            continue
        if not _handed(t):
            light.graph.initializer.append(t)
            continue
        head = light.graph.initializer.add()
        head.name, head.data_type = t.name, t.data_type
        head.dims.extend(t.dims)
        head.data_location = onnx.TensorProto.EXTERNAL
        for key, val in (("location", IN_MEMORY), ("offset", "0")):
            entry = head.external_data.add()
            entry.key, entry.value = key, val
        arrays[t.name] = np.frombuffer(t.raw_data, _HANDOVER_TYPES[t.data_type]).reshape(t.dims)
    return light, arrays


def _hand_over(model: onnx.ModelProto, arrays: dict[str, np.ndarray], so: ort.SessionOptions):
    """Give ORT the arrays of the model's in-memory initializers; what must outlive the session."""
    names = _in_memory_names(model)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise FaaqError(f"no array was given for the in-memory weight {missing[0]!r}")
    held = [np.asarray(arrays[n]) for n in names]
    return held, _give(so, names, held)


def _give(so: ort.SessionOptions, names: list[str], arrays: list[np.ndarray]) -> list:
    """Hand `arrays` to the session as the initializers `names`; the OrtValues, which (with the
    arrays they view) must outlive the session."""
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    so.add_external_initializers(names, values)
    return values


def _in_memory_names(model: onnx.ModelProto) -> list[str]:
    return [
        t.name
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        and any(e.key == "location" and e.value == IN_MEMORY for e in t.external_data)
    ]


def _handed(t: onnx.TensorProto) -> bool:
    return (
        t.data_type in _HANDOVER_TYPES
        and t.data_location != onnx.TensorProto.EXTERNAL
        and t.HasField("raw_data")
        and _nbytes(t) >= HANDOVER_MIN_BYTES
    )


def _nbytes(t: onnx.TensorProto) -> int:
    """From the dims: reading t.raw_data copies the bytes (1.7 s of a ResNet-50 sweep)."""
    return int(np.prod(t.dims, dtype=np.int64)) * np.dtype(_HANDOVER_TYPES[t.data_type]).itemsize


def _inline_bytes(model: onnx.ModelProto) -> int:
    return sum(_nbytes(t) for t in model.graph.initializer if _handed(t))


def _copy_field(dst, fd, value) -> None:
    if fd.is_repeated:
        getattr(dst, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)


def _candidate_dirs(files: list[str]) -> list[str]:
    """Writable folders on the data files' filesystem: the system temp folder, then theirs."""
    import tempfile

    devices = {os.stat(f).st_dev for f in files}
    if len(devices) != 1:
        return []
    dev = devices.pop()
    out = []
    for d in (tempfile.gettempdir(), str(Path(files[0]).parent)):
        try:
            if os.stat(d).st_dev == dev and os.access(d, os.W_OK) and d not in out:
                out.append(d)
        except OSError:
            continue
    return out


class _Cleanup(str):
    """A model path whose folder is removed after the session has opened it."""

    folder: Path

    def __new__(cls, path: str, folder: Path):
        obj = super().__new__(cls, path)
        obj.folder = folder
        return obj


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
