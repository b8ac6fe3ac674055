"""prune_quantizers: activations whose range no integer grid can carry (beyond 1e6 in
magnitude: an attention mask's -3.4e38) are left float, and everything naming them follows."""

from __future__ import annotations

import numpy as np

from faaq_onnx.analysis.calibrate import Calibration
from faaq_onnx.analysis.prune import prune_quantizers
from faaq_onnx.groups import ActivationQuantizer, QuantizerGraph, QuantizerGroup, WeightQuantizer
from faaq_onnx.quant.observers import TensorStats


def _stats(lo, hi):
    s = TensorStats()
    s.observe(np.array([lo, hi], np.float32))
    return s


def _qgraph():
    acts = {
        "act:x": ActivationQuantizer("act:x", ["x"], ["x"]),
        "act:mask": ActivationQuantizer("act:mask", ["mask", "m2"], ["mask", "m2"]),
        "act:s": ActivationQuantizer("act:s", ["s"], ["s"]),
    }
    weights = {
        "w": WeightQuantizer("w", ["mm"], "MatMul", (4, 4), 1, 0, 16, None, "act:mask"),
        "v": WeightQuantizer("v", ["mm2"], "MatMul", (4, 4), 1, 0, 16, None, "act:x"),
    }
    groups = {
        "g:mm": QuantizerGroup("g:mm", "matmul", ["mm"], ["w"], ["act:mask"], 16, 16),
        "g:mm2": QuantizerGroup("g:mm2", "matmul", ["mm2"], ["v"], ["act:x"], 16, 16),
        "g:add": QuantizerGroup("g:add", "eltwise", ["add"], [], ["act:mask", "act:s"], 4, 0),
        "g:att": QuantizerGroup("g:att", "attention", ["att"], [], ["act:mask"], 4, 0),
    }
    return QuantizerGraph(weights, acts, groups, ["n: skipped before"])


def test_nothing_beyond_the_limit_leaves_the_graph_as_it_is():
    calib = Calibration({"x": _stats(-1e6, 1e6), "mask": _stats(-5, 5), "m2": _stats(0, 1),
                         "s": _stats(0, 2)})  # fmt: skip
    qg = _qgraph()
    assert prune_quantizers(qg, calib) is qg


def test_a_mask_range_is_left_float_and_everything_naming_it_follows():
    """One tensor of the quantizer beyond 1e6 drops the whole quantizer: it leaves the activations,
    the groups (a group left with neither activations nor weights goes), and the weights that
    read it; the reason (the range over all its tensors) is listed after what was skipped."""
    calib = Calibration(
        {"x": _stats(-3, 3), "mask": _stats(-3.4e38, 0), "m2": _stats(0, 1), "s": _stats(0, 2)}
    )
    qg = prune_quantizers(_qgraph(), calib)
    assert list(qg.activations) == ["act:x", "act:s"]
    assert {g: v.activations for g, v in qg.groups.items()} == {
        "g:mm": [],
        "g:mm2": ["act:x"],
        "g:add": ["act:s"],
    }
    assert qg.weights["w"].activation is None and qg.weights["v"].activation == "act:x"
    assert qg.skipped == [
        "n: skipped before",
        "act:mask: range [-3.4e+38, 1] too wide for an integer grid (attention mask?); left float",
    ]


def test_the_limit_is_a_magnitude_on_either_side():
    calib = Calibration(
        {"x": _stats(0, 2e6), "mask": _stats(-1, 1), "m2": _stats(0, 1), "s": _stats(-1.5e6, 0)}
    )
    qg = prune_quantizers(_qgraph(), calib)
    assert list(qg.activations) == ["act:mask"]
    assert len(prune_quantizers(_qgraph(), calib, max_abs=3e6).activations) == 3
