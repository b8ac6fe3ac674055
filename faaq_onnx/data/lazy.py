"""Calibration samples preprocessed when a batch is read, not all at once.

Raw uint8 images are a quarter of their float32 form; keeping only the raw samples and
applying the preset to each slice as it is taken keeps memory flat in the number of
calibration samples (every consumer reads its samples in batches or takes a bounded
head). Indexing, len(), shape and dtype behave like the preprocessed array.
"""

from __future__ import annotations

import hashlib

import numpy as np

from faaq_onnx.data.presets import apply_preset


class PresetArray:
    """The preprocessed view of raw[indices] under a preset."""

    def __init__(self, raw: np.ndarray, indices: np.ndarray | None, preset: str) -> None:
        self.raw = raw
        self.indices = np.arange(len(raw)) if indices is None else np.asarray(indices)
        self.preset = preset
        sample = apply_preset(raw[self.indices[:1]], preset)
        self.dtype = sample.dtype
        self._sample_shape = sample.shape[1:]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self._sample_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key):
        picks = self.indices[key]
        if np.ndim(picks) == 0:
            return apply_preset(self.raw[[int(picks)]], self.preset)[0]
        return apply_preset(self.raw[picks], self.preset)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype, copy: bool = True):
        if np.dtype(dtype) == self.dtype and not copy:
            return self
        return np.asarray(self).astype(dtype)

    def fingerprint(self) -> bytes:
        """What identifies the samples, for cache keys, without preprocessing them all."""
        h = hashlib.sha256(self.preset.encode())
        h.update(np.ascontiguousarray(self.raw[self.indices]).tobytes())
        return h.digest()
