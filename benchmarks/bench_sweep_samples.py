"""How many samples the sensitivity sweep needs: Kendall tau between every configuration's SQNR
from the first N calibration samples and from all of them, with each sweep's time and its own
split-half tau (what `faaq quantize` reports).

    python benchmarks/bench_sweep_samples.py MODEL.onnx CALIB.npz [CALIB_SIZE]

Measured 2026-12-04 (docs/techniques/sensitivity.md): EfficientNet-Lite0 (real weights, the
256 val1300 calibration images of bench_gptq_conv.py) and ResNet-20 (cifar10_train5000.npz,
--calib-size 256).
"""

from __future__ import annotations

import sys
import time

from faaq_onnx.analysis.metrics import kendall_tau
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation

CANDIDATES = "w2a8,w4a8,w8a8"


def main() -> None:
    model, calib = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    tables, meta = {}, {}
    for n in (size, 64, 32, 16, 8):
        cfg = QuantConfig(progress=False, calib_size=size, sensitivity_samples=n)
        comp = Compilation(model, calib, cfg, target_opset=21)
        t0 = time.perf_counter()
        t = comp.sensitivity(CANDIDATES, ("sqnr",), cache_dir=False)
        meta[n] = (round(time.perf_counter() - t0, 1), t.meta.get("ranking_tau_halves"))
        tables[n] = {(g, c): v["sqnr_db"] for g, row in t.table.items() for c, v in row.items()}
    keys = sorted(tables[size])
    for n in (64, 32, 16, 8):
        tau = kendall_tau([tables[size][k] for k in keys], [tables[n][k] for k in keys])
        print(
            f"n={n}: tau vs {size} = {tau:.3f}; sweep {meta[n][0]} s; split-half tau {meta[n][1]}"
        )
    print(f"n={size}: sweep {meta[size][0]} s; split-half tau {meta[size][1]}")


if __name__ == "__main__":
    main()
