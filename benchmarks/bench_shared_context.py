"""GPTQ's weights at several widths from one pass's Hessians against a pass per width.

Part 1, each width alone: uniform W{b}A8 models of the same network, their GPTQ weights rounded
either in their own uniform model's pass or from the Hessians of the W4A8 pass
(plan_rounding.shared_contexts). No bias correction in either, so only the Hessians' context
differs. Part 2, what a user runs: `faaq quantize --budget avg-bits=4` (candidates weights-a8,
W2..W6 and W8) at this commit and, with --baseline DIR (a faaq_onnx tree from before one pass
was shared, e.g. `git archive 226d4ae faaq_onnx | tar -x -C DIR`), at that tree; wall time,
top-1 and KL to float on the held-out images.

    python benchmarks/bench_shared_context.py --data-dir ../shared/data [--work DIR]
        [--baseline DIR] [--models efficientnet-lite0,resnet56]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_seed003_tables import prepare
from common import data_dir, md_table, meta_stamp, run_meta, scores, write

WIDTHS = (2, 3, 6)


def own_vs_shared(d: dict, work: Path) -> list[Path]:
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import Compilation
    from faaq_onnx.results import write_result

    out = []
    for mode in ("shared", "own"):
        cfg = QuantConfig(optimize="gptq", progress=False)  # 256 seeded samples, as the CLI
        comp = Compilation(d["float"], str(d["calib"]), cfg, target_opset=21)
        if mode == "shared":
            comp.optimize_rounding([comp.uniform(f"w{b}a8") for b in (4, *WIDTHS)], 4)
        for b in WIDTHS:
            if mode == "own":
                comp.optimize_rounding([comp.uniform(f"w{b}a8")])
            path = work / f"{d['prefix']}_{mode}_w{b}a8.onnx"
            write_result(comp.emit(comp.uniform(f"w{b}a8")), path)
            out.append(path)
    return out


def budget_run(d: dict, work: Path, tag: str, code: Path | None) -> tuple[Path, float]:
    path = work / f"{d['prefix']}_avgbits4_{tag}.onnx"
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    cmd = [sys.executable, "-m", "faaq_onnx", "quantize", str(d["float"]), "-o", str(path)]
    cmd += ["--calib", str(d["calib"]), *d["extra"], "--budget", "avg-bits=4", "--no-cache", "-q"]
    t0 = time.perf_counter()
    # run from the work folder: `python -m` puts the current folder first on sys.path, and a
    # faaq_onnx there would be imported instead of the tree asked for
    subprocess.run(
        cmd, check=True, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return path, time.perf_counter() - t0


def _cells(r: dict) -> list[str]:
    wall = f"{r['wall_s']:.0f}" if r["wall_s"] else "–"
    figures = (f"{r['top1']:.2f}", f"{r['agreement']:.2f}", f"{r['kl']:.4f}", wall)
    return [r["model"], r["file"], *figures]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--work")
    ap.add_argument("--baseline", type=Path)
    ap.add_argument("--models", default="efficientnet-lite0,resnet56")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-ctx-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, loads = [], [os.getloadavg()[0]]
    for model in args.models.split(","):
        d = prepare(model, ddir, work)
        paths = own_vs_shared(d, work)
        walls = {}
        for tag, code in (("shared", None), ("baseline", args.baseline)):
            if tag == "baseline" and code is None:
                continue
            p, walls[p.name] = budget_run(d, work, tag, code)
            paths.append(p)
            loads.append(os.getloadavg()[0])
        got = scores(d["float"], paths, d["eval"], work)
        for p in paths:
            rows.append(
                {"model": model, "file": p.name, **got[p.name], "wall_s": walls.get(p.name)}
            )
    meta = run_meta(loads)
    lines = [
        "GPTQ from one pass's Hessians (W4A8 context) against a pass per width. "
        f"{meta_stamp(meta)} "
        "`python benchmarks/bench_shared_context.py --data-dir ../shared/data"
        + (" --baseline DIR` (DIR: the tree before 398fe9c)" if args.baseline else "`"),
        "",
        *md_table(
            ["model", "model file", "top-1 %", "agreement %", "KL to float", "wall s"],
            [_cells(r) for r in rows],
        ),
    ]
    write("shared_context", {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
