"""Shared by the latency benchmarks: quantize with faaq or ORT, compare outputs, time models."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from common import ort_quantize_static as common_ort_quantize_static


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def faaq_quantize(
    src: Path,
    dst: Path,
    calib,
    scheme: str = "w8a8",
    budget: str | None = None,
    candidates: str | None = None,
    **cfg,
) -> dict:
    from collections import Counter

    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import quantize

    t0 = time.perf_counter()
    res = quantize(
        str(src),
        calib,
        str(dst),
        QuantConfig(scheme=scheme, progress=False, **cfg),
        budget=budget,
        candidates=candidates,
    )
    out = {
        "seconds": round(time.perf_counter() - t0, 1),
        "verify": res.report.get("verify"),
        "avg_weight_bits": res.report.get("avg_weight_bits"),
    }
    if budget:
        out["plan"] = dict(Counter(str(c) for c in res.plan.choices.values()))
    return out


def ort_quantize_static(src: Path, dst: Path, calib: dict[str, np.ndarray]) -> dict:
    return {"seconds": round(common_ort_quantize_static(src, dst, calib), 1)}


def sqnr_db(ref_path: Path, path: Path, x: dict[str, np.ndarray]) -> float:
    from faaq_onnx.runtime.session import make_session

    ref = make_session(str(ref_path)).run(None, x)[0].astype(np.float64)
    out = make_session(str(path)).run(None, x)[0].astype(np.float64)
    return round(float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-30))), 2)


def measure(variants: dict[str, Path], args, per_op=False) -> list[dict]:
    from faaq_onnx.runtime.profile import profile_models

    names = list(variants)
    rep = profile_models(
        [variants[n] for n in names],
        eps=["cpu"],
        batches=args.batches,
        warmup=args.warmup,
        runs=args.runs,
        threads=args.threads,
        per_op=per_op,
        isolate=True,
    )
    by_path = {str(variants[n]): n for n in names}
    for r in rep["results"]:
        r["variant"] = by_path[r["model"]]
    return rep["results"]


def quantize_variant(info: dict, variants: dict, stem: str, label: str, dst: Path, fn) -> bool:
    """Run one quantizer `fn(dst)`: its report goes to info["quantize"][label] and dst joins
    `variants`; a failure is recorded as a result (its error), not raised."""
    log(f"{stem}: {label}")
    try:
        info["quantize"][label] = fn(dst)
    except Exception as exc:  # a failed variant is a result, not a crash
        info["quantize"][label] = {
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        }
        log(f"{stem}: {label} FAILED: {info['quantize'][label]['error']}")
        return False
    variants[label] = dst
    return True
