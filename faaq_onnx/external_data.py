"""Weights that live in external data files, read through one memory map per file.

Models over 2 GB keep their weights outside the protobuf. faaq never loads them into
its own memory: every reader (weight quantization in numpy, ONNX Runtime sessions
through `add_external_initializers`) gets a read-only view into one shared mapping of
each data file, so a page the OS has read is resident once, however many readers use
it, and peak memory follows what is touched, not the number of copies made.
Inside faaq, external locations are absolute paths (see graph.to_proto); they are
made relative again only when a model is written.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading

import numpy as np
import onnx
from onnx import TensorProto

_maps: dict[str, mmap.mmap] = {}
_lock = threading.Lock()


def _file_map(path: str) -> mmap.mmap:
    path = os.path.realpath(path)
    with _lock:
        m = _maps.get(path)
        if m is None:
            with open(path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            _maps[path] = m
        return m


def view(path: str, offset: int, dtype, shape) -> np.ndarray:
    """A read-only array over bytes of a data file (no copy)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape)) if len(shape) else 1
    arr = np.frombuffer(_file_map(path), dtype=dtype, count=count, offset=int(offset or 0))
    return arr.reshape(shape)


def is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def tensor_view(t: TensorProto) -> np.ndarray:
    """The array of an external TensorProto whose location is absolute."""
    info = {e.key: e.value for e in t.external_data}
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    return view(info["location"], int(info.get("offset", 0) or 0), dtype, tuple(t.dims))


def external_initializers(proto: onnx.ModelProto) -> tuple[list[str], list[np.ndarray]]:
    """Names and views of every external initializer of a model (absolute locations)."""
    names, arrays = [], []
    for t in proto.graph.initializer:
        if is_external(t):
            names.append(t.name)
            arrays.append(tensor_view(t))
    return names, arrays


def external_bytes(proto: onnx.ModelProto) -> int:
    total = 0
    for t in proto.graph.initializer:
        if is_external(t):
            info = {e.key: e.value for e in t.external_data}
            total += int(info.get("length", 0) or 0)
    return total


def release() -> int:
    """Unmap every data file nothing views any more; returns how many were unmapped."""
    import gc

    gc.collect()
    closed = 0
    with _lock:
        for path, m in list(_maps.items()):
            try:
                m.close()
            except BufferError:  # an array still views it: keep it mapped
                continue
            del _maps[path]
            closed += 1
    return closed


def drop_pages(path: str, offset: int, length: int) -> None:
    """Tell the OS this process is done with bytes of a mapped file (they leave its resident set;
    the file's pages stay in the page cache for whoever reads them next)."""
    m = _maps.get(os.path.realpath(path))
    if m is None or length <= 0:
        return
    page = mmap.PAGESIZE
    start = (int(offset) // page) * page
    end = min(len(m), int(offset) + int(length))
    with contextlib.suppress(OSError, ValueError, AttributeError):
        m.madvise(mmap.MADV_DONTNEED, start, end - start)
