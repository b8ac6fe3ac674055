"""A budget on graphs other exporters wrote: does `faaq quantize --budget` complete, and how close
to float is what it ships, beside uniform W4A8 on the same graph.

The corpus is bench_foreign_graphs.py's (benchmarks/foreign_corpus.py: PaddleOCR det/rec/cls,
silero-vad, EfficientNet-Lite0 through both torch exporters, small nets at several opsets).
Per model, each command in a subprocess on 64 calibration samples (`--no-cache`, all else
default):

- `--scheme w4a8`
- `--budget avg-bits=4.5` (default candidates: W2..W8 weights at 8-bit activations), which
  re-rounds the allocated plan (the default since 630c425)
- `--budget avg-bits=4.5 --no-reround` (the candidates' weights stitched)

and the written model's SQNR against the float model on 16 held-out samples, per output (the
first is shown; a Softmax output is compared as it is, probabilities, not logits). A failed
command is a row with its error line: the benchmark's first question is whether it runs.

    python benchmarks/bench_foreign_budget.py --data-dir ../shared/data --work /tmp/fbudget
    python benchmarks/bench_foreign_budget.py --data-dir ../shared/data --models paddle-rec,effnet-lite0-ts13

Writes benchmarks/out/foreign_budget.{json,md} (--out names another).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foreign_corpus as corpus
from bench_foreign_graphs import run_all, sqnr, stack
from common import md_table, meta_stamp, run_meta, write

VARIANTS = {
    "w4a8": ["--scheme", "w4a8"],
    "budget": ["--budget", "avg-bits=4.5"],
    "budget --no-reround": ["--budget", "avg-bits=4.5", "--no-reround"],
}


def quantize(src: Path, dst: Path, calib: Path, args: list[str], timeout: int) -> dict:
    js = dst.with_suffix(".report.json")
    cmd = [sys.executable, "-P", "-m", "faaq_onnx", "quantize", str(src), "-o", str(dst)]
    cmd += ["--calib", str(calib), "--no-cache", "-q", "--json", str(js), *args]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=dst.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    row: dict = {"seconds": round(time.perf_counter() - t0, 1), "rc": p.returncode}
    if p.returncode != 0 or not dst.exists():
        lines = [ln.strip() for ln in (p.stderr or p.stdout or "").splitlines() if ln.strip()]
        row["error"] = (lines[-1] if lines else f"rc {p.returncode}")[:300]
        return row
    rep = json.loads(js.read_text())
    row["avg_bits"] = rep.get("avg_weight_bits")
    row["plan"] = dict(Counter((rep.get("plan") or {}).get("choices", {}).values()))
    return row


def run_model(name: str, work: Path, ddir: Path, timeout: int) -> dict:
    try:
        e = corpus.build(name, work, ddir)
    except corpus.Skip as s:
        return {"model": name, "skipped": str(s)}
    calib = work / f"{name}.calib.npz"
    np.savez(calib, **stack(e.feeds("calib", 64)))
    held = e.feeds("eval", 16)
    ref = run_all(e.path, held)
    row: dict = {"model": name, "variants": {}}
    for label, args in VARIANTS.items():
        dst = work / f"{name}.{label.replace(' ', '').replace('-', '')}.onnx"
        got = quantize(e.path, dst, calib, args, timeout)
        if "error" not in got:
            got["sqnr_db"] = sqnr(ref, run_all(dst, held))
        row["variants"][label] = got
        print(name, label, json.dumps(got), flush=True)
    return row


def _cell(v: dict) -> str:
    if "error" in v:
        return f"FAILED: {v['error'][:120]}"
    first = v["sqnr_db"][0]
    return f"{first} dB, {v['avg_bits']:.2f} bits, {v['seconds']} s"


def _mix(v: dict) -> str:
    """The budget's plan: groups per candidate, widest first."""
    plan = v.get("plan") or {}
    return ", ".join(f"{c} {n}" for c, n in sorted(plan.items(), reverse=True)) or "-"


def markdown(rows: list[dict], meta: dict, command: str) -> str:
    body = [
        [r["model"], *(_cell(r["variants"][k]) for k in VARIANTS), _mix(r["variants"]["budget"])]
        for r in rows
        if "variants" in r
    ]
    skipped = [f"- {r['model']}: {r['skipped']}" for r in rows if "skipped" in r]
    return "\n".join(
        [
            "# A budget on foreign graphs",
            "",
            f"`{command}` — {meta_stamp(meta)} Each cell: SQNR of the first output against "
            "float on 16 held-out samples, average stored weight bits, wall seconds of the "
            "command (machine shared with other jobs: read the seconds as rough).",
            "",
            *md_table(["model", *VARIANTS, "budget's plan (groups)"], body),
            "",
            *skipped,
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--work", default="/tmp/fbudget")
    ap.add_argument("--models", default=",".join(corpus.BUILDERS))
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json")
    ap.add_argument("--out", default="foreign_budget", help="result name under benchmarks/out")
    args = ap.parse_args()
    if args.report_only:
        from common import OUT

        saved = json.loads((OUT / f"{args.out}.json").read_text())
        meta, command = saved["meta"], saved.get("command", "")
        write(args.out, saved, markdown(saved["rows"], meta, command))
        return
    from common import data_dir

    ddir, work = data_dir(args.data_dir), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    loads, rows = [os.getloadavg()[0]], []
    for name in args.models.split(","):
        rows.append(run_model(name, work, ddir, args.timeout))
        loads.append(os.getloadavg()[0])
    meta = run_meta(loads)
    command = "python benchmarks/bench_foreign_budget.py " + " ".join(sys.argv[1:])
    payload = {"meta": meta, "command": command, "rows": rows}
    write(args.out, payload, markdown(rows, meta, command))


if __name__ == "__main__":
    main()
