"""AdaRound's layer loss on sampled output positions of a 2-D Conv.

A Conv's output at one position is its weight times one input patch, so the layer loss over
a random set of (sample, row, column) positions is a matrix product over those patches
(im2col, one group at a time) instead of a convolution over every position of every image.
On an ImageNet-size network that is 100x or more less work per iteration (a 112x112 map
has 12,544 positions per image; a batch here takes 32 per image), and the patches of a few
thousand positions from every calibration sample are a few MB where the feature maps they
come from are hundreds. Positions are drawn uniformly over all samples, so one batch mixes
many images (more diverse than 32 whole images). Used where the unit is one Conv with at
most a Relu/Clip after it; blocks (BRECQ) and other layers keep whole maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper

PATCH_BUDGET = 1 << 25  # floats in one unit's sampled patches (128 MB)
PER_IMAGE_BATCH = 32  # a reconstruction batch of B images becomes B x 32 positions...
ITERATION_BUDGET = 1 << 22  # ...of at most this many patch floats (a wide depthwise layer's
# iteration is memory-bound: 1,024 positions x 1,152 channels x 25 taps took 0.4 s)
INPUT = "__patches__"


@dataclass
class ConvLayer:
    """What the patch loss needs of a Conv unit: its geometry, bias and trailing clamp."""

    weight: str
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    groups: int
    bias: np.ndarray | None
    clamp: tuple[float, float] | None


def conv_layer(proto: onnx.ModelProto, unit) -> ConvLayer | None:
    """The unit's Conv when the unit is one 2-D Conv (and a Relu/Clip) with one input; else None."""
    nodes = {n.name: n for n in proto.graph.node}
    members = [nodes[n] for n in unit.nodes]
    if not members or members[0].op_type != "Conv" or len(unit.inputs) != 1:
        return None
    if len(members) > 2 or (len(members) == 2 and members[1].op_type not in ("Relu", "Clip")):
        return None
    conv = members[0]
    inits = {t.name: t for t in proto.graph.initializer}
    if len(conv.input) < 2 or conv.input[1] not in inits or conv.input[1] not in unit.weights:
        return None
    w = inits[conv.input[1]]
    if len(w.dims) != 4:
        return None
    a = {x.name: onnx.helper.get_attribute_value(x) for x in conv.attribute}
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    bias = None
    if len(conv.input) > 2 and conv.input[2]:
        if conv.input[2] not in inits:
            return None
        bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float32)
    clamp = _clamp(members[1], inits) if len(members) == 2 else None
    if len(members) == 2 and clamp is None:
        return None
    pads = tuple(a.get("pads", [0, 0, 0, 0]))
    return ConvLayer(
        conv.input[1],
        (int(w.dims[2]), int(w.dims[3])),
        tuple(a.get("strides", [1, 1])),
        tuple(a.get("dilations", [1, 1])),
        pads,
        int(a.get("group", 1)),
        bias,
        clamp,
    )


def _clamp(node: onnx.NodeProto, inits) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return (0.0, np.inf)
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
    for i, name in enumerate(node.input[1:3]):
        if not name:
            continue
        if name not in inits:
            return None
        v = float(numpy_helper.to_array(inits[name]))
        lo, hi = (v, hi) if i == 0 else (lo, v)
    return (lo, hi)


def sample_positions(n_out: int, per_position: int, seed: int) -> np.ndarray:
    """Which of the n_out output positions (all samples together) the loss is taken on."""
    count = int(min(n_out, max(PATCH_BUDGET // max(per_position, 1), 256)))
    return np.sort(np.random.default_rng(seed).choice(n_out, count, replace=False))


def patches(x: np.ndarray, layer: ConvLayer, out_hw: tuple[int, int], where: np.ndarray):
    """Input patches (P, C, kh, kw) of the output positions `where` (flat over N x Ho x Wo)."""
    ho, wo = out_hw
    n_idx, rest = np.divmod(where, ho * wo)
    r_idx, c_idx = np.divmod(rest, wo)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    top, left, bottom, right = layer.pads
    out = np.empty((len(where), x.shape[1], kh, kw), np.float32)
    for n in np.unique(n_idx):
        sel = np.nonzero(n_idx == n)[0]
        xp = np.pad(x[n], ((0, 0), (top, bottom), (left, right)))
        rows = r_idx[sel, None] * sh + dh * np.arange(kh)[None]  # (p, kh)
        cols = c_idx[sel, None] * sw + dw * np.arange(kw)[None]  # (p, kw)
        out[sel] = xp[:, rows[:, :, None], cols[:, None, :]].transpose(1, 0, 2, 3)
    return out


def targets(y, where: np.ndarray) -> np.ndarray:
    """The float output (N, Cout, Ho, Wo) at the flat positions `where`: (P, Cout). A tensor
    kept in a file (runtime.spill) is read one sample at a time."""
    n, c, ho, wo = y.shape
    if isinstance(y, np.ndarray):
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1).reshape(n * ho * wo, c)[where])
    out = np.empty((len(where), c), np.float32)
    n_idx, rest = np.divmod(where, ho * wo)
    for s in np.unique(n_idx):
        sel = np.nonzero(n_idx == s)[0]
        out[sel] = y[s].reshape(c, ho * wo)[:, rest[sel]].T
    return out


def batch_positions(patch_floats: int, images: int) -> int:
    """Positions per reconstruction batch: PER_IMAGE_BATCH per image, within ITERATION_BUDGET
    (`patch_floats`: one position's patch, C x kh x kw)."""
    return int(min(images * PER_IMAGE_BATCH, max(64, ITERATION_BUDGET // max(patch_floats, 1))))


def patch_runner(layer: ConvLayer, bf16: bool = False):
    """run_unit for reconstruct(): feeds {INPUT: (B, G, C/G*kh*kw), weight: (Cout, C/G, kh, kw)}.
    `bf16`: an ungrouped layer's product in bfloat16 (float32 sums; see bf16_products)."""
    bias = None if layer.bias is None else torch.from_numpy(layer.bias)
    g = layer.groups

    def run(feeds, hooks=None):
        xg, w = feeds[INPUT], feeds[layer.weight]  # (B, G, C/G * kh * kw)
        b, cout = xg.shape[0], w.shape[0]
        wg = w.reshape(g, cout // g, -1)  # (G, Cout/G, C/G * kh * kw)
        if cout == g:  # depthwise: one output per group
            y = (xg * wg[:, 0][None]).sum(-1)  # 20 % faster than einsum here (bmm per group)
        elif g == 1 and bf16:
            y = (xg[:, 0].to(torch.bfloat16) @ wg[0].T.to(torch.bfloat16)).float()
        elif g == 1:
            y = xg[:, 0] @ wg[0].T
        else:
            y = torch.einsum("bgk,gok->bgo", xg, wg).reshape(b, cout)
        if bias is not None:
            y = y + bias
        if layer.clamp is not None:
            y = torch.clamp(y, layer.clamp[0], layer.clamp[1])
        return y

    return run


def patch_data(layer: ConvLayer, x: np.ndarray, x_float, target: np.ndarray, seed: int):
    """(inputs, float inputs or None, targets, the sample each row comes from) of the sampled
    positions, for reconstruct()."""
    n, _, ho, wo = target.shape
    c = x.shape[1]
    where = sample_positions(n * ho * wo, c * layer.kernel[0] * layer.kernel[1], seed)

    def grouped(values):  # (P, G, C/G*kh*kw), rows contiguous: a batch is a gather of rows
        return patches(values, layer, (ho, wo), where).reshape(len(where), layer.groups, -1)

    xs = {INPUT: grouped(x)}
    xf = None if x_float is None else {INPUT: grouped(x_float)}
    return xs, xf, targets(target, where), where // (ho * wo)


BF16_MIN_MACS = 1 << 28  # an iteration's product this large learns in bfloat16 where that is fast
BF16_GAIN = 1.5  # ... at least this many times faster than float32, as measured once here
_bf16_fast: bool | None = None


def bf16_products(positions: int, k: int, cout: int, groups: int) -> bool:
    """Whether AdaRound's iterations on a Conv multiply in bfloat16 (positions x K x Cout).

    Only a large ungrouped product, and only on a CPU that multiplies bfloat16 natively
    (measured: at least BF16_GAIN times float32's speed; on an AMX Xeon the product of a
    ResNet-18 512-channel 3x3 layer's iteration took 10-16 ms against 29-35 ms; a CPU without
    native bfloat16 keeps float32). The learned codes then depend on the CPU, as ORT's kernels'
    results do. The weights, their soft rounding, the loss and the products' sums stay float32
    (oneDNN accumulates bfloat16 products in float32); the layer's error before and after,
    which decides whether the learned rounding is kept, is measured in float32."""
    if groups != 1 or positions * k * cout < BF16_MIN_MACS:
        return False
    global _bf16_fast
    if _bf16_fast is None:
        _bf16_fast = _bf16_speedup() >= BF16_GAIN
    return _bf16_fast


def _bf16_speedup() -> float:
    """float32 time over bfloat16 time of one 1024 x 4096 x 512 product (best of 5 after two
    warm-up products, one thread). With one warm-up and a 4x smaller product the ratio on an AMX
    Xeon ranged 2.4-6.5 between calls, around a 3x threshold; this way 3.9-7.0, well above
    BF16_GAIN."""
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(1024, 4096), torch.randn(4096, 512)
        best = {}
        for dtype in (torch.float32, torch.bfloat16):
            x, y = a.to(dtype), b.to(dtype)
            x @ y  # warm: oneDNN picks its kernel and sets up its tiles
            x @ y
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                x @ y
                times.append(time.perf_counter() - t0)
            best[dtype] = min(times)
        return best[torch.float32] / max(best[torch.bfloat16], 1e-9)
    finally:
        torch.set_num_threads(threads)
