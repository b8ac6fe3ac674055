"""How far a quantized output is from the float one: the numbers sensitivity, allocation
and verification all report."""

from __future__ import annotations

import numpy as np


def sqnr_ratios(reference, approx) -> np.ndarray:
    """Per-sample signal-to-noise power ratios (linear), the terms of seed 003 eq. 3."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    err = ref - np.asarray(approx, np.float64).reshape(len(reference), -1)
    return np.mean(ref**2, axis=1) / np.maximum(np.mean(err**2, axis=1), 1e-30)


def ratio_db(mean_ratio: float) -> float:
    return float(10 * np.log10(max(mean_ratio, 1e-30)))


def sqnr_db(reference, approx) -> float:
    """Signal to quantization noise ratio, mean over samples (seed 003 eq. 3)."""
    return ratio_db(float(np.mean(sqnr_ratios(reference, approx))))


def output_kl(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(got)) over samples: the shift of the output
    distribution away from the float model's (the float model is the reference P)."""
    return float(np.mean(kl_per_sample(ref, got)))


def kl_per_sample(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(got)) of each sample (axis 0)."""
    r = ref.reshape(len(ref), -1).astype(np.float64)
    q = got.reshape(len(got), -1).astype(np.float64)
    lr = r - r.max(1, keepdims=True)
    lq = q - q.max(1, keepdims=True)
    lr -= np.log(np.exp(lr).sum(1, keepdims=True))
    lq -= np.log(np.exp(lq).sum(1, keepdims=True))
    return np.sum(np.exp(lr) * (lr - lq), axis=1)


def output_errors(reference: list, outs: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample SQNR power ratios over all outputs and KL of the first output: what a
    configuration's SQNR and KL are means of, so chunks of samples merge by concatenation."""
    ref_all = np.concatenate([r.reshape(len(r), -1) for r in reference], axis=1)
    got_all = np.concatenate([o.reshape(len(o), -1) for o in outs], axis=1)
    return sqnr_ratios(ref_all, got_all), kl_per_sample(reference[0], outs[0])


def output_metrics(ratios: np.ndarray, kls: np.ndarray) -> dict[str, float]:
    """SQNR (seed 003 eq. 3: the mean of per-sample power ratios) and mean output KL."""
    return {"sqnr_db": ratio_db(float(np.mean(ratios))), "kl": float(np.mean(kls))}


def _pair_signs(a: np.ndarray, b: np.ndarray):
    """The order of every pair i < j under each scoring (-1, 0, +1), and the pairs' indices."""
    upper = np.triu_indices(len(a), 1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    return da, db, upper


def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two scorings of the same items (ties allowed): +1 same order,
    -1 reversed, nan when either scoring is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    da, db, _ = _pair_signs(a, b)
    denom = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float(np.sum(da * db) / denom) if denom else float("nan")


def weighted_kendall_tau(a, b) -> float:
    """Kendall's tau with each pair weighted by 1/(r_i + 1) + 1/(r_j + 1), r an item's rank from
    the highest score down (Vigna's hyperbolic weighted tau), averaged over ranking by `a` and
    by `b`: disagreements among the top items count most, those far down the list hardly at
    all. nan when either scoring is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    da, db, upper = _pair_signs(a, b)
    taus = []
    for by in (a, b):
        rank = np.empty(len(by))
        rank[np.argsort(-by, kind="stable")] = np.arange(len(by))
        w = 1.0 / (rank + 1.0)
        pair = (w[:, None] + w[None, :])[upper]
        denom = np.sqrt(np.sum(pair * da * da) * np.sum(pair * db * db))
        taus.append(np.sum(pair * da * db) / denom if denom else np.nan)
    return float(np.mean(taus))
