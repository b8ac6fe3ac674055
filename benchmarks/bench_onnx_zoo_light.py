"""`faaq quantize` W8A8 with random calibration on every model the onnx package ships
under onnx/backend/test/data/light/, then a plain ORT session on the result.

These "light" models carry placeholder weights (ConstantOfShape) and some parameters
as graph inputs, so the output SQNR says nothing about accuracy; the point is that
canonicalization, discovery, calibration, emission and ORT loading all complete.

    python benchmarks/bench_onnx_zoo_light.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from common import machine, write


def main() -> None:
    light = Path(onnx.__file__).parent / "backend/test/data/light"
    work = Path(tempfile.mkdtemp(prefix="faaq-light-"))
    rows = []
    for model in sorted(light.glob("light_*.onnx")):
        out = work / (model.stem + ".q.onnx")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "faaq_onnx",
                "quantize",
                str(model),
                "-o",
                str(out),
                "--calib",
                "random:8",
                "-q",
            ],
            capture_output=True,
            text=True,
        )
        dt = time.perf_counter() - t0
        runs = False
        if proc.returncode == 0:
            import numpy as np
            import onnxruntime as ort

            sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            feeds = {}
            for i in sess.get_inputs():
                shape = [d if isinstance(d, int) else 1 for d in i.shape]
                feeds[i.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            runs = all(np.isfinite(o).all() for o in sess.run(None, feeds))
        summary = (
            proc.stdout.strip().splitlines()[0]
            if proc.returncode == 0
            else proc.stderr.strip().splitlines()[-1]
        )
        rows.append(
            {
                "model": model.stem.replace("light_", ""),
                "exit": proc.returncode,
                "seconds": round(dt, 1),
                "runs_in_ort": runs,
                "summary": summary,
                "float_bytes": model.stat().st_size,
                "quant_bytes": out.stat().st_size if out.exists() else None,
            }
        )
        print(rows[-1], flush=True)
    md = ["| model | faaq exit | ORT runs result | time (s) | summary |", "|---|---|---|---|---|"]
    md += [
        f"| {r['model']} | {r['exit']} | {'yes' if r['runs_in_ort'] else 'no'} | {r['seconds']} | {r['summary']} |"
        for r in rows
    ]
    write("onnx_zoo_light", {"machine": machine(), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
