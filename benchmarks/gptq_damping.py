"""GPTQ's damping judged on images it was not fit to, layer by layer.

For every weight GPTQ rounds (uniform W<bits>A8, float-model layer inputs), the Hessian is summed
over the calibration file and, separately, over a held-out file; each layer is rounded at several
dampings (of the mean Hessian diagonal; faaq uses gptq.DAMP = 0.01) and its output error is
measured on the held-out Hessian, relative to round-to-nearest's. A layer with few input rows for
its width (a classifier over 256 pooled vectors) overfits the calibration images at the default
damping. Nothing in faaq_onnx is changed: the benchmark sets gptq.DAMP around each call.

    python benchmarks/gptq_damping.py MODEL.onnx CALIB.npz HELD.npz [--bits 4]
"""

from __future__ import annotations

import argparse

import numpy as np

from faaq_onnx.config import QuantConfig
from faaq_onnx.optimize import gptq as G
from faaq_onnx.optimize import gptq_layers as GL
from faaq_onnx.optimize import rounding as R
from faaq_onnx.pipeline import Compilation

DAMPS = (0.01, 0.03, 0.1, 0.3, 1.0)


def summed(model: str, calib: str, bits: int):
    """(compilation, weight bits, jobs with each weight's Hessian summed over `calib`)."""
    scheme = f"w{bits}a8"
    comp = Compilation(model, calib, QuantConfig(scheme=scheme, progress=False), target_opset=21)
    wbits = comp.uniform(scheme).weight_bits(comp.qgraph)
    units = R._rounded_units(comp, "gptq", wbits)
    jobs = [GL._job(comp, u, wbits) for u in units]
    data = R._unit_data(comp, units, 10**9)
    for wave in GL._waves(jobs):
        GL._sum_from_float(wave, data)
    return comp, wbits, jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("held")
    ap.add_argument("--bits", type=int, default=4)
    args = ap.parse_args()
    comp, wbits, fit_jobs = summed(args.model, args.calib, args.bits)
    _, _, held_jobs = summed(args.model, args.held, args.bits)
    ratios = {d: [] for d in DAMPS}
    print(
        "weight | K | groups | rows | held-out error / nearest's at damping "
        + " ".join(map(str, DAMPS))
    )
    for a, b in zip(fit_jobs, held_jobs):
        for fit, held in zip(a.weights, b.weights):
            w = np.asarray(comp.weights.float_weight(fit.name), np.float64)
            rtn = comp.weights.get(fit.name, wbits[fit.name])
            nearest = held.hessian.output_error(rtn.dequantized() - w)
            row = {}
            for d in DAMPS:
                G.DAMP = d
                q = G.gptq_weight(
                    fit.form, w, fit.hessian.h, rtn.grid, True, comp.config.weight_range
                )
                row[d] = held.hessian.output_error(q.dequantized() - w) / max(nearest, 1e-30)
                ratios[d].append(row[d])
            g, k, _ = fit.form.gkn
            print(
                f"{fit.name} | {k} | {g} | {fit.hessian.rows} | "
                + " ".join(f"{row[d]:.3f}" for d in DAMPS),
                flush=True,
            )
    G.DAMP = 0.01
    print("mean over layers: " + " ".join(f"{d}: {np.mean(v):.4f}" for d, v in ratios.items()))


if __name__ == "__main__":
    main()
