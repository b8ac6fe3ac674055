"""The sensitivity sweep from each group's cut (analysis/suffix_sweep.py) against running the
whole probe per configuration, on one Compilation: wall seconds of each and the largest SQNR
difference between them.

    python benchmarks/bench_suffix_sweep.py MODEL.onnx CALIB.npz [SAMPLES] [CANDIDATES]

Measured 2026-12-04 on ResNet-18 (faaq's zoo export, random weights; 64 samples, w4a8,w8a8,
40 configurations): 77 s vs 237 s, same SQNR to 1e-4 dB, load 3.4.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from faaq_onnx.analysis.candidates import group_candidates, parse_candidates
from faaq_onnx.analysis.suffix_sweep import SuffixSweep
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation


def main() -> None:
    model, calib = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    cands = parse_candidates(sys.argv[4] if len(sys.argv) > 4 else "w4a8,w8a8")
    data = np.load(calib)
    x = {k: data[k][:n] for k in data.files}
    comp = Compilation(model, x, QuantConfig(progress=False), target_opset=21)
    jobs = [(g, c) for g in comp.qgraph.groups.values() for c in group_candidates(g, cands)]
    prober = comp.prober
    t0 = time.perf_counter()
    got = SuffixSweep(prober, comp.float_proto).measure(jobs)
    suffix_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    whole = {(g.name, str(c)): prober.measure({g.name: c}) for g, c in jobs}
    whole_s = time.perf_counter() - t0
    diff = max(abs(got[k]["sqnr_db"] - whole[k]["sqnr_db"]) for k in whole)
    print(
        f"{len(jobs)} configurations on {n} samples: cut {suffix_s:.1f} s, whole probe "
        f"{whole_s:.1f} s ({whole_s / suffix_s:.2f}x); largest SQNR difference {diff:.2g} dB"
    )


if __name__ == "__main__":
    main()
