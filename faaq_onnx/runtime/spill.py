"""Per-sample tensors kept in a file instead of memory, for layer-by-layer passes.

A layer-by-layer pass (runtime.segments) keeps, between two requests, every sample's value of
the tensors later nodes still read. Those grow with the calibration count: EfficientNet-Lite0's
112x112x96 expansion at 256 images is 1.2 GB, and it set the pass's peak memory. A tensor at
least SPILL_BYTES large goes to a file in the temporary folder instead (rows written as the
batches arrive, read back a slice at a time by whoever runs batches over it), so what the
process holds no longer depends on how many samples there are. Values are float32 either way:
bit for bit the same results.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from collections.abc import Iterator

import numpy as np

from faaq_onnx.errors import FaaqError

SPILL_BYTES = 512 << 20  # a kept tensor this large (all samples together) lives in a file
CHUNK_BYTES = 64 << 20  # what a whole-tensor operation (a mean, a shift) holds at a time


class SpilledArray:
    """A [samples, ...] float tensor in a file. Slicing along the samples reads those rows
    (what run_batches and the Hessian sums do), an integer one row, an integer array those
    rows in its order (a reconstruction batch); np.asarray(...) reads it whole."""

    def __init__(
        self, n: int, row_shape: tuple[int, ...], dtype, folder: str | None = None
    ) -> None:
        self.shape = (n, *row_shape)
        self.dtype = np.dtype(dtype)
        self._row_items = int(np.prod(row_shape, dtype=np.int64))
        self._row_bytes = self._row_items * self.dtype.itemsize
        try:
            fd, self.path = tempfile.mkstemp(prefix="faaq-kept-", suffix=".bin", dir=folder)
        except OSError as e:
            raise FaaqError(
                f"cannot keep a {self.nbytes / 2**20:.0f} MB tensor in a file in "
                f"{folder or tempfile.gettempdir()} ({e.strerror}): point TMPDIR at a writable folder"
            ) from e
        # removed with the last reference, or at exit if still referenced (an error on the way)
        self._remove = weakref.finalize(self, _remove, self.path)
        with os.fdopen(fd, "wb") as f:
            f.truncate(n * self._row_bytes)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self._row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def write(self, start: int, rows: np.ndarray) -> None:
        """Rows start, start + len(rows) (the layout np.empty((n, ...)) would have)."""
        try:
            with open(self.path, "r+b") as f:
                f.seek(start * self._row_bytes)
                np.ascontiguousarray(rows, self.dtype).tofile(f)
        except OSError as e:
            raise FaaqError(
                f"cannot keep a {self.nbytes / 2**20:.0f} MB tensor in {os.path.dirname(self.path)} "
                f"({e.strerror}): point TMPDIR at a folder with room, or calibrate on fewer samples"
            ) from e

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(len(self), stop)
        count = max(stop - start, 0)
        arr = np.fromfile(
            self.path, self.dtype, count * self._row_items, offset=start * self._row_bytes
        )
        return arr.reshape(count, *self.shape[1:])

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            return self.read(start, stop)
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} of {len(self)}")
            return self.read(index, index + 1)[0]
        if isinstance(key, np.ndarray) and key.ndim == 1 and key.dtype.kind in "iu":
            return self.take(key)
        return np.asarray(self)[key]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` (any order, repeats allowed), read from the file through a map."""
        mapped = np.memmap(self.path, self.dtype, "r", shape=self.shape)
        try:
            return np.array(mapped[np.asarray(rows)])
        finally:
            del mapped

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self.read(0, len(self))
        return arr if dtype is None else arr.astype(dtype)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) over the whole tensor, CHUNK_BYTES at a time."""
        step = max(1, CHUNK_BYTES // max(self._row_bytes, 1))
        for start in range(0, len(self), step):
            yield start, self.read(start, start + step)

    def add_(self, delta: np.ndarray) -> None:
        """In place, chunk by chunk: self += delta (delta broadcast against one chunk)."""
        for start, rows in self.chunks():
            np.add(rows, np.asarray(delta, self.dtype), out=rows)
            self.write(start, rows)

    def close(self) -> None:
        self._remove()


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
