"""Reference outputs kept in bounded memory: in RAM when small, else float16 on disk.

Verification compares the quantized model's outputs with the float model's sample by
sample, but the two sessions run one after the other (never both models in memory),
so the float outputs must wait. A language model's logits are 8 MB a sequence: they wait
in a memory-mapped float16 file instead (half the bytes, none of them resident).
"""

from __future__ import annotations

import tempfile

import numpy as np

from faaq_onnx.analysis.metrics import ratio_db, sqnr_ratios

RAM_LIMIT = 64 << 20


class OutputStore:
    def __init__(self, n_samples: int) -> None:
        self.n = n_samples
        self.arrays: dict[str, np.ndarray] = {}
        self._files: list = []

    def put(self, name: str, start: int, batch: np.ndarray) -> None:
        if name not in self.arrays:
            shape = (self.n, *batch.shape[1:])
            nbytes = int(np.prod(shape)) * 4
            if nbytes <= RAM_LIMIT:
                self.arrays[name] = np.empty(shape, np.float32)
            else:
                # open as long as its memmap is: close() closes it
                f = tempfile.TemporaryFile(prefix="faaq-outputs-")  # noqa: SIM115
                self._files.append(f)
                self.arrays[name] = np.memmap(f, dtype=np.float16, mode="w+", shape=shape)
        self.arrays[name][start : start + len(batch)] = batch

    def get(self, name: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.arrays[name][start:stop], np.float32)

    def close(self) -> None:
        self.arrays.clear()
        for f in self._files:
            f.close()


class RunningComparison:
    """Per-sample SQNR (seed 003 eq. 3) and top-1 agreement, accumulated batch by batch."""

    def __init__(self) -> None:
        self.ratios: list[float] = []
        self.signal = 0.0  # summed over all samples: the pooled SQNR, which one near-exact sample cannot inflate
        self.noise = 0.0
        self.agree = 0
        self.count = 0
        self.classifier: bool | None = None  # decided by the first batch
        self.finite = True

    def update(self, ref: np.ndarray, got: np.ndarray) -> None:
        self.finite &= bool(np.all(np.isfinite(got)))
        self.ratios.extend(sqnr_ratios(ref, got).tolist())
        r64, g64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        self.signal += float(np.sum(r64**2))
        self.noise += float(np.sum((r64 - g64) ** 2))
        if self.classifier is None:
            self.classifier = ref.ndim == 2 and ref.shape[1] > 1
        if self.classifier:
            self.agree += int(np.sum(ref.argmax(1) == got.argmax(1)))
        self.count += len(ref)

    def result(self) -> dict:
        out = {
            "sqnr_db": ratio_db(float(np.mean(self.ratios))),
            "sqnr_db_pooled": ratio_db(self.signal / max(self.noise, 1e-30)),
        }
        if self.classifier:
            out["top1_agreement"] = self.agree / max(self.count, 1)
        if self.signal == 0.0:  # the reference is zero everywhere: no SQNR means anything
            out["silent_reference"] = True
        return out
