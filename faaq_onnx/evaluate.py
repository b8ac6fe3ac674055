"""Accuracy on labeled data: top-1/top-5, per class and the worst class (seed 004).

The worst-class drop is what a reliability-minded user looks at: an average can
hide one class that quantization broke.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faaq_onnx.analysis.metrics import output_kl
from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime.runner import run_all
from faaq_onnx.runtime.session import make_session


def predict(model, x: np.ndarray | dict, batch_size: int = 64, ep: str = "cpu") -> np.ndarray:
    """Logits of the model's first output for every sample (x: one array, or arrays by input name)."""
    sess = make_session(model, ep=ep)
    inputs = sess.get_inputs()
    if isinstance(x, dict):  # named inputs (a text classifier's token ids and mask)
        from faaq_onnx.data.labeled_inputs import named_feeds

        feeds = named_feeds(inputs, x)
        return run_all(sess, feeds, batch_size, [sess.get_outputs()[0].name])[0]
    if len(inputs) != 1:
        raise FaaqError(f"evaluation needs a single-input model; this one has {len(inputs)} inputs")
    want = inputs[0].shape
    if len(want) != x.ndim or any(
        isinstance(d, int) and d != a for d, a in zip(want[1:], x.shape[1:])
    ):
        raise FaaqError(
            f"data shape {tuple(x.shape)} does not fit model input {inputs[0].name!r} {want}"
        )
    return run_all(
        sess, {inputs[0].name: x.astype(np.float32)}, batch_size, [sess.get_outputs()[0].name]
    )[0]


def top1(model, x: np.ndarray, y: np.ndarray, batch_size: int = 64, ep: str = "cpu") -> float:
    """Fraction of samples whose argmax is the label (plain ORT)."""
    logits = predict(model, x, batch_size, ep)
    return float(np.mean(logits.reshape(len(y), -1).argmax(1) == y))


def accuracy_report(
    logits: np.ndarray, y: np.ndarray, class_names: list[str] | None = None
) -> dict:
    if len(logits) != len(y):
        raise FaaqError(f"{len(logits)} predictions for {len(y)} labels")
    logits = logits.reshape(len(logits), -1)
    top1 = logits.argmax(1)
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1)[:, :k]
    report: dict[str, Any] = {
        "samples": int(len(y)),
        "top1": float(np.mean(top1 == y)),
        "top5": float(np.mean((topk == y[:, None]).any(1))),
    }
    classes = np.unique(y)
    per_class = {}
    for c in classes:
        sel = y == c
        name = class_names[c] if class_names and c < len(class_names) else str(int(c))
        per_class[name] = {"samples": int(sel.sum()), "top1": float(np.mean(top1[sel] == c))}
    report["per_class"] = per_class
    worst = min(per_class.items(), key=lambda kv: kv[1]["top1"])
    report["worst_class"] = {"class": worst[0], "top1": worst[1]["top1"]}
    return report


def evaluate(
    model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 64,
    ep: str = "cpu",
    class_names: list[str] | None = None,
) -> dict:
    return accuracy_report(predict(model, x, batch_size, ep), y, class_names)


def fidelity(logits: np.ndarray, reference: np.ndarray, y: np.ndarray | None = None) -> dict:
    """How close a quantized model's outputs stay to its float reference's, sample by sample.

    Top-1 on a thousand images moves by a few images from one calibration draw to the
    next, and a good low-bit model sits at the float model's own accuracy, so its drop
    says little; these say more: the share of samples where both predict the same class,
    the mean KL(reference || candidate) of the softmax outputs (nats, the sensitivity
    metric's output_kl), the logit SQNR (dB: total signal over total error power, not
    metrics.sqnr_db's mean of per-sample ratios; None when the logits are identical) and,
    with labels, the churn behind the net top-1 change: samples the candidate gets right
    that the reference got wrong (`fixed`) and the reverse (`broken`).
    """
    z = np.asarray(logits, np.float64).reshape(len(logits), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if z.shape != r.shape:
        raise FaaqError(
            f"outputs of shape {z.shape} cannot be compared with the reference's {r.shape}"
        )
    err = float(np.sum((z - r) ** 2))
    out = {
        "agreement": float(np.mean(z.argmax(1) == r.argmax(1))),
        "kl": output_kl(r, z),
        "logit_sqnr_db": float(10 * np.log10(np.sum(r**2) / err)) if err > 0 else None,
    }
    if y is not None:
        right, ref_right = z.argmax(1) == y, r.argmax(1) == y
        out["fixed"] = int(np.sum(right & ~ref_right))
        out["broken"] = int(np.sum(~right & ref_right))
    return out


def compare(reference: dict, candidate: dict) -> dict:
    """Drops of a quantized model against its float reference, overall and per class."""
    drops = {
        c: reference["per_class"][c]["top1"] - v["top1"]
        for c, v in candidate["per_class"].items()
        if c in reference["per_class"]
    }
    worst = max(drops.items(), key=lambda kv: kv[1]) if drops else (None, 0.0)
    return {
        "top1_drop": reference["top1"] - candidate["top1"],
        "top5_drop": reference["top5"] - candidate["top5"],
        "worst_class_drop": {"class": worst[0], "drop": worst[1]},
        "per_class_drop": drops,
    }
