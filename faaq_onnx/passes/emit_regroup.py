"""Regroup narrow grouped Convs so that ONNX Runtime's int8 Conv takes a fast path.

ORT's int8 Conv (QLinearConv) has fast paths for depthwise convolutions (one input and one
output channel per group) and for groups of about 8 channels or more; in between it falls back
to a slow one. Measured against the float Conv, interleaved (a 3x3 Conv on 32 channels at
32x32 between two 1x1 Convs; benchmarks/bench_grouped_conv.py): depthwise with a channel
multiplier of 2 about 8x slower, of 4 about 7x, 2 channels per group 4-5x, 4 per group 1.7x.
(A float weight left between DQ and Q does not help: ORT's optimizer quantizes it itself.)

Merging k neighbouring groups into one, with the weights of the others zero in each merged
group's block, computes the same convolution with k times the multiply-adds and lands on the
fast path (the same model: 0.95-1.13x the float model's time). The codes are padded with each
output channel's zero point, so the padded weights dequantize to exactly 0: the emitted model
computes what faaq measured, bit for bit. Only where the Conv reads an activation of 8 bits or
fewer (an integer kernel forms) and owns its weight.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import values_by_name
from faaq_onnx.quant.weights import QuantizedWeight

MIN_GROUP_WIDTH = 8  # channels per group from which ORT's int8 grouped Conv keeps up


def regroup_factor(groups: int, per_in: int, per_out: int) -> int | None:
    """How many neighbouring groups to merge (a divisor of `groups`), or None where the
    grouping is fast already (depthwise, or groups of MIN_GROUP_WIDTH channels or more)."""
    if groups <= 1 or (per_in, per_out) == (1, 1) or min(per_in, per_out) >= MIN_GROUP_WIDTH:
        return None
    for k in range(2, groups + 1):
        if groups % k == 0 and min(per_in, per_out) * k >= MIN_GROUP_WIDTH:
            return k
    return groups  # every group merged: a full Conv


def regrouped_codes(qw: QuantizedWeight, groups: int, k: int) -> np.ndarray:
    """Codes of a (Cout, Cin/groups, ...) Conv weight as (Cout, k·Cin/groups, ...) for
    groups/k groups: each output channel's own block in place, its zero point elsewhere."""
    q = qw.q
    cout, per_in = q.shape[:2]
    zp = np.asarray(qw.grid.full_zero_point)[:, :1]  # each output channel's zero point
    out = np.broadcast_to(zp, (cout, per_in * k, *q.shape[2:])).astype(q.dtype)  # a copy
    block = (np.arange(cout) // (cout // groups)) % k  # each channel's place in its merged group
    for j in range(k):
        out[block == j, j * per_in : (j + 1) * per_in] = q[block == j]
    return out


class RegroupConvPass(InPlacePass):
    """Before the weights are written: narrow grouped Convs merged into wider groups."""

    def __init__(self, qgraph, qweights: dict[str, QuantizedWeight], act_bits: dict, summary):
        self.qgraph, self.qweights, self.act_bits, self.summary = (
            qgraph,
            qweights,
            act_bits,
            summary,
        )

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        values = values_by_name(graph)
        nodes = {n.name: n for n in graph}
        act_of = {t: a for a, aq in self.qgraph.activations.items() for t in aq.tensors}
        modified = False
        for wname, wq in self.qgraph.weights.items():
            node = nodes.get(wq.consumers[0]) if len(wq.consumers) == 1 else None
            qw, v = self.qweights.get(wname), values.get(wname)
            if node is None or node.op_type != "Conv" or qw is None or v is None:
                continue
            if qw.block_size or qw.axis not in (0, None) or len(v.uses()) != 1:
                continue
            x = node.inputs[0]
            bits = self.act_bits.get(act_of.get(x.name, "")) if x is not None else None
            group = node.attributes.get("group")
            if bits is None or bits > 8 or group is None:
                continue
            groups = int(group.value)
            k = regroup_factor(groups, qw.q.shape[1], qw.q.shape[0] // groups)
            if k is None:
                continue
            wide = dataclasses.replace(qw, q=regrouped_codes(qw, groups, k))
            self.qweights[wname] = wide
            v.const_value = ir.tensor(wide.dequantized().astype(np.float32), name=wname)
            v.shape = ir.Shape(wide.q.shape)
            node.attributes["group"] = ir.AttrInt64("group", groups // k)
            self.summary.regrouped[node.name] = {"groups": groups, "merged": k}
            modified = True
        return PassResult(model, modified)
