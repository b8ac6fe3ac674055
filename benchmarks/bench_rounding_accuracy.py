"""Issue 8 accuracy table: --optimize modes x bit widths on real CIFAR-10, with wall times.

Calibration: the seeded 256 images of cifar10_train5000.npz (the same ones the AIMET
script uses: faaq's loader, limit 256, seed 0); held-out verification samples come
from the rest of that pool. Evaluation: top-1 on cifar10_test.npz (10,000 JPEG) and
cifar10_test_lossless1017.npz. Results are cached in benchmarks/out/rounding_accuracy.json
as they come (a long run can be resumed; --fresh starts over).

    python benchmarks/bench_rounding_accuracy.py --data-dir ../shared/data
    python benchmarks/bench_rounding_accuracy.py --data-dir ../shared/data --part mixed
    python benchmarks/bench_rounding_accuracy.py --data-dir ../shared/data --part datafree
    python benchmarks/bench_rounding_accuracy.py --data-dir ../shared/data --part inputs
    python benchmarks/bench_rounding_accuracy.py --data-dir ../shared/data --part tune --models resnet20-cifar10
    python benchmarks/bench_rounding_accuracy.py --data-dir ../shared/data --part ranges --models resnet56-cifar10 \
        --iters 2000 --seed 1

`--seed N` picks calibration draw N (the AIMET script's CALIB_SEED=N draws the same images).
`--part ranges` rounds W4A8 weights once with AdaRound, then emits them with each activation
range setter, on ranges observed on the float model (faaq's way) and re-observed on the model
with the rounded weights (what AIMET's compute_encodings after apply_adaround does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from common import OUT, cifar_model, data_dir, machine, seed_key

from faaq_onnx.config import OPTIMIZE_INPUTS, QuantConfig
from faaq_onnx.data import load_labeled
from faaq_onnx.evaluate import evaluate
from faaq_onnx.pipeline import quantize

TEST_SETS = {
    "test": "cifar10/cifar10_test.npz",
    "lossless": "cifar10/cifar10_test_lossless1017.npz",
}
RESULTS = OUT / "rounding_accuracy.json"


SEED = 0  # --seed: rows of other calibration draws are keyed apart
KEEP: Path | None = None  # --keep-models: where each row's quantized model is kept


def run(key, results, fn):
    if not key.endswith("|float"):
        key = seed_key(key, SEED)
    if key in results:
        return results[key]
    t0 = time.perf_counter()
    row = fn()
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    if KEEP is not None and row.get("model"):  # e.g. resnet56-cifar10__w4a8__adaround__seed3.onnx
        KEEP.mkdir(parents=True, exist_ok=True)
        plain = key.split("|seed=")[0].replace("|", "__")
        shutil.copyfile(row["model"], KEEP / f"{plain}__seed{SEED}.onnx")
    row.pop("model", None)
    row["loadavg"] = round(os.getloadavg()[0], 2)
    results[key] = row
    OUT.mkdir(parents=True, exist_ok=True)
    # several parts may run at once (one per core): merge with what the others wrote meanwhile
    on_disk = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    on_disk.update({k: v for k, v in results.items() if k not in on_disk or k == key})
    tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(on_disk, indent=1))
    os.replace(tmp, RESULTS)
    print(key, row, flush=True)
    return row


def range_rows(fp, name, results, iters, pool, tests, work) -> None:
    """--part ranges: one AdaRound pass, emitted with every activation range setting."""
    import onnx_ir as ir

    from faaq_onnx.analysis.calibrate import calibrate
    from faaq_onnx.optimize.weights import quantize_weights
    from faaq_onnx.pipeline import Compilation

    methods = ("mse", "minmax")
    keys = {
        (m, r): f"{name}|w4a8|adaround-{iters}-it|act={m}" + ("+reobserved" if r else "")
        for r in (False, True)
        for m in methods
    }
    if all(seed_key(k, SEED) in results for k in keys.values()):
        return
    cfg = QuantConfig(
        calib_size=256,
        progress=False,
        seed=SEED,
        scheme="w4a8",
        optimize="adaround",
        optimize_iters=iters,
    )
    comp = Compilation(fp, pool, cfg, target_opset=21)
    plan = comp.uniform("w4a8")
    t0 = time.perf_counter()
    comp.optimize_rounding([plan])
    rounding_s = round(time.perf_counter() - t0, 1)

    def emit_row():
        res = comp.emit(plan, work / "q.onnx")
        return {
            **accuracy(work / "q.onnx", tests),
            "rounding_s": rounding_s,
            "model": work / "q.onnx",
            "sqnr_db": next(iter(res.report["verify"]["outputs"].values()))["sqnr_db"],
        }

    for reobserve in (False, True):
        if reobserve:  # ranges observed again on the model that runs the rounded weights
            weighted = ir.from_proto(comp.float_proto)
            for w, q in quantize_weights(comp.weights, plan).items():
                weighted.graph.initializers[w].const_value = ir.tensor(
                    q.dequantized().astype(np.float32), name=w
                )
            comp.calibration = calibrate(weighted, comp.qgraph, comp.inputs, cfg.batch_size)
        for method in methods:
            comp.config.act_range = method
            run(keys[(method, reobserve)], results, emit_row)


@contextmanager
def aimet_weight_grid():
    """AIMET's signed symmetric weight grid from 4 bits up, scale = max|w| / qmax on every
    channel, for the `+aimet-grid` comparison row only (not a faaq option). faaq's own grid
    takes the smallest scale that clips nothing: |min| / 8 where a channel's negative side is
    the larger, one finer step (quant.affine.affine_params)."""
    from faaq_onnx.quant import affine, weights

    faaq_params = weights.affine_params

    def params(lo, hi, fmt, symmetric):
        if symmetric and fmt.signed and fmt.bits > affine.FULL_SPREAD_BITS:
            amax = np.maximum(
                -np.minimum(np.asarray(lo, np.float64), 0),
                np.maximum(np.asarray(hi, np.float64), 0),
            )
            return faaq_params(
                amax * fmt.qmin / fmt.qmax, amax, fmt, symmetric
            )  # |lo| / 8 = max|w| / 7
        return faaq_params(lo, hi, fmt, symmetric)

    weights.affine_params = params
    try:
        yield
    finally:
        weights.affine_params = faaq_params


def accuracy(model, tests):
    return {k: evaluate(model, x, y)["top1"] for k, (x, y) in tests.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="resnet20-cifar10,resnet56-cifar10")
    ap.add_argument("--schemes", default="w4a8,w4a4,w3a8,w2a8")
    ap.add_argument("--modes", default="none,bias-correction,adaround,brecq")
    ap.add_argument(
        "--part",
        default="table",
        choices=["table", "mixed", "datafree", "inputs", "tune", "ranges"],
    )
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--brecq-iters", type=int, default=2000)
    ap.add_argument("--scheme", default="w4a8", help="--part inputs: the scheme compared")
    ap.add_argument("--qdrop", type=float, default=0.5)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="calibration draw (and rounding seed); rows of a seed other than 0 get a |seed=N key",
    )
    ap.add_argument(
        "--tunes", default=None, help="--part tune: which settings (comma-separated labels)"
    )
    ap.add_argument(
        "--keep-models",
        type=Path,
        default=None,
        help="copy each new row's quantized model here (for fidelity_vs_float.py)",
    )
    args = ap.parse_args()
    global SEED, KEEP
    SEED, KEEP = args.seed, args.keep_models
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-bench-"))
    results = {} if args.fresh or not RESULTS.exists() else json.loads(RESULTS.read_text())
    results.setdefault("_machine", machine())
    tests = {k: load_labeled(ddir / v) for k, v in TEST_SETS.items()}
    pool = str(ddir / "cifar10/cifar10_train5000.npz")

    def quant(fp, **kw):
        grid = aimet_weight_grid() if kw.pop("weight_grid", None) == "aimet" else nullcontext()
        cfg = QuantConfig(
            calib_size=256,
            progress=False,
            seed=args.seed,
            **{k: v for k, v in kw.items() if k not in ("budget", "calib")},
        )
        out = work / "q.onnx"
        calib = kw.pop("calib", pool) if "calib" in kw else pool
        with grid:
            res = quantize(
                fp,
                calib,
                out,
                cfg,
                budget=kw.get("budget"),
                candidates="w2a8,w4a8,w8a8" if kw.get("budget") else None,
                cache_dir=False,
            )
        row = accuracy(out, tests)
        row.update(
            model=out,
            sqnr_db=next(iter(res.report["verify"]["outputs"].values()))["sqnr_db"],
            timings=res.report["timings_s"],
            plan=res.report["plan"]["meta"].get("budget", kw.get("scheme")),
            stored_bits=res.report["verify"]["size"]["stored_weight_bits"],
            kernels=res.report["verify"]["kernels"]["summary"][0],
            widths=dict(Counter(str(c) for c in res.plan.choices.values())),
        )
        return row

    for name in args.models.split(","):
        fp = cifar_model(name, ddir, work, keep_batchnorm=args.part == "datafree")
        run(f"{name}|float", results, lambda fp=fp: accuracy(fp, tests))
        if args.part == "table":
            for scheme in args.schemes.split(","):
                for mode in args.modes.split(","):
                    iters = args.brecq_iters if mode == "brecq" else args.iters
                    kw = dict(
                        scheme=scheme,
                        optimize=mode,
                        optimize_iters=iters,
                        qdrop=args.qdrop if mode == "brecq" else 0.0,
                    )
                    run(f"{name}|{scheme}|{mode}", results, lambda fp=fp, kw=kw: quant(fp, **kw))
        elif args.part == "mixed":
            for mode in ("none", "adaround"):
                run(
                    f"{name}|w4a8|{mode}",
                    results,
                    lambda fp=fp, mode=mode: quant(
                        fp, scheme="w4a8", optimize=mode, optimize_iters=args.iters
                    ),
                )
                # "adaround": weights rounded per width in uniform models, stitched (before --reround);
                # "adaround+reround": the allocated plan rounded again in its own context (the default now)
                for reround in (False, True) if mode != "none" else (False,):
                    run(
                        f"{name}|avg-bits=4|{mode}" + ("+reround" if reround else ""),
                        results,
                        lambda fp=fp, mode=mode, r=reround: quant(
                            fp,
                            budget="avg-bits=4",
                            optimize=mode,
                            optimize_iters=args.iters,
                            reround=r,
                        ),
                    )
        elif args.part == "datafree":
            for scheme in ("w8a8", "w6a6"):
                run(
                    f"{name}|{scheme}|calibrated",
                    results,
                    lambda fp=fp, s=scheme: quant(fp, scheme=s),
                )
                run(
                    f"{name}|{scheme}|data-free",
                    results,
                    lambda fp=fp, s=scheme: quant(fp, scheme=s, calib="bn-stats:256"),
                )
                run(
                    f"{name}|{scheme}|data-free+cle+bc",
                    results,
                    lambda fp=fp, s=scheme: quant(
                        fp, scheme=s, calib="bn-stats:256", optimize="cle,bias-correction"
                    ),
                )
        elif args.part == "tune":  # settings tried to reach the targets, each its own row
            tunes = {
                "w4a4|brecq+first-last-w8a8": dict(
                    scheme="w4a4",
                    first_last="w8a8",
                    optimize="brecq",
                    optimize_iters=args.brecq_iters,
                    qdrop=args.qdrop,
                ),
                "w4a8|adaround-2x-iters": dict(
                    scheme="w4a8", optimize="adaround", optimize_iters=2 * args.iters
                ),
                "w4a8|adaround-4x-iters": dict(
                    scheme="w4a8", optimize="adaround", optimize_iters=4 * args.iters
                ),
                "w4a8|adaround-2x-iters+scales": dict(
                    scheme="w4a8",
                    optimize="adaround",
                    optimize_iters=2 * args.iters,
                    optimize_scales=True,
                ),
                **{
                    f"{s}|adaround+scales": dict(
                        scheme=s,
                        optimize="adaround",
                        optimize_iters=args.iters,
                        optimize_scales=True,
                    )
                    for s in ("w4a8", "w3a8", "w2a8")
                },
                "w4a8|adaround-2x-iters+aimet-grid": dict(
                    scheme="w4a8",
                    optimize="adaround",
                    optimize_iters=2 * args.iters,
                    weight_grid="aimet",
                ),
                "w4a8|adaround-2x-iters+weights-inputs": dict(
                    scheme="w4a8",
                    optimize="adaround",
                    optimize_iters=2 * args.iters,
                    optimize_inputs="weights",
                ),
                "w4a8|adaround-2x-iters+mixed-inputs": dict(
                    scheme="w4a8",
                    optimize="adaround",
                    optimize_iters=2 * args.iters,
                    optimize_inputs="mixed",
                ),
                "w4a8|adaround+bias-correction": dict(
                    scheme="w4a8", optimize="adaround,bias-correction", optimize_iters=args.iters
                ),
                "w4a4|adaround+first-last-w8a8": dict(
                    scheme="w4a4", first_last="w8a8", optimize="adaround", optimize_iters=args.iters
                ),
            }
            for label in args.tunes.split(",") if args.tunes else tunes:
                run(f"{name}|{label}", results, lambda fp=fp, kw=tunes[label]: quant(fp, **kw))
        elif args.part == "ranges":
            range_rows(fp, name, results, args.iters, pool, tests, work)
        else:  # which inputs should reconstruction see: the quantized model's own, with float activations, or float
            for inputs in OPTIMIZE_INPUTS:
                run(
                    f"{name}|w4a8|adaround|inputs={inputs}",
                    results,
                    lambda fp=fp, i=inputs: quant(
                        fp,
                        scheme="w4a8",
                        optimize="adaround",
                        optimize_iters=args.iters,
                        optimize_inputs=i,
                    ),
                )
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
