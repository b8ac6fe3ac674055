"""Does faaq measure what it ships? The probe against the emitted model, on other exporters' files.

Every figure faaq reports before it writes a model (the sensitivity sweep, a plan's output SQNR,
the bias-correction check's probe variants, `analyze`'s curves) is measured on the probe: the
float model with fake quantization in it, run by ORT. The model it ships is a QDQ file that ORT
runs on integer kernels. For each model of the foreign corpus (benchmarks/foreign_corpus.py)
and each scheme, on the calibration samples, rounded to nearest (`--optimize none`):

- probe vs emitted, float: the probe's outputs against the emitted model's with every ORT
  optimization off (QDQ computed in float). Where these disagree, the probe computes another
  model than the one written (the int32 biases did, before e0bed3b).
- kernels vs float QDQ: the emitted model as ORT runs it (integer kernels) against the same
  model with optimizations off: what ORT's requantization does beyond the QDQ graph's math.
- output SQNR to float, probe vs shipped: what the report would say against what the shipped
  model does.

    python benchmarks/bench_probe_agreement.py --data-dir ../shared/data [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foreign_corpus as corpus
from bench_foreign_graphs import stack
from common import meta_stamp, previous, run_meta, write


def pooled_sqnr(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """10 log10(signal / error) over every output element of every sample (inf: identical)."""
    r = np.concatenate([np.asarray(o, np.float64).ravel() for o in ref])
    g = np.concatenate([np.asarray(o, np.float64).ravel() for o in got])
    err = float(np.sum((r - g) ** 2))
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(r**2) / err))


def measure(entry, scheme: str, n_calib: int) -> dict:
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import Compilation
    from faaq_onnx.runtime.kernels import kernel_report
    from faaq_onnx.runtime.runner import run_all
    from faaq_onnx.runtime.session import make_session

    calib = stack(entry.feeds("calib", n_calib))
    cfg = QuantConfig(progress=False, scheme=scheme, optimize="none")
    t0 = time.perf_counter()
    comp = Compilation(str(entry.path), calib, cfg, target_opset=21)
    plan = comp.uniform(scheme)
    model, summary = comp.build(plan)
    inputs = comp.prober.session.inputs
    reference = comp.prober.reference
    probed = comp.prober.outputs(plan.choices)

    def emitted(level: str) -> list[np.ndarray]:
        session = make_session(model, opt_level=level)
        return run_all(session, inputs, 16, [o.name for o in session.get_outputs()])

    qdq, shipped = emitted("disable"), emitted("all")
    weighted = kernel_report(model)["weighted_ops"]
    return {
        "scheme": scheme,
        "samples": len(next(iter(inputs.values()))),
        "int32_biases": len(summary.int32_biases),
        "weighted_integer": f"{weighted['integer']}/{weighted['total']}",
        "probe_vs_emitted_float_db": pooled_sqnr(qdq, probed),
        "kernels_vs_float_qdq_db": pooled_sqnr(qdq, shipped),
        "probe_to_float_db": pooled_sqnr(reference, probed),
        "shipped_to_float_db": pooled_sqnr(reference, shipped),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _db(x: float) -> str:
    return "identical" if x == float("inf") else f"{x:.1f}"


def _commits(rows: list[dict]) -> str:
    """Which rows each commit measured (a partial rerun keeps the other rows)."""
    by: dict[str, list[str]] = {}
    for r in rows:
        models = by.setdefault(r.get("at") or "?", [])
        if r["model"] not in models:
            models.append(r["model"])
    return "; ".join(f"{c} ({', '.join(m)})" for c, m in by.items())


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Probe against the emitted model, on other exporters' files",
        "",
        f"{meta_stamp(meta)} `python benchmarks/bench_probe_agreement.py --data-dir "
        f"../shared/data`. Rows measured at: {_commits(rows)}. Calibration samples of the "
        "foreign corpus (32 by default), rounded to nearest (`--optimize none`). Pooled SQNR in "
        "dB over every output element (higher: closer). *probe vs emitted*: the probe's outputs "
        "against the emitted QDQ model run with every ORT optimization off; *kernels vs float "
        "QDQ*: the emitted model as ORT runs it (integer kernels) against the same model with "
        "optimizations off; *difference*: probe minus shipped, in dB to float.",
        "",
        "| model | scheme | weighted ops on integer kernels | int32 biases "
        "| probe vs emitted (float QDQ) | kernels vs float QDQ "
        "| to float: probe | to float: shipped | difference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('scheme', '')} | {r['error']} | | | | | | |")
            continue
        diff = r["probe_to_float_db"] - r["shipped_to_float_db"]
        lines.append(
            f"| {r['model']} | {r['scheme']} | {r['weighted_integer']} | {r['int32_biases']} | "
            f"{_db(r['probe_vs_emitted_float_db'])} | {_db(r['kernels_vs_float_qdq_db'])} | "
            f"{_db(r['probe_to_float_db'])} | {_db(r['shipped_to_float_db'])} | {diff:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--models", default=None, help=f"from: {', '.join(corpus.BUILDERS)}")
    ap.add_argument("--schemes", default="w8a8,w4a8")
    ap.add_argument("--calib", type=int, default=32, help="calibration samples per model")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else list(corpus.BUILDERS)
    rows: list[dict] = []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                entry = corpus.build(name, Path(tmp), args.data_dir)
            except corpus.Skip as s:
                rows.append({"model": name, "error": f"skipped: {s}"})
                continue
            for scheme in args.schemes.split(","):
                try:
                    row = {"model": name, **measure(entry, scheme, args.calib)}
                except Exception as exc:  # a model faaq refuses is a row, not the end of the run
                    row = {"model": name, "scheme": scheme, "error": str(exc).splitlines()[0]}
                print(json.dumps(row), flush=True)
                rows.append(row)
                loads.append(os.getloadavg()[0])
    meta = run_meta(loads)
    for r in rows:
        r.setdefault("at", meta.get("head", ""))
    if args.models:  # a partial run replaces its models' rows and keeps the others
        kept = [r for r in previous("probe_agreement").get("rows", []) if r["model"] not in names]
        order = {m: i for i, m in enumerate(corpus.BUILDERS)}
        rows = sorted(kept + rows, key=lambda r: order.get(r["model"], len(order)))
        meta["partial"] = names
    write("probe_agreement", {"meta": meta, "rows": rows}, markdown(rows, meta))


if __name__ == "__main__":
    main()
