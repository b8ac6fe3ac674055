"""Drop activation quantizers whose calibrated range no integer grid can carry.

Attention masks add the most negative float (-3.4e38) to scores; an 8- or 16-bit grid
over that range has a step larger than every real value, so quantizing such a tensor
destroys the output. These tensors stay float, and the report says so.
"""

from __future__ import annotations

from dataclasses import replace

from faaq_onnx.analysis.calibrate import Calibration
from faaq_onnx.groups import QuantizerGraph

MAX_ABS_RANGE = 1e6


def prune_quantizers(
    qgraph: QuantizerGraph, calib: Calibration, max_abs: float = MAX_ABS_RANGE
) -> QuantizerGraph:
    dropped = {}
    for name, aq in qgraph.activations.items():
        stats = calib.quantizer_stats(aq)
        if max(abs(stats.min), abs(stats.max)) > max_abs:
            dropped[name] = (stats.min, stats.max)
    if not dropped:
        return qgraph
    activations = {k: v for k, v in qgraph.activations.items() if k not in dropped}
    groups = {}
    for gname, g in qgraph.groups.items():
        acts = [a for a in g.activations if a not in dropped]
        if acts or g.weights:
            groups[gname] = replace(g, activations=acts)
    weights = {
        k: replace(w, activation=None if w.activation in dropped else w.activation)
        for k, w in qgraph.weights.items()
    }
    skipped = list(qgraph.skipped) + [
        f"{name}: range [{lo:.3g}, {hi:.3g}] too wide for an integer grid (attention mask?); left float"
        for name, (lo, hi) in dropped.items()
    ]
    return QuantizerGraph(
        weights, activations, groups, skipped, qgraph.constants, qgraph.left_float
    )
