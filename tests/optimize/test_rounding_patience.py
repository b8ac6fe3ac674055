"""--optimize-patience: learned rounding stops after N units in a row keep their start."""

import numpy as np
import pytest

from faaq_onnx.cli.summary import rounding_line
from faaq_onnx.config import BEST_PATIENCE, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.optimize.rounding import _out_of_patience
from faaq_onnx.pipeline import Compilation


def _rounded(tiny_cnn, cnn_calib, patience: int):
    """W3A8 AdaRound (rigged to lose on every unit by the losing_rounding fixture); returns the
    compilation and the nearest codes every unit starts from."""
    cfg = QuantConfig(
        progress=False,
        scheme="w3a8",
        optimize="adaround",
        optimize_iters=1,
        optimize_samples=32,
        optimize_patience=patience,
    )
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    nearest = {w: comp.weights.get(w, 3).q.copy() for w in comp.qgraph.weights}
    comp.optimize_rounding([comp.uniform("w3a8")])
    return comp, nearest


@pytest.mark.parametrize("patience, tried", [(0, 3), (1, 1), (2, 2), (3, 3), (5, 3)])
def test_learning_stops_after_patience_units_in_a_row_keep_their_start(
    tiny_cnn, cnn_calib, losing_rounding, patience, tried
):
    """Three units, each made to leave worse than it started: the optimizer runs on the first
    `patience` of them (all three with 0, never stop); the rest are listed as not tried, and every
    weight ships its start (nearest) codes."""
    comp, nearest = _rounded(tiny_cnn, cnn_calib, patience)
    report = comp.rounding.shared["w3a8"]
    units = report["units"]
    assert len(losing_rounding) == tried and len(units) == 3
    assert [u.get("tried", True) for u in units] == [True] * tried + [False] * (3 - tried)
    assert all(u["kept"] == "start" for u in units)
    assert sorted(w for u in units for w in u["weights"]) == sorted(nearest)
    for w, q in nearest.items():
        assert np.array_equal(comp.weights.get(w, 3).q, q)
    if tried < 3:
        assert report["stopped"] == {"after": units[tried - 1]["unit"], "patience": patience}
        line = rounding_line({"optimization": {"rounding": {"w3a8": report}}})
        assert f"learning stopped after {tried} of 3 units ({patience} in a row" in line
        assert "on 3 weights below 8 bits" in line  # the untried units' weights still count
    else:
        assert "stopped" not in report


def test_a_unit_that_keeps_its_learned_rounding_resets_the_count():
    start, learned = {"kept": "start"}, {"kept": "learned"}
    assert _out_of_patience([learned, start, start], 2)
    assert not _out_of_patience([start, learned, start], 2)
    assert not _out_of_patience([start], 2)  # fewer units than the patience
    assert not _out_of_patience([start, start, start], 0)  # 0: never stop
    assert _out_of_patience([start, start, start], 3)


def test_optimize_patience_is_checked_and_effort_best_sets_it():
    with pytest.raises(FaaqError, match="--optimize-patience must be 0"):
        QuantConfig(optimize="adaround", optimize_patience=-1)
    assert QuantConfig(optimize="adaround").optimize_patience == 0
    assert QuantConfig(optimize="auto", scheme="w4a8", effort="best").optimize_patience == 3
    assert BEST_PATIENCE == 3
    chosen = QuantConfig(optimize="auto", scheme="w4a8", effort="best", optimize_patience=0)
    assert chosen.optimize_patience == 0  # what the user says wins over the effort's choice
    explicit = QuantConfig(optimize="adaround", effort="best")  # no --optimize auto: no effort
    assert explicit.optimize_patience == 0
