"""The op tables of the ONNX-in-torch interpreter: one torch function per ONNX op.

OPS maps an op to `fn(attrs, *inputs) -> tensor`; MULTI_OUTPUT to `fn(attrs, n_outputs,
*inputs) -> [tensors]`, for the ops whose second and later outputs a graph may read.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError


class UnsupportedOp(FaaqError):
    """An op (or an attribute of one) the interpreter cannot run; the message names the node.

    A FaaqError, so that whoever does not catch it still gets one line, not a traceback."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(pads, nd):
    # ONNX [x1_begin, x2_begin, ..., x1_end, x2_end] -> torch (last dim first) pairs
    begin, end = pads[:nd], pads[nd:]
    out = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


def _conv(x, w, b=None, a=None, transpose=False):
    nd = w.dim() - 2
    strides = a.get("strides", [1] * nd)
    dil = a.get("dilations", [1] * nd)
    group = a.get("group", 1)
    pads = a.get("pads", [0] * 2 * nd)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOp("Conv auto_pad")
    if transpose:
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
        out_pad = a.get("output_padding", [0] * nd)
        if pads[:nd] != pads[nd:]:
            raise UnsupportedOp("ConvTranspose with asymmetric pads")
        return fn(x, w, b, strides, pads[:nd], out_pad, group, dil)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    if pads[:nd] != pads[nd:]:
        x = F.pad(x, _pads(pads, nd))
        pads = [0] * 2 * nd
    return fn(x, w, b, strides, pads[:nd], dil, group)


def _gemm(a_, b_, c=None, at=None):
    if at.get("transA", 0):
        a_ = a_.t()
    if at.get("transB", 0):
        b_ = b_.t()
    y = at.get("alpha", 1.0) * (a_ @ b_)
    if c is not None:
        y = y + at.get("beta", 1.0) * c
    return y


def _pool(x, a, kind):
    k = a["kernel_shape"]
    nd = len(k)
    strides = a.get("strides", [1] * nd)
    pads = a.get("pads", [0] * 2 * nd)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOp(f"{kind} auto_pad")
    ceil = bool(a.get("ceil_mode", 0))
    if pads[:nd] != pads[nd:]:
        if kind == "avg" and not a.get("count_include_pad", 0):
            y = _avg_pool_exclude_pad(x, k, strides, pads, nd, ceil)
            return _drop_windows_in_end_pad(y, x, strides, pads, nd) if ceil else y
        padded = F.pad(x, _pads(pads, nd), value=-math.inf if kind == "max" else 0.0)
        no_pads = {**a, "pads": [0] * 2 * nd}
        y = _pool(padded, no_pads, kind)
        return _drop_windows_in_end_pad(y, x, strides, pads, nd) if ceil else y
    if kind == "max":
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        return fn(x, k, strides, pads[:nd], a.get("dilations", [1] * nd), ceil)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return fn(x, k, strides, pads[:nd], ceil, bool(a.get("count_include_pad", 0)))


def _drop_windows_in_end_pad(y, x, strides, pads, nd):
    """With ceil_mode, ORT (and torch, given its own padding) drops a last window that would
    start inside the end padding; pooling pads applied beforehand cannot know to."""
    index = []
    for d in range(nd):
        size = x.shape[2 + d] + pads[d]  # the input and its begin padding
        index.append(slice(0, min(y.shape[2 + d], -(-size // strides[d]))))
    return y[tuple([slice(None), slice(None), *index])]


def _avg_pool_exclude_pad(x, k, strides, pads, nd, ceil):
    """AveragePool with asymmetric pads that do not count: sum of real cells over their number."""
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    padded = F.pad(x, _pads(pads, nd), value=0.0)
    ones = F.pad(torch.ones_like(x[:1, :1]), _pads(pads, nd), value=0.0)
    return fn(padded, k, strides, 0, ceil, True) / fn(ones, k, strides, 0, ceil, True)


def _reduce(x, axes_in, a, fn):
    axes = a.get("axes", None)
    if axes is None and axes_in is not None:
        axes = [int(v) for v in axes_in.tolist()]
    keep = bool(a.get("keepdims", 1))
    if not axes:
        return (
            fn(x, dim=tuple(range(x.dim())), keepdim=keep)
            if not a.get("noop_with_empty_axes", 0)
            else x
        )
    return fn(x, dim=tuple(axes), keepdim=keep)


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = starts.tolist(), ends.tolist()
    axes = list(range(len(starts))) if axes is None else axes.tolist()
    steps = [1] * len(starts) if steps is None else steps.tolist()
    idx = [slice(None)] * x.dim()
    backward = []
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = ax % x.dim()
        n = x.shape[ax]
        if st < 0:  # ONNX: start clamps to [0, n-1], end to [-1, n-1]; torch slices need st > 0
            s = max(0, min(n - 1, s + n if s < 0 else s))
            e = max(-1, min(n - 1, e + n if e < 0 else e))
            backward.append((ax, torch.arange(s, e, st, dtype=torch.long)))
            continue
        s = max(0, min(n, s + n if s < 0 else s))
        e = max(0, min(n, e + n if e < 0 else e))
        idx[ax] = slice(s, e, st)
    y = x[tuple(idx)]
    for ax, picks in backward:
        y = torch.index_select(y, ax, picks)
    return y


def _pad(x, pads, value=None, axes=None, a=None):
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    p = pads.tolist()
    nd = x.dim()
    if axes is not None:
        full = [0] * 2 * nd
        ax = [int(v) % nd for v in axes.tolist()]
        for i, d in enumerate(ax):
            full[d], full[d + nd] = p[i], p[i + len(ax)]
        p = full
    tp = _pads(p, nd)
    # the value is an input from opset 11, an attribute before
    v = float(value.item()) if value is not None and value.numel() else float(a.get("value", 0.0))
    if mode == "constant":
        return F.pad(x, tp, mode="constant", value=v)
    torch_mode = {"edge": "replicate", "reflect": "reflect", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise UnsupportedOp(f"Pad mode {mode!r}")
    lead = 0  # torch pads only the trailing spatial dims of an (N, C, ...) tensor in these modes
    while lead < nd and p[lead] == 0 and p[lead + nd] == 0:
        lead += 1
    if lead == nd:
        return x
    if nd - lead > 3:
        raise UnsupportedOp(f"Pad mode {mode!r} on more than 3 axes")
    trailing = _pads(
        [p[i] for i in range(lead, nd)] + [p[i + nd] for i in range(lead, nd)], nd - lead
    )
    shape = x.shape
    y = F.pad(x.reshape(1, -1, *shape[lead:]), trailing, mode=torch_mode)
    return y.reshape(*shape[:lead], *y.shape[2:])


def _layernorm(a, n, x, scale=None, bias=None):
    """Y, and the Mean and InvStdDev outputs (reduced axes kept as 1) when the node has them."""
    axis = a.get("axis", -1) % x.dim()
    shape = x.shape[axis:]
    eps = a.get("epsilon", 1e-5)
    y = F.layer_norm(
        x,
        shape,
        scale.reshape(shape) if scale is not None else None,
        bias.reshape(shape) if bias is not None else None,
        eps,
    )
    if n == 1:
        return [y]
    if a.get("stash_type", 1) != 1:
        raise UnsupportedOp(f"LayerNormalization stash_type={a['stash_type']} (only 1, float32)")
    xs = x.to(torch.float32)
    dims = tuple(range(axis, x.dim()))
    mean = xs.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(((xs - mean) ** 2).mean(dims, keepdim=True) + eps)
    return [y, mean, inv_std][:n]


def _split(a, n, x, split=None):
    """ONNX sizes: `split` (input, or attribute before opset 13); else `num_outputs` chunks of
    ceil(dim / n), the last one what is left (torch.tensor_split would spread the remainder);
    else n equal parts."""
    axis = a.get("axis", 0)
    if split is None:
        split = a.get("split", None)
    dim = x.shape[axis]
    if split is not None:
        sizes = [int(s) for s in (split.tolist() if torch.is_tensor(split) else split)]
    elif "num_outputs" in a:
        chunk = -(-dim // a["num_outputs"])
        sizes = [chunk] * (a["num_outputs"] - 1) + [dim - chunk * (a["num_outputs"] - 1)]
        if sizes[-1] < 0:
            raise UnsupportedOp(
                f"num_outputs={a['num_outputs']} on a dimension of {dim} "
                "would make a negative final split"
            )
    elif dim % n:
        raise UnsupportedOp(f"a dimension of {dim} cannot be split evenly into {n} outputs")
    else:
        sizes = [dim // n] * n
    return list(torch.split(x, sizes, dim=axis))


CONSTANT_KINDS = {
    "value_float": torch.float32,
    "value_floats": torch.float32,
    "value_int": torch.int64,
    "value_ints": torch.int64,
}


def constant_problem(a: dict) -> str | None:
    """Why a Constant node's value cannot be a torch tensor, or None when it can."""
    strings = "value_string" in a or "value_strings" in a
    if "value" in a:
        strings = a["value"].data_type == TensorProto.STRING
    if strings:
        return "a string value (torch has no string tensors)"
    if "value" in a or any(k in a for k in CONSTANT_KINDS):
        return None
    return f"attribute {', '.join(a) or 'none'} (not supported)"


def _constant(a):
    problem = constant_problem(a)
    if problem is not None:
        raise UnsupportedOp(f"Constant with {problem}")
    if "value" in a:
        return torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))
    kind = next(k for k in CONSTANT_KINDS if k in a)
    return torch.tensor(a[kind], dtype=CONSTANT_KINDS[kind])


def _cast(x, a):
    to = a["to"]
    dt = {
        1: torch.float32,
        6: torch.int32,
        7: torch.int64,
        9: torch.bool,
        10: torch.float16,
        11: torch.float64,
    }.get(to)
    if dt is None:
        raise UnsupportedOp(f"Cast to {to}")
    return x.to(dt)


def _bn(x, s, b, m, v, a):
    return F.batch_norm(x, m, v, s, b, False, 0.0, a.get("epsilon", 1e-5))


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Conv": lambda a, x, w, b=None: _conv(x, w, b, a),
    "ConvTranspose": lambda a, x, w, b=None: _conv(x, w, b, a, transpose=True),
    "Gemm": lambda a, x, w, c=None: _gemm(x, w, c, a),
    "MatMul": lambda a, x, y: x @ y,
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": lambda a, x, y: (
        x / y
        if x.is_floating_point() or y.is_floating_point()
        else torch.div(x, y, rounding_mode="trunc")
    ),
    "Pow": lambda a, x, y: torch.pow(x, y),
    "Sqrt": lambda a, x: torch.sqrt(x),
    "Exp": lambda a, x: torch.exp(x),
    "Log": lambda a, x: torch.log(x),
    "Neg": lambda a, x: -x,
    "Abs": lambda a, x: torch.abs(x),
    "Reciprocal": lambda a, x: 1.0 / x,
    "Erf": lambda a, x: torch.erf(x),
    "Tanh": lambda a, x: torch.tanh(x),
    "Sigmoid": lambda a, x: torch.sigmoid(x),
    "HardSigmoid": lambda a, x: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda a, x: F.hardswish(x),
    "Relu": lambda a, x: F.relu(x),
    "LeakyRelu": lambda a, x: F.leaky_relu(x, a.get("alpha", 0.01)),
    "Gelu": lambda a, x: F.gelu(
        x, approximate="tanh" if a.get("approximate", b"none") in (b"tanh", "tanh") else "none"
    ),
    "Clip": lambda a, x, lo=None, hi=None: torch.clamp(
        x,
        lo if lo is not None else a.get("min", None),
        hi if hi is not None else a.get("max", None),
    ),
    "Softmax": lambda a, x: torch.softmax(x, dim=a.get("axis", -1)),
    "LogSoftmax": lambda a, x: torch.log_softmax(x, dim=a.get("axis", -1)),
    "MaxPool": lambda a, x: _pool(x, a, "max"),
    "AveragePool": lambda a, x: _pool(x, a, "avg"),
    "GlobalAveragePool": lambda a, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda a, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "ReduceMean": lambda a, x, axes=None: _reduce(x, axes, a, torch.mean),
    "ReduceSum": lambda a, x, axes=None: _reduce(x, axes, a, torch.sum),
    "ReduceMax": lambda a, x, axes=None: _reduce(x, axes, a, torch.amax),
    "Flatten": lambda a, x: x.reshape(int(np.prod(x.shape[: a.get("axis", 1)])), -1),
    "Reshape": lambda a, x, s: x.reshape(
        [
            x.shape[i] if (v == 0 and not a.get("allowzero", 0)) else v
            for i, v in enumerate(s.tolist())
        ]
    ),
    "Transpose": lambda a, x: (
        x.permute(a["perm"]) if "perm" in a else x.permute(*reversed(range(x.dim())))
    ),
    "Squeeze": lambda a, x, axes=None: (
        x.squeeze(tuple(axes.tolist() if axes is not None else a.get("axes", [])))
        if (axes is not None or "axes" in a)
        else x.squeeze()
    ),
    "Unsqueeze": lambda a, x, axes=None: _unsqueeze(
        x, axes.tolist() if axes is not None else a["axes"]
    ),
    "Concat": lambda a, *xs: torch.cat(xs, dim=a["axis"]),
    "Identity": lambda a, x: x,
    "Dropout": lambda a, x, *r: x,
    "Slice": lambda a, x, s, e, ax=None, st=None: _slice(x, s, e, ax, st),
    "Pad": lambda a, x, p=None, v=None, ax=None: _pad(
        x, p if p is not None else torch.tensor(a["pads"]), v, ax, a
    ),
    "Gather": lambda a, x, i: _gather(x, i, a.get("axis", 0)),
    "Shape": lambda a, x: torch.tensor(
        list(x.shape)[a.get("start", 0) : a.get("end", None)], dtype=torch.int64
    ),
    "Cast": lambda a, x: _cast(x, a),
    "BatchNormalization": lambda a, x, s, b, m, v: _bn(x, s, b, m, v, a),
    "Constant": lambda a: _constant(a),
    "Where": lambda a, c, x, y: torch.where(c.bool(), x, y),
    "Equal": lambda a, x, y: x == y,
    "Expand": lambda a, x, s: x * torch.ones(s.tolist(), dtype=x.dtype),
    "ConstantOfShape": lambda a, s: _constant_of_shape(s, a),
}

MULTI_OUTPUT: dict[str, Callable[..., list[torch.Tensor]]] = {
    "Split": _split,
    "LayerNormalization": _layernorm,
}


def _gather(x, i, axis):
    axis = axis % x.dim()
    idx = i.reshape(-1).long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)  # ONNX allows negative indices
    return torch.index_select(x, axis, idx).reshape(
        list(x.shape[:axis]) + list(i.shape) + list(x.shape[axis + 1 :])
    )


def _constant_of_shape(shape, a):
    if "value" not in a:
        return torch.zeros(shape.tolist(), dtype=torch.float32)
    v = torch.from_numpy(np.array(numpy_helper.to_array(a["value"]))).reshape(-1)
    return torch.full(
        shape.tolist(), v[0].item(), dtype=v.dtype
    )  # keep the value's type (int64, ...)


def _unsqueeze(x, axes):
    for ax in sorted(int(v) % (x.dim() + len(axes)) for v in axes):
        x = x.unsqueeze(ax)
    return x
