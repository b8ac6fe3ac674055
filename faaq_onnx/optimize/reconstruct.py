"""The reconstruction engine behind AdaRound and BRECQ (and QDrop), in torch.

A unit (one layer, or a block between residual Adds) runs in the ONNX-in-torch
interpreter. Its weights are fed as soft-quantized tensors: the grid (scale, zero
point) is fixed by the range setter, and each weight learns whether to round down or
up through h(V) = clip(sigmoid(V)(ζ-γ)+γ, 0, 1) (AdaRound, Nagel et al. 2020). The
loss is the unit's output error against the float model's output plus a regularizer
that pushes every h(V) to 0 or 1 as its exponent β anneals from 20 to 2. BRECQ also
learns the step size of the activation quantizers inside the block (LSQ gradient) and,
with QDrop, keeps each activation element float with probability p. All of it goes
through the one fake-quant of faaq_onnx.quant.affine, with a learned or straight-
through rounding plugged in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from faaq_onnx.quant.affine import fake_quant
from faaq_onnx.quant.weights import WeightGrid
from faaq_onnx.runtime.spill import SpilledArray

ZETA, GAMMA = 1.1, -0.1
SCALE_LR = 1e-4  # Adam step on a weight scale's log-gain when --optimize-scales learns it
RESIDENT_BYTES = 256 << 20  # a unit tensor this large is gathered per batch, not copied whole
MIX_FLOAT = (
    0.5  # --optimize-inputs mixed: chance that an input element is the float model's (QDrop's 0.5)
)


@dataclass
class ReconSettings:
    iters: int = 1000
    batch_size: int = 32
    lr: float = 1e-3  # AdaRound/AIMET default for V
    act_lr: float = 4e-5  # BRECQ's step-size learning rate
    reg: float = 0.01  # λ of the rounding regularizer (AIMET's default)
    warm_start: float = 0.2  # share of iterations without the regularizer
    beta: tuple[float, float] = (20.0, 2.0)
    drop: float = 0.0  # QDrop: probability of keeping an activation element float
    scale_lr: float = (
        0.0  # learning rate of the weight scales' log-gain (0: scales stay the range setter's)
    )
    seed: int = 0
    threads: int = 1
    sampled_positions: bool = False  # a lone Conv's loss on sampled output positions (patches.py)
    holdout: float = 0.0  # share of the samples (the last) a unit is not fit to but judged on
    patience: int = 0  # stop learning after this many units in a row keep their start (0: never)


class SoftWeight:
    """A weight on a grid whose rounding direction is learned, and optionally its scale.

    With `learn_scale` each scale of the grid (per tensor, channel or block) gets a
    learnable gain exp(g), g starting at 0: the integers stay floor(w/s0) + h(V) and the
    dequantized weight is s0·exp(g)·(code - zp), so the scale can absorb the systematic
    shrink or growth that rounding a channel's weights one way leaves behind.
    """

    def __init__(self, w: np.ndarray, grid: WeightGrid, learn_scale: bool = False) -> None:
        self.grid = grid
        s = grid.full_scale
        self.scale = torch.from_numpy(np.broadcast_to(s, w.shape).astype(np.float32).copy())
        self.zp = torch.from_numpy(
            np.broadcast_to(grid.full_zero_point, w.shape).astype(np.float32).copy()
        )
        ws = w.astype(np.float32) / self.scale.numpy()
        self.floor = torch.from_numpy(np.floor(ws))
        rest = np.clip(ws - np.floor(ws), 1e-4, 1 - 1e-4)
        v0 = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)  # h(V0) = rest: start at the float weight
        self.v = torch.nn.Parameter(torch.from_numpy(v0.astype(np.float32)))
        self.log_gain = None
        self._affine: tuple[torch.Tensor, torch.Tensor] | None = None
        if learn_scale:
            # which scale each weight element uses
            self._where = torch.from_numpy(grid.scale_index().astype(np.int64))
            self.log_gain = torch.nn.Parameter(torch.zeros(grid.scale.size))

    def soft_and_reg(self, beta: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(soft(), reg(beta)) in one pass (reg 0 where beta is None), for the iterations.

        Autograd through soft() and reg() kept some fifteen weight-sized intermediates and
        computed h(V) twice; on a 512-channel 3x3 layer (2.4 M weights) that elementwise work
        took about two thirds of an iteration. _SoftRounding computes the same values and
        gradient. A learned scale keeps the autograd path."""
        if self.log_gain is not None:
            reg = self.reg(beta) if beta is not None else torch.zeros(())
            return self.soft(), reg
        if self._affine is None:
            self._affine = _affine(self.floor, self.scale, self.zp, self.grid.fmt)
        return _SoftRounding.apply(self.v, *self._affine, beta)

    def _scale(self) -> torch.Tensor:
        if self.log_gain is None:
            return self.scale
        return self.scale * torch.exp(self.log_gain)[self._where]

    def h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def soft(self) -> torch.Tensor:
        fmt = self.grid.fmt
        s = self._scale()
        return fake_quant(
            self.floor * s,
            s,
            self.zp,
            fmt.qmin,
            fmt.qmax,
            round_fn=lambda t: torch.floor(t + 1e-4) + self.h(),
        )

    def codes(self) -> np.ndarray:
        """Hard rounding: down where h(V) < 0.5, up where it is not."""
        fmt = self.grid.fmt
        q = self.floor + (self.h() >= 0.5).float() + self.zp
        return torch.clamp(q, fmt.qmin, fmt.qmax).detach().numpy().astype(np.int64)

    def learned_scale(self) -> np.ndarray:
        """The grid's scale (its own shape) times the learned gain; the range setter's if none."""
        if self.log_gain is None:
            return self.grid.scale
        gain = torch.exp(self.log_gain).detach().numpy().reshape(self.grid.scale.shape)
        return (self.grid.scale * gain).astype(np.float32)

    def reg(self, beta: float) -> torch.Tensor:
        return (1 - torch.abs(2 * self.h() - 1) ** beta).sum()


def _affine(floor, scale, zp, fmt) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, s_in): a soft weight is c + s_in·h (see _SoftRounding)."""
    base = torch.floor(floor * scale / scale + 1e-4)  # soft()'s integer part, as it recovers it
    lo = base + zp
    inside = (lo >= fmt.qmin) & (lo + 1 <= fmt.qmax)
    clamped = (torch.clamp(lo, fmt.qmin, fmt.qmax) - zp) * scale  # outside: h moves nothing
    return torch.where(inside, base * scale, clamped), torch.where(inside, scale, 0.0)


class _SoftRounding(torch.autograd.Function):
    """SoftWeight.soft() and reg(β) with their gradient in V written out, in few passes.

    With h = h(V) in [0, 1] and the integer part b fixed, an element whose b + zp and b + zp + 1
    both lie on the grid dequantizes to s·b + s·h; any other is clamped to a constant wherever h
    can move it (h at 0 or 1 exactly has no gradient). So w = c + s_in·h with c and s_in fixed
    per element (_affine), dw/dV = s_in·h'(V), and the regularizer's gradient
    -2β·sign(2h-1)·|2h-1|^(β-1)·h'(V) is formed in the forward pass: the backward is two products."""

    @staticmethod
    def forward(ctx, v, const, slope, beta):
        sig = torch.sigmoid(v)
        raw = sig * (ZETA - GAMMA) + GAMMA
        h = raw.clamp(0, 1)
        dh_dv = torch.where(h == raw, (1 - sig).mul_(sig).mul_(ZETA - GAMMA), 0.0)
        w = torch.addcmul(const, slope, h)
        dw_dv = dh_dv * slope
        if beta is None:
            ctx.save_for_backward(dw_dv)
            return w, torch.zeros((), dtype=v.dtype)
        d = h.mul_(2).sub_(1)  # 2h - 1
        p = torch.abs(d).log_().mul_(beta - 1).exp_()  # |d|^(β-1): half pow's time; 0 at d = 0
        g = p.mul_(torch.sign(d))  # sign(d)·|d|^(β-1); times d it is |d|^β
        reg = d.numel() - (g * d).sum()
        dreg_dv = g.mul_(dh_dv).mul_(-2 * beta)
        ctx.save_for_backward(dw_dv, dreg_dv)
        return w, reg

    @staticmethod
    def backward(ctx, grad_w, grad_reg):
        dw_dv, *dreg = ctx.saved_tensors
        grad_v = grad_w * dw_dv
        if dreg and grad_reg is not None:
            grad_v.add_(dreg[0] * grad_reg)
        return grad_v, None, None, None


class LearnedActQuant:
    """An activation quantizer whose step size is learned (LSQ), zero point and range fixed."""

    def __init__(self, scale: float, zp: int, qmin: int, qmax: int, n_elements: int) -> None:
        self.log_scale = torch.nn.Parameter(torch.tensor(np.log(scale), dtype=torch.float32))
        self.zp, self.qmin, self.qmax = float(zp), qmin, qmax
        self.grad_scale = 1.0 / np.sqrt(max(n_elements, 1) * max(qmax, 1))

    def __call__(
        self, x: torch.Tensor, drop: float = 0.0, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        s = torch.exp(self.log_scale)
        q = fake_quant(x, s, self.zp, self.qmin, self.qmax, round_fn=_ste_round)
        if drop > 0:  # QDrop: some elements stay float, so the unit learns to be robust to both
            keep_float = torch.rand(x.shape, generator=gen) < drop
            q = torch.where(keep_float, x, q)
        return q

    @property
    def scale(self) -> float:
        return float(torch.exp(self.log_scale).detach())


def _ste_round(t: torch.Tensor) -> torch.Tensor:
    return (torch.round(t) - t).detach() + t


def reconstruct(
    run_unit,
    weights: dict[str, SoftWeight],
    acts: dict[str, LearnedActQuant],
    inputs: dict[str, np.ndarray],
    target: np.ndarray,
    settings: ReconSettings,
    progress=None,
    float_inputs: dict[str, np.ndarray] | None = None,
    rows: np.ndarray | None = None,
) -> float:
    """Optimize rounding (and step sizes) of one unit; returns the final reconstruction MSE.

    `rows`: the rows of `inputs`/`target` batches are drawn from (None: every row).

    `run_unit(feeds, hooks)` runs the unit's forward pass in torch and returns its output.
    With `float_inputs` (the float model's values of the same inputs) each input element of
    each batch is the float one with probability MIX_FLOAT (QDrop's input drop).
    """
    prev_threads = torch.get_num_threads()
    # the tensors of one unit are small: one thread is several times faster than two
    # (and tens of times faster when another process holds the other core)
    torch.set_num_threads(settings.threads)
    try:
        return _reconstruct(
            run_unit, weights, acts, inputs, target, settings, progress, float_inputs, rows
        )
    finally:
        torch.set_num_threads(prev_threads)


def _reconstruct(
    run_unit, weights, acts, inputs, target, settings: ReconSettings, progress, float_inputs, rows
) -> float:
    gen = torch.Generator().manual_seed(settings.seed)
    groups = [{"params": [w.v for w in weights.values()], "lr": settings.lr}]
    gains = [w.log_gain for w in weights.values() if w.log_gain is not None]
    if gains:
        groups.append({"params": gains, "lr": settings.scale_lr})
    if acts:
        groups.append({"params": [a.log_scale for a in acts.values()], "lr": settings.act_lr})
    opt = torch.optim.Adam(groups)
    pool = None if rows is None else torch.from_numpy(np.asarray(rows, np.int64))
    n = len(target) if pool is None else len(pool)
    tgt = _resident(target)
    xs = {k: _resident(v) for k, v in inputs.items()}
    xf = {k: _resident(v) for k, v in (float_inputs or {}).items()}
    warm = int(settings.warm_start * settings.iters)
    b0, b1 = settings.beta
    loss_rec = torch.tensor(0.0)
    for it in range(settings.iters):
        idx = torch.randint(0, n, (min(settings.batch_size, n),), generator=gen)
        if pool is not None:
            idx = pool[idx]
        feeds = {k: _rows(v, idx) for k, v in xs.items()}
        if xf:
            feeds = {k: _mix(v, _rows(xf[k], idx), gen) for k, v in feeds.items()}
        beta = None
        if it >= warm and settings.reg > 0:
            progress_share = (it - warm) / max(settings.iters - warm, 1)
            beta = b1 + 0.5 * (b0 - b1) * (1 + np.cos(progress_share * np.pi))  # 20 -> 2, cosine
        softs = {name: w.soft_and_reg(beta) for name, w in weights.items()}
        feeds.update({name: soft for name, (soft, _) in softs.items()})
        hooks = {t: (lambda x, q=q: q(x, settings.drop, gen)) for t, q in acts.items()}
        out = run_unit(feeds, hooks)
        loss_rec = _recon_loss(out, _rows(tgt, idx))
        loss = loss_rec
        if beta is not None:
            loss = loss + settings.reg * sum(reg for _, reg in softs.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None and (it % 50 == 0 or it == settings.iters - 1):
            progress(it, float(loss_rec.detach()))
    return float(loss_rec.detach())


def _resident(v):
    """A unit's tensor for the iterations: a small one as one torch tensor (channels last); one
    kept in a file (runtime.spill), or of RESIDENT_BYTES or more, as it is, each batch's rows
    gathered from it (_rows): no second, channels-last copy of a large tensor."""
    if isinstance(v, SpilledArray) or np.asarray(v).nbytes >= RESIDENT_BYTES:
        return v
    return _channels_last(torch.from_numpy(np.ascontiguousarray(v)))


def _rows(v, idx: torch.Tensor) -> torch.Tensor:
    """One batch's rows of a _resident tensor, in idx's order (a SpilledArray reads them from
    its file: SpilledArray.take)."""
    if torch.is_tensor(v):
        return v[idx]
    return _channels_last(torch.from_numpy(v[idx.numpy()]))


def _mix(quantized: torch.Tensor, float_: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each element the float model's with probability MIX_FLOAT, else the quantized model's."""
    take_float = torch.rand(quantized.shape, generator=gen) < MIX_FLOAT
    return _channels_last(torch.where(take_float, float_, quantized))


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """4-D feature maps in NHWC memory order (batch rows drawn from them keep it): oneDNN's
    convolution backward runs 1.3-4x faster on them than on NCHW (measured on EfficientNet's
    depthwise and 1x1 layers, batch 32), and that backward is ~90 % of AdaRound's time."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _recon_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels (axis 1), averaged over the rest (AdaRound's loss)."""
    d = (out - target) ** 2
    return d.sum(1).mean() if d.dim() > 1 else d.mean()
