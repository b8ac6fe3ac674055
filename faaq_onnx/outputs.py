"""Every file faaq writes goes through here: whole or absent, readable per the user's umask.

A temporary file is written next to the target and renamed over it, so a crash or an
error never leaves half a file. mkstemp creates 0600 files; outputs get the mode an
ordinary `open()` would give (0666 minus the umask), so a serving process running as
another user can read the model.

Models with external data have two files that cannot be renamed together. The data
file is named after a hash of its content (`model.onnx.<hash>.data`) and renamed into
place first; renaming the .onnx over its target is then the single commit point:
readers see the old pair or the new pair, never a mix. The old data file is removed
after the commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import onnx

EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf refuses messages over 2 GB


def _mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path beside `path`; on success it replaces `path` (mode per umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")


def savefig_atomic(fig, path, **kwargs) -> Path:
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def tensor_bytes(model) -> int:
    """Bytes of initializer data in an onnx.ModelProto or an onnx_ir.Model (external included)."""
    if isinstance(model, onnx.ModelProto):
        return sum(len(t.raw_data) or _approx_bytes(t) for t in model.graph.initializer)
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def _approx_bytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n * 4


def save_model_atomic(model, path, external_data: bool | None = None) -> Path:
    """Write an onnx.ModelProto or onnx_ir.Model; never modifies the object given.

    `external_data=None` decides by size (over ~1.8 GB of tensors: external data).
    """
    import onnx_ir as ir

    path = Path(path)
    big = tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data
    if external_data is None and isinstance(model, onnx.ModelProto) and _has_external(model):
        big = True  # weights still in the input's data files: the output gets a data file of its own
    if not big:
        proto = model if isinstance(model, onnx.ModelProto) else _to_proto(model)
        with atomic_path(path) as tmp:
            onnx.save_model(proto, str(tmp))
        _remove_old_data(path, keep=None, before=_referenced_data(path))
        return path
    old_refs = _referenced_data(path)
    ir_model = ir.from_proto(model) if isinstance(model, onnx.ModelProto) else model
    path.parent.mkdir(parents=True, exist_ok=True)
    token = next(tempfile._get_candidate_names())  # noqa: SLF001 - a unique name, nothing more
    tmp_data = f".{path.name}.{token}.data.tmp"
    tmp_model = path.parent / f".{path.name}.{token}.tmp"
    try:
        ir.save(ir_model, tmp_model, external_data=tmp_data)
        digest = _file_digest(path.parent / tmp_data)
        data_name = f"{path.name}.{digest[:12]}.data"
        os.chmod(path.parent / tmp_data, _mode())
        os.replace(path.parent / tmp_data, path.parent / data_name)
        header = onnx.load(str(tmp_model), load_external_data=False)
        for t in _all_tensors(header):
            for entry in t.external_data:
                if entry.key == "location" and entry.value == tmp_data:
                    entry.value = data_name
        onnx.save_model(header, str(tmp_model))
        os.chmod(tmp_model, _mode())
        os.replace(tmp_model, path)  # the commit point
    except BaseException:
        tmp_model.unlink(missing_ok=True)
        (path.parent / tmp_data).unlink(missing_ok=True)
        raise
    _remove_old_data(path, keep=data_name, before=old_refs)
    return path


def _has_external(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def _to_proto(model):
    from faaq_onnx.graph import to_proto

    return to_proto(model)


def _file_digest(p: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _all_tensors(proto: onnx.ModelProto):
    yield from proto.graph.initializer
    for node in proto.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t


def _referenced_data(path: Path) -> set[str]:
    """External data files the model now at `path` points to (ours only: '<name>.<hash>.data')."""
    if not path.is_file():
        return set()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a model we wrote: leave its neighbours alone
        return set()
    return {e.value for t in _all_tensors(proto) for e in t.external_data
            if e.key == "location" and e.value.startswith(path.name + ".") and e.value.endswith(".data")}


def _remove_old_data(path: Path, keep: str | None, before: set[str]) -> None:
    for name in before - ({keep} if keep else set()):
        (path.parent / name).unlink(missing_ok=True)
