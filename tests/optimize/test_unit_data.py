"""optimize/unit_data.py: how many samples a reconstruction unit's tapped tensors may hold."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from faaq_onnx.optimize import unit_data
from faaq_onnx.optimize.unit_data import samples_for


def _comp(shapes: dict):
    stats = {t: SimpleNamespace(shape=s) for t, s in shapes.items()}
    return SimpleNamespace(calibration=SimpleNamespace(stats=stats))


def test_samples_are_capped_by_the_largest_tapped_tensor(monkeypatch):
    monkeypatch.setattr(unit_data, "MAX_TENSOR_BYTES", 4 * 1000 * 50)  # 50 samples of 1000 floats
    comp = _comp({"a": (1000,), "b": (10, 10), "none": None})
    assert samples_for(None, ["a", "b"], 256, comp) == 50
    assert samples_for(None, ["a", "b"], 20, comp) == 20  # fewer asked: all of them
    assert samples_for(None, ["b"], 256, comp) == 256  # 100 floats: 500 would fit
    assert samples_for(None, ["none", "missing"], 77, comp) == 77  # nothing known: as asked


def test_never_fewer_than_eight_samples(monkeypatch):
    monkeypatch.setattr(unit_data, "MAX_TENSOR_BYTES", 4 * 1000)
    assert samples_for(None, ["a"], 256, _comp({"a": (1000,)})) == 8


@pytest.mark.parametrize("per_sample", [7, 1000])
def test_the_cap_divides_the_budget_by_the_bytes_of_one_sample(monkeypatch, per_sample):
    monkeypatch.setattr(unit_data, "MAX_TENSOR_BYTES", 4 * per_sample * 123)
    assert samples_for(None, ["a"], 10_000, _comp({"a": (per_sample,)})) == 123
