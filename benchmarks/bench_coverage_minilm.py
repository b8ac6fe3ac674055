"""`--coverage gain` (the default) against `--coverage ort` and ORT's own W8A8 on a transformer.

The real all-MiniLM-L6-v2 SST-2 classifier of bench_sst2_classifier.py (built or reused in
--work), W8A8 three ways: `faaq quantize --scheme w8a8`, the same with `--coverage ort` (every
op ORT's quantizer puts on an integer kernel gets Q/DQ), and ORT's quant_pre_process +
quantize_static. Dev accuracy by `faaq eval` on the 872 tokenized dev sentences; latency
batch 1, one thread, spinning off, the models interleaved (bench_sst2_classifier.latency).

    python benchmarks/bench_coverage_minilm.py --data-dir ../shared/data --work /tmp/sst2work
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_sst2_classifier import build, faaq, latency, log, run_row
from common import data_dir, git_state, machine, ort_quantize_static, write

ROWS = [
    ("float", "float (fp32)", None),
    ("w8a8", "faaq W8A8, --coverage gain (default)", ["--scheme", "w8a8"]),
    ("w8a8_coverage_ort", "faaq W8A8, --coverage ort", ["--scheme", "w8a8", "--coverage", "ort"]),
]


def ort_row(work: Path, fp: Path, dev_npz: Path, calib_npz: Path) -> dict:
    """ORT's W8A8, evaluated by the same `faaq eval` as the faaq rows."""
    model = work / "sst2_ort_w8a8.onnx"
    calib = dict(np.load(calib_npz))
    row = {"key": "ort_w8a8", "plan": "ORT quant_pre_process + quantize_static W8A8"}
    row["quantize_s"] = round(ort_quantize_static(fp, model, calib), 1)
    ev_json = work / "sst2_ort_w8a8.eval.json"
    eargs = ["eval", str(fp), str(model), "--data", str(dev_npz), "--json", str(ev_json)]
    rc, _, row["eval_cmd"] = faaq(eargs, work / "sst2_ort_w8a8.eval.log")
    if rc != 0:
        row["error"] = (work / "sst2_ort_w8a8.eval.log").read_text()[-1500:]
        return row
    rep = json.loads(ev_json.read_text())["models"][str(model)]
    row.update(dev_acc=rep["top1"], samples=rep["samples"], model=str(model))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--work", default="/tmp/sst2work")
    ap.add_argument("--head-train", type=int, default=16000)
    ap.add_argument("--head-val", type=int, default=2000)
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-runs", type=int, default=300)
    args = ap.parse_args()
    work = Path(args.work)
    (work / "cache").mkdir(parents=True, exist_ok=True)
    info = build(args, data_dir(args.data_dir), work)
    fp, dev_npz, calib_npz = (
        work / "sst2_float.onnx",
        work / "sst2_dev.npz",
        work / "sst2_calib.npz",
    )
    rows = [run_row(k, label, opts, work, fp, dev_npz, calib_npz) for k, label, opts in ROWS]
    log("ORT W8A8")
    rows.append(ort_row(work, fp, dev_npz, calib_npz))
    lat = latency(rows, args.latency_runs, dev_npz)
    base = lat["median_ms"].get("w8a8")
    md = [
        "# `--coverage gain` vs `--coverage ort` vs ORT W8A8 on all-MiniLM-L6-v2 SST-2",
        "",
        f"`python benchmarks/bench_coverage_minilm.py --work {args.work}`; {machine()}; "
        f"{git_state()}; latency batch 1, 1 thread, {lat['runs']} interleaved runs, load "
        f"{lat['loadavg_before']} -> {lat['loadavg_after']}. Head: {info.get('head')}.",
        "",
        "| model | dev top-1 % | latency ms | / faaq default |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        ms = lat["median_ms"].get(r["key"])
        acc = f"{100 * r['dev_acc']:.2f}" if "dev_acc" in r else r.get("error", "-")[:80]
        ratio = f"{ms / base:.2f}" if ms and base else "-"
        md.append(f"| {r['plan']} | {acc} | {f'{ms:.3f}' if ms else '-'} | {ratio} |")
    write("coverage_minilm", {"rows": rows, "latency": lat, "info": info}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
