"""Every weighted op as G independent products y = x W, and the input Hessians GPTQ needs.

GPTQ rounds a weight W (K inputs x N outputs) against H = 2 Σ x xᵀ / n over the vectors x
the weight multiplies. For MatMul and Gemm x is a row of the activation (transA, transB
and a weight on the left of a MatMul only change which axis is which). For Conv x is the
im2col patch of one output position: the C_in/group · kh · kw input values under the
kernel there, with strides, pads (explicit or auto_pad), dilations and zero padding as
ONNX defines them; each group is its own product with its own Hessian (a depthwise Conv:
one per channel, K = kh·kw). ConvTranspose is the same conv over the input with (stride
- 1) zeros inserted between samples, padded by dilation·(k - 1) - pad (plus
output_padding at the end), its kernel flipped: its patches come from that input, so
its Hessians are exact too (output_shape or auto_pad SAME are not resolved here: such a
ConvTranspose is reported as skipped).

`LinearForm` maps a weight to (G, K, N) and back and turns a batch of the op's data
input into patches (G, M, K); `HessianSum` adds Σ x xᵀ batch by batch (products in float32,
the sum in float64), so
memory is one batch of patches whatever the number of calibration samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

CHUNK_ELEMENTS = 1 << 22  # patches built at once (16 MB of float32), whole samples at a time
MIN_ROWS = 4096  # patches a capped HessianSum keeps per batch, at least
FLUSH_ELEMENTS = 1 << 24  # patches of several chunks summed in one product, up to 64 MB of them


@dataclass(frozen=True)
class LinearForm:
    op: str  # Conv, ConvTranspose, Gemm or MatMul
    weight_shape: tuple[int, ...]
    groups: int = 1
    trans_w: bool = False  # 2-D weight stored [N, K] (Gemm transB=1, a MatMul weight on the left)
    trans_x: bool = False  # data vectors are columns (Gemm transA=1, MatMul W @ X)
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] | None = None  # begin..., end...; None: from auto_pad and the input shape
    auto_pad: str = "NOTSET"
    output_padding: tuple[int, ...] = ()

    @property
    def conv(self) -> bool:
        return self.op in ("Conv", "ConvTranspose")

    @property
    def gkn(self) -> tuple[int, int, int]:
        s, g = self.weight_shape, self.groups
        if self.op == "Conv":
            return g, int(np.prod(s[1:])), s[0] // g
        if self.op == "ConvTranspose":
            return g, s[0] // g * int(np.prod(s[2:])), s[1]
        return (1, s[1], s[0]) if self.trans_w else (1, s[0], s[1])

    def to_gkn(self, w: np.ndarray) -> np.ndarray:
        """The weight (or anything of its shape) as (G, K, N)."""
        g, k, n = self.gkn
        w = np.asarray(w)
        if self.op == "Conv":  # (O, C/g, *k): output o = group * N + n, K ordered (c, kernel...)
            return w.reshape(g, n, k).transpose(0, 2, 1)
        if self.op == "ConvTranspose":  # (C_in, C_out/g, *k): input c = group * C_in/g + c'
            w = w.reshape(g, w.shape[0] // g, n, -1)  # (g, c', n, kernel)
            return w.transpose(0, 1, 3, 2).reshape(g, k, n)
        return (w.T if self.trans_w else w)[None]

    def from_gkn(self, a: np.ndarray) -> np.ndarray:
        g, _, n = self.gkn
        s = self.weight_shape
        if self.op == "Conv":
            return a.transpose(0, 2, 1).reshape(s)
        if self.op == "ConvTranspose":
            return a.reshape(g, s[0] // g, -1, n).transpose(0, 1, 3, 2).reshape(s)
        return a[0].T if self.trans_w else a[0]

    def patches(
        self, x: np.ndarray, max_rows: int | None = None, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """The vectors the weight multiplies, for one batch of the op's data input: (G, M, K) float32
        (the precision ORT computed them in).
        With max_rows, at most that many of them, drawn uniformly without replacement (for a Conv
        the output positions are drawn before any patch is copied)."""
        x = np.asarray(x)
        g, k, _ = self.gkn
        rng = rng if rng is not None else np.random.default_rng(0)
        if not self.conv:
            if self.trans_x:  # Gemm transA=1: A is (K, M); MatMul W @ X: X is (..., K, M)
                x = np.swapaxes(x, -1, -2)
            rows = x.reshape(-1, k)
            if max_rows is not None and len(rows) > max_rows:
                rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
            return np.ascontiguousarray(rows[None], dtype=np.float32)
        win = conv_windows(x, self)  # (B, C, *out, *kernel)
        nd = len(self.kernel)
        b, c = win.shape[:2]
        out = win.shape[2 : 2 + nd]
        m = b * int(np.prod(out))
        if max_rows is not None and m > max_rows:
            at = np.unravel_index(np.sort(rng.choice(m, max_rows, replace=False)), (b, *out))
            drawn: tuple = (at[0], slice(None), *at[1:])
            picked = win[drawn]  # (M', C, *kernel): only the drawn patches are copied
            picked = picked.reshape(len(at[0]), g, c // g, *self.kernel).swapaxes(0, 1)
            return np.ascontiguousarray(picked, dtype=np.float32).reshape(g, -1, k)
        win = win.reshape(b, g, c // g, *out, *self.kernel)
        order = (
            1,
            0,
            *range(3, 3 + nd),
            2,
            *range(3 + nd, 3 + 2 * nd),
        )  # (g, B, *out, c', *kernel)
        return np.ascontiguousarray(win.transpose(order), dtype=np.float32).reshape(g, -1, k)

    def samples_per_chunk(self, x: np.ndarray) -> int:
        """Whole samples (axis 0) whose patches stay near CHUNK_ELEMENTS; all of x where axis 0 is
        not a batch axis (a 2-D input read transposed: Gemm transA=1)."""
        if x.ndim < 2 or (self.trans_x and x.ndim == 2):
            return max(len(x), 1)
        per_sample = int(np.prod(x.shape[1:]))
        if (
            self.conv
        ):  # about: a Conv has at most as many outputs as inputs (stride >= 1, small pads)
            per_sample *= int(np.prod(self.kernel)) * (
                int(np.prod(self.strides)) if self.op == "ConvTranspose" else 1
            )
        return max(1, CHUNK_ELEMENTS // max(per_sample, 1))


def linear_form(
    node: onnx.NodeProto, weight_index: int, weight_shape: tuple[int, ...]
) -> LinearForm | str:
    """The op's LinearForm, or why GPTQ does not handle it (a sentence for the report)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    shape = tuple(int(d) for d in weight_shape)
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        nd = len(shape) - 2
        pads = attrs.get("pads")
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if op == "ConvTranspose" and (
            auto in ("SAME_UPPER", "SAME_LOWER") or attrs.get("output_shape")
        ):
            return (
                "ConvTranspose with auto_pad SAME or output_shape: its padding depends on the output "
                "shape, which GPTQ does not resolve; rounded to nearest"
            )
        if auto == "VALID":
            pads = [0] * 2 * nd
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = None
        else:
            pads = list(pads) if pads else [0] * 2 * nd
        return LinearForm(
            op,
            shape,
            groups=int(attrs.get("group", 1)),
            kernel=tuple(attrs.get("kernel_shape") or shape[2:]),
            strides=tuple(attrs.get("strides") or [1] * nd),
            dilations=tuple(attrs.get("dilations") or [1] * nd),
            pads=None if pads is None else tuple(int(p) for p in pads),
            auto_pad=auto,
            output_padding=tuple(attrs.get("output_padding") or [0] * nd),
        )
    if len(shape) != 2:
        return f"{op} weight of rank {len(shape)}: GPTQ handles 2-D MatMul/Gemm weights; rounded to nearest"
    if op == "Gemm":
        if weight_index != 1:
            return "Gemm whose weight is input A: rounded to nearest"
        return LinearForm(
            op, shape, trans_w=bool(attrs.get("transB", 0)), trans_x=bool(attrs.get("transA", 0))
        )
    if op == "MatMul":
        return LinearForm(op, shape, trans_w=weight_index == 0, trans_x=weight_index == 0)
    return f"{op} has no GPTQ form; rounded to nearest"


def conv_windows(x: np.ndarray, form: LinearForm) -> np.ndarray:
    """(B, C, *out, *kernel) view of the input under each output position of a Conv, or of a
    ConvTranspose (its zero-stuffed, padded input, kernel axes flipped to match the weight)."""
    nd = len(form.kernel)
    spatial = x.shape[2:]
    if form.op == "ConvTranspose":
        up = np.zeros(
            x.shape[:2] + tuple((n - 1) * s + 1 for n, s in zip(spatial, form.strides)), x.dtype
        )
        every = (slice(None), slice(None), *(slice(None, None, s) for s in form.strides))
        up[every] = x
        assert form.pads is not None  # linear_form resolves a ConvTranspose's pads
        span = [d * (k - 1) for k, d in zip(form.kernel, form.dilations)]
        begin = [sp - p for sp, p in zip(span, form.pads[:nd])]
        end = [sp - p + op for sp, p, op in zip(span, form.pads[nd:], form.output_padding)]
        win = _windows(_pad(up, begin, end), form.kernel, [1] * nd, form.dilations)
        return win[(Ellipsis,) + (slice(None, None, -1),) * nd]
    pads = form.pads if form.pads is not None else _same_pads(spatial, form)
    return _windows(_pad(x, pads[:nd], pads[nd:]), form.kernel, form.strides, form.dilations)


def _same_pads(spatial, form: LinearForm) -> tuple[int, ...]:
    begin, end = [], []
    for n, k, s, d in zip(spatial, form.kernel, form.strides, form.dilations):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        small = total // 2
        begin.append(small if form.auto_pad == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return tuple(begin + end)


def _pad(x: np.ndarray, begin, end) -> np.ndarray:
    """Zero padding on the spatial axes; negative amounts crop."""
    crop = tuple(slice(max(-b, 0), n - max(-e, 0)) for n, b, e in zip(x.shape[2:], begin, end))
    inside = (slice(None), slice(None), *crop)
    x = x[inside]
    widths = [(0, 0), (0, 0)] + [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    return np.pad(x, widths) if any(w != (0, 0) for w in widths) else x


def _windows(x: np.ndarray, kernel, strides, dilations) -> np.ndarray:
    nd = len(kernel)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    v = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + nd)))
    steps = (
        slice(None),
        slice(None),
        *(slice(None, None, s) for s in strides),
        *(slice(None, None, d) for d in dilations),
    )
    return v[steps]


def gram(p: np.ndarray, q: np.ndarray | None = None, dtype=np.float64) -> np.ndarray:
    """pᵀp per group, (G, M, K) -> (G, K, K) float64, multiplied in p's precision (float32 patches:
    half the time of float64 and as exact as the activations ORT computed; the sum over batches
    is float64). One group: numpy's product of a matrix with its own transpose, which BLAS
    computes as a symmetric rank-k update (half the arithmetic: 0.66 s against torch's 1.1 s
    at M = 12,544, K = 2,304); several: torch's batched product where installed. With `q`
    ((G, M, any)): the product pᵀq. dtype=None: in p's precision, for a caller
    that adds it into a float64 sum in place (no float64 copy of a K x K product to fault in)."""
    other = p if q is None else q
    if len(p) == 1:
        out = (p[0].T @ other[0])[None]
    else:
        try:
            import torch
        except ImportError:  # torch is an optional dependency
            out = np.matmul(p.transpose(0, 2, 1), other)
        else:
            t = torch.from_numpy(p)
            u = t if q is None else torch.from_numpy(q)
            out = torch.bmm(t.transpose(1, 2), u).numpy()
    return out if dtype is None else out.astype(dtype)


class HessianSum:
    """Σ x xᵀ over the patches of every batch added, per group, in float64.

    With rows_per_k, each add() keeps at most max(MIN_ROWS, rows_per_k · K) patches of its
    batch, drawn at random: a feature map gives far more patches than a K x K Hessian
    needs (256 images of 112 x 112 give 3.2 M rows), and building and summing them all
    was most of GPTQ's cost on EfficientNet-Lite0. None keeps every patch.

    Given the float model's values of the same input too, add() also sums, over the same
    patches, what GPTQ needs to fit the layer to the float model's output instead of to its own
    float weights' (gptq.asymmetric_target): `float_gap`, Σ x (x_float - x)ᵀ W. With the
    layer's float `weight` (G, K, N) given and N < K / 2 it is summed as it is, else through
    the cross product Σ x x_floatᵀ (`cross`), whichever takes less arithmetic: a 3x3 conv's
    K = 9 · C inputs make the product with W (2 · rows · K · N) 4.5 times cheaper than the
    K x K cross product (ResNet-18's last 3x3 layers: 530 GFLOP each on 256 images).
    """

    def __init__(
        self,
        form: LinearForm,
        rows_per_k: int | None = None,
        seed: int = 0,
        weight: np.ndarray | None = None,
    ) -> None:
        g, k, n = form.gkn
        self.form = form
        self._sum = np.zeros((g, k, k))
        self._cross: np.ndarray | None = None  # Σ x x_floatᵀ, once add() is given x_float
        # the float weights (G, K, N) float32 where Σ x (x_float - x)ᵀ W is summed directly
        self._weight = None if weight is None or 2 * n >= k else np.asarray(weight, np.float32)
        self._gap: np.ndarray | None = None  # Σ x (x_float - x)ᵀ W, then
        self._rows = 0  # patches per group, summed
        self._held: list[tuple[np.ndarray, np.ndarray | None]] = []  # patches not summed yet
        self._held_rows = self._held_elements = 0  # what _held holds, counted as it is added
        self.max_rows = None if rows_per_k is None else max(MIN_ROWS, rows_per_k * k)
        self.rng = np.random.default_rng(seed)

    @property
    def sum(self) -> np.ndarray:
        """Σ x xᵀ, (G, K, K) float64."""
        self._flush()
        return self._sum

    @property
    def cross(self) -> np.ndarray | None:
        """Σ x x_floatᵀ over the same patches, where add() was given the float model's values (and
        no weight made `float_gap` cheaper to sum directly)."""
        self._flush()
        return self._cross

    @property
    def compares_float(self) -> bool:
        """Whether add() was given the float model's values (a float_gap exists): add() sets up
        the sum they go into on the first of them."""
        return self._cross is not None or self._gap is not None

    def float_gap(self, w: np.ndarray) -> np.ndarray | None:
        """Σ x (x_float - x)ᵀ w, (G, K, N) float64, for w the float weights in (G, K, N) (those given
        to the constructor, where they were), or None without the float model's values."""
        self._flush()
        if self._gap is not None:
            return self._gap
        if self._cross is None:
            return None
        return np.matmul(self._cross - self._sum, w)

    @property
    def rows(self) -> int:
        """Patches summed, per group."""
        return self._rows + self._held_rows

    def add(self, x: np.ndarray, x_float: np.ndarray | None = None) -> None:
        x = _batch(x)
        xf = None if x_float is None else _batch(x_float)
        if xf is not None and self._weight is None and self._cross is None:
            self._cross = np.zeros_like(self._sum)
        if xf is not None and self._weight is not None and self._gap is None:
            self._gap = np.zeros(self._weight.shape)
        step = self.form.samples_per_chunk(x)
        chunks = -(-len(x) // step) if x.ndim >= 2 and len(x) else 1
        cap = None if self.max_rows is None else -(-self.max_rows // chunks)
        for s in range(0, len(x), step):
            drawn = self.rng.bit_generator.state  # the float patches come from the same positions
            p = self.form.patches(x[s : s + step], cap, self.rng)
            pf = None
            if xf is not None:
                twin = np.random.default_rng()
                twin.bit_generator.state = drawn
                pf = self.form.patches(xf[s : s + step], cap, twin)
            self._held.append((p, pf))
            self._held_rows += p.shape[1]
            self._held_elements += p.size
            if self._held_elements >= FLUSH_ELEMENTS or self._held_rows >= self.form.gkn[1]:
                self._flush()

    def settle(self) -> None:
        """Sum what add() still holds (the properties do it too; this lets a caller time it)."""
        self._flush()

    def _flush(self) -> None:
        """Sum the patches held in one product. Chunks and batches of few rows (ResNet-50's 7 x 7
        maps: 196 rows a chunk for K = 4608) each cost a K x K product and its float64 sum for
        little arithmetic: one per chunk took 6 s of a 6.8 s layer. So patches wait, up to K rows
        or FLUSH_ELEMENTS, and are summed together."""
        held, self._held = self._held, []
        self._held_rows = self._held_elements = 0
        if not held:
            return
        p = held[0][0] if len(held) == 1 else np.concatenate([h[0] for h in held], axis=1)
        np.add(self._sum, gram(p, dtype=None), out=self._sum)
        self._rows += p.shape[1]
        if held[0][1] is None:
            return
        pf = held[0][1] if len(held) == 1 else np.concatenate([h[1] for h in held], axis=1)
        if self._gap is not None:  # x (x_float - x)ᵀ W: (G, K, rows) x ((G, rows, K) x (G, K, N))
            assert self._weight is not None
            # not in place: a patch array may be a view of the caller's float tensor
            np.add(self._gap, gram(p, np.matmul(pf - p, self._weight), dtype=None), out=self._gap)
        elif self._cross is not None:
            np.add(self._cross, gram(p, pf, dtype=None), out=self._cross)

    @property
    def h(self) -> np.ndarray:
        """GPTQ's H = 2 XᵀX / n, (G, K, K)."""
        return 2.0 * self.sum / max(self.rows, 1)

    def output_error(self, delta: np.ndarray) -> float:
        """Mean over outputs and patches of (x · Δw)², Δ a weight difference in the weight's own shape:
        ||W X - Q X||² / (patches · outputs) without running the layer."""
        d = self.form.to_gkn(np.asarray(delta, np.float32))
        g, _, n = d.shape
        # (Σ Δ) then the elementwise product: a BLAS product, where einsum's three-operand
        # loop took K²·N steps in C (53 s at K = 4608, N = 512); in float32 (a figure for the
        # report: half float64's time, 2.3 s of ResNet-50's GPTQ), summed in float64
        hd = np.matmul(self.sum.astype(np.float32), d)
        quad = np.einsum("gkn,gkn->", d, hd, dtype=np.float64)
        return float(quad / max(self.rows * g * n, 1))


def _batch(x) -> np.ndarray:
    x = np.asarray(x)
    return x[None] if x.ndim < 2 else x
