"""Write a quantized AveragePool as the depthwise Conv that computes it, for ORT's int8 Conv
(as GlobalAveragePool where its window is the whole map).

ORT fuses DequantizeLinear -> AveragePool -> QuantizeLinear into QLinearAveragePool, which runs
far slower than its float kernel; a depthwise QLinearConv with every weight 1/(kh·kw) computes
the same mean of the same integer codes (exactly: the weight's code is 1, its scale 1/(kh·kw),
and the int32 sum is requantized once, as QLinearAveragePool requantizes its mean) on ORT's
fast depthwise path (8-bit codes only: at 16 bits ORT runs both in float). Measured between two quantized 1x1 Convs, interleaved
(benchmarks/bench_avgpool_conv.py): a 2x2/2 pool of 32 x 64 x 64 took the model from 0.08 ms
(float) to 0.28 ms with QLinearAveragePool, 0.08 ms as a Conv.

Only where the two compute the same thing: a 2-D pool without padding (or with padding counted
in the mean: count_include_pad), floor rounding of the output size, no dilation, a known
channel count, read from a DequantizeLinear and read by one QuantizeLinear alone (what ORT would
fuse). Code 1 keeps every u8 x s8 product within ORT's non-VNNI 7-bit weight range.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import POOL_AS_CONV, add_initializer, attribute, only_reader


class AveragePoolAsConvPass(InPlacePass):
    """DQ -> AveragePool -> Q becomes DQ -> Conv(group = channels, weights 1/(kh·kw)) -> Q."""

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            channels = _rewritable(node)
            if channels is None:
                continue
            kernel = [int(k) for k in node.attributes["kernel_shape"].value]
            if _whole_map(node, kernel):  # the mean of the map: no weight to store
                pool = ir.node("GlobalAveragePool", [node.inputs[0]], name=node.name)
                graph.insert_before(node, [pool])
                _take_over(node, pool)
                modified = True
                continue
            area = kernel[0] * kernel[1]
            codes = add_initializer(
                graph, f"{node.name}_weight_quantized", np.ones((channels, 1, *kernel), np.int8)
            )
            scale = add_initializer(
                graph, f"{node.name}_weight_scale", np.array(1.0 / area, np.float32)
            )
            zero = add_initializer(graph, f"{node.name}_weight_zero_point", np.array(0, np.int8))
            weight = ir.node(
                "DequantizeLinear", [codes, scale, zero], name=f"{node.name}_weight_dequantize"
            )
            attrs: dict[str, int | list[int]] = {
                "group": channels,
                "kernel_shape": kernel,
                "strides": _ints(node, "strides", [1, 1]),
                "pads": _ints(node, "pads", [0, 0, 0, 0]),
            }
            conv = ir.node(
                "Conv",
                [node.inputs[0], weight.outputs[0]],
                attributes=attrs,
                name=node.name,
                doc_string=POOL_AS_CONV,
            )
            graph.insert_before(node, [weight, conv])
            _take_over(node, conv)
            modified = True
        return PassResult(model, modified)


def _take_over(node: ir.Node, new: ir.Node) -> None:
    """`new` (inserted) computes what `node` did, under its output's name; `node` goes."""
    ir.convenience.replace_all_uses_with(node.outputs[0], new.outputs[0])
    new.outputs[0].name, node.outputs[0].name = node.outputs[0].name, None
    node.graph.remove(node, safe=True)


def _whole_map(node: ir.Node, kernel: list[int]) -> bool:
    """A pool without padding whose window is the whole map (the CIFAR ResNets' last pooling:
    8 x 8 on an 8 x 8 map), which GlobalAveragePool computes without a weight (a 64-channel
    8 x 8 Conv weight is 4 KB, 3 % of ResNet-20 at W4)."""
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    spatial = list(shape[2:]) if shape is not None else []
    return spatial == kernel and not any(_ints(node, "pads", [0, 0, 0, 0]))


def _rewritable(node: ir.Node) -> int | None:
    """The channel count of an AveragePool the depthwise Conv computes exactly and ORT would
    fuse into QLinearAveragePool; else None."""
    if node.op_type != "AveragePool" or node.domain not in ("", "ai.onnx"):
        return None
    kernel = _ints(node, "kernel_shape", [])
    if len(kernel) != 2 or _ints(node, "ceil_mode", [0]) != [0]:
        return None
    if any(d != 1 for d in _ints(node, "dilations", [1, 1])):
        return None
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        return None
    padded = auto_pad == "NOTSET" and any(_ints(node, "pads", [0, 0, 0, 0]))
    if padded and _ints(node, "count_include_pad", [0]) != [1]:
        return None  # the mean at the border leaves the padding out: not a Conv's
    x = node.inputs[0]
    prod = x.producer() if x is not None else None
    reader = only_reader(node.outputs[0])
    if prod is None or prod.op_type != "DequantizeLinear" or reader is None:
        return None
    if reader.op_type != "QuantizeLinear" or not _eight_bit(prod):
        return None  # 16-bit codes: ORT runs the pool in float either way
    shape = x.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[1], int):
        return None
    return int(shape[1])


def _eight_bit(dq: ir.Node) -> bool:
    """Whether a DequantizeLinear reads 8-bit codes (what ORT's integer kernels take): its zero
    point's type, the codes' (a value made by an emission pass may carry no type of its own)."""
    zero = dq.inputs[2] if len(dq.inputs) > 2 else None
    if zero is None:
        return True  # no zero point: uint8 codes
    tensor = zero.const_value
    dtype = tensor.dtype if tensor is not None else zero.dtype
    return dtype in (ir.DataType.UINT8, ir.DataType.INT8)


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    """An int or ints attribute as a list."""
    value = attribute(node, name, default)
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
