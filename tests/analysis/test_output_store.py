"""analysis/output_store.py: reference outputs in RAM or float16 on disk, and the running
comparison verification reports (per-sample and pooled SQNR, top-1 agreement)."""

import numpy as np
import pytest

from faaq_onnx.analysis import output_store
from faaq_onnx.analysis.output_store import OutputStore, RunningComparison


def test_output_store_in_ram_and_on_disk(monkeypatch):
    small = OutputStore(5)
    small.put("y", 0, np.arange(6, dtype=np.float64).reshape(3, 2))
    small.put("y", 3, np.full((2, 2), 7.0))
    assert small.arrays["y"].dtype == np.float32 and small.arrays["y"].shape == (5, 2)
    np.testing.assert_array_equal(small.get("y", 2, 5), [[4, 5], [7, 7], [7, 7]])
    assert small.get("y", 0, 1).dtype == np.float32
    monkeypatch.setattr(output_store, "RAM_LIMIT", 5 * 2 * 4 - 1)  # one byte too few
    big = OutputStore(5)
    big.put("y", 0, np.array([[1.0, 2.0]]))
    assert isinstance(big.arrays["y"], np.memmap) and big.arrays["y"].dtype == np.float16
    assert len(big._files) == 1
    np.testing.assert_array_equal(big.get("y", 0, 1), [[1.0, 2.0]])
    assert big.get("y", 0, 1).dtype == np.float32
    f = big._files[0]
    big.close()
    assert big.arrays == {} and f.closed
    monkeypatch.setattr(output_store, "RAM_LIMIT", 5 * 2 * 4)  # exactly fits: RAM
    fits = OutputStore(5)
    fits.put("y", 0, np.zeros((1, 2)))
    assert not isinstance(fits.arrays["y"], np.memmap)


def test_running_comparison_of_a_classifier_and_of_a_regressor():
    ref = np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    got = np.array([[2.0, 1.0], [1.0, 0.5], [1.0, 0.0]])
    c = RunningComparison()
    c.update(ref[:2], got[:2])
    c.update(ref[2:], got[2:])
    out = c.result()
    # top-1: sample 0 agrees, 1 flips (1 vs 0), 2 agrees
    assert out["top1_agreement"] == pytest.approx(2 / 3) and c.count == 3 and c.finite
    per = [np.mean(r**2) / max(np.mean((r - g) ** 2), 1e-30) for r, g in zip(ref, got)]
    assert c.ratios == pytest.approx(per, rel=1e-6)
    pooled = np.sum(ref**2) / np.sum((ref - got) ** 2)
    assert out["sqnr_db_pooled"] == pytest.approx(10 * np.log10(pooled))
    assert out["sqnr_db"] == pytest.approx(10 * np.log10(np.mean(per)))
    reg = RunningComparison()
    reg.update(np.array([1.0, 2.0]), np.array([1.0, np.inf]))
    assert reg.classifier is False and "top1_agreement" not in reg.result() and not reg.finite
    one = RunningComparison()
    one.update(np.array([[1.0], [2.0]]), np.array([[1.0], [2.0]]))
    assert one.classifier is False  # one column: nothing to agree on


def test_a_reference_of_zeros_is_marked_silent_not_given_an_sqnr():
    """The model given outputs zeros everywhere (PP-OCRv4's detector on 1x1 random inputs): the
    result says so; any signal at all, and it does not."""
    c = RunningComparison()
    c.update(np.zeros((2, 3)), np.full((2, 3), 0.5))
    assert c.result()["silent_reference"] is True
    d = RunningComparison()
    d.update(np.array([[0.0, 0.0], [0.0, 1e-3]]), np.zeros((2, 2)))
    assert "silent_reference" not in d.result()
