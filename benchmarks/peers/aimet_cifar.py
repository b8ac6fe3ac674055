"""Peer baseline: AIMET-ONNX on the real CIFAR-10 ResNets (runs in AIMET's own venv).

This script must NOT import faaq_onnx: it runs inside a separate virtual environment
with `aimet-onnx` (see benchmarks/peers/run_aimet.sh, which prepares its inputs with
faaq's own loader and evaluates its outputs with faaq's evaluator).

Inputs (in --work, written by aimet_eval.py prepare):
    MODEL.onnx            float models exported by `faaq export`
    calib256.npy          the 256 preprocessed calibration images faaq picks
                          (cifar10_train5000.npz, calib size 256, seed 0), N x 3 x 32 x 32
    calib256_y.npy        their labels (used only by the AMP phase-2 score)

For each model, with AIMET's documented 2.x ONNX API:
    sim = aimet_onnx.QuantizationSimModel(model, param_type=..., activation_type=...)
      default config ("default" = per-channel symmetric weights for Conv/Gemm, asymmetric
      activations, model input quantized), default quant_scheme (min_max)
    (a) W4A8 round-to-nearest:  sim.compute_encodings(calib)
    (b) W4A8 + AdaRound:        aimet_onnx.apply_adaround(sim, calib, num_iterations) then
                                sim.compute_encodings(calib)
    (c) W4A4 + AdaRound:        same with activation_type=int4
    (d) W8A8 round-to-nearest
    (e) AMP: aimet_onnx.mixed_precision.choose_mixed_precision over candidates
        {W8A8, W4A8}, phase 1 = AIMET's built-in SQNR callback on the 256 calibration
        images, phase 2 = top-1 on the same 256 labeled calibration images; the knob is
        `allowed_accuracy_drop` (AIMET has no bit-budget knob; swept over --amp-drops, each
        run from a clean cache); the resulting average weight bits (parameter-weighted,
        as faaq's BitPlan.avg_weight_bits) and AIMET's Pareto list are recorded.
Each result is exported with sim.to_onnx_qdq() (QuantizeLinear/DequantizeLinear, opset
raised to 21 by AIMET for int4) and saved as OUT/MODEL__VARIANT.onnx; a JSON summary
with wall times (per AIMET step), load averages and peak RSS goes to --summary.

    /work/venvs/aimet/bin/python benchmarks/peers/aimet_cifar.py --work /work/peer_runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import threading
import time
from importlib import metadata
from pathlib import Path

import aimet_onnx
import numpy as np
import onnx
from aimet_onnx import QuantizationSimModel, apply_adaround, int4, int8

BATCH = 32  # AdaRound optimises on min(batch, 32) samples per iteration (aimet_onnx BATCH_SIZE)


class LoadSampler:
    """Samples the 1-minute load average every `every` seconds while a step runs."""

    def __init__(self, every: float = 2.0) -> None:
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        s = self.samples or [float("nan")]
        return {"load1_mean": round(float(np.mean(s)), 2), "load1_max": round(float(np.max(s)), 2)}


class Timer:
    """Wall time + load average of each named step."""

    def __init__(self) -> None:
        self.steps: dict[str, dict] = {}

    def step(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.ls = LoadSampler().__enter__()
                self.t0 = time.perf_counter()
                return self

            def __exit__(self, *exc):
                dt = time.perf_counter() - self.t0
                self.ls.__exit__(*exc)
                timer.steps[name] = {"wall_s": round(dt, 3), **self.ls.summary()}
                print(f"    {name}: {dt:.2f} s  load {self.ls.summary()}", flush=True)

        return _Ctx()

    def total(self, prefix: str = "") -> float:
        return round(sum(v["wall_s"] for k, v in self.steps.items() if k.startswith(prefix)), 3)


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def weight_bits(sim: QuantizationSimModel) -> dict:
    """Bit width of every enabled weight quantizer, and the parameter-weighted average."""
    inits = {i.name: int(np.prod(i.dims)) for i in sim.model.model.graph.initializer}
    per, tot, bits = {}, 0, 0
    for name in sim.param_names:
        q = sim.qc_quantize_op_dict.get(name)
        if q is None or not q.enabled or name not in inits:
            continue
        n = inits[name]
        per[name] = {"bits": int(q.bitwidth), "params": n}
        tot += n
        bits += n * int(q.bitwidth)
    acts = sorted(
        {
            int(sim.qc_quantize_op_dict[a].bitwidth)
            for a in sim.activation_names
            if a in sim.qc_quantize_op_dict and sim.qc_quantize_op_dict[a].enabled
        }
    )
    return {
        "avg_weight_bits": round(bits / tot, 3) if tot else None,
        "weight_params": tot,
        "activation_bits": acts,
        "per_weight": per,
    }


def save_qdq(sim: QuantizationSimModel, path: Path, timer: Timer, key: str) -> None:
    with timer.step(f"{key}/export_qdq"):
        model = sim.to_onnx_qdq()
        onnx.save(model, str(path))


SIM_KWARGS: dict = {}  # e.g. session_options_kwargs from --ort-threads


def new_sim(model_path: Path, w, a, timer: Timer, key: str) -> QuantizationSimModel:
    with timer.step(f"{key}/sim_init"):
        return QuantizationSimModel(
            onnx.load(str(model_path)), param_type=w, activation_type=a, **SIM_KWARGS
        )


def top1_fn(x: np.ndarray, y: np.ndarray, name: str):
    def score(session) -> float:
        correct = 0
        for i in range(0, len(x), 64):
            out = session.run(None, {name: x[i : i + 64]})[0]
            correct += int((out.argmax(1) == y[i : i + 64]).sum())
        return correct / len(x)

    return score


class _Loader:
    """Minimal data loader (iterable with .batch_size) for AIMET's SQNR eval callback."""

    def __init__(self, x: np.ndarray, batch_size: int) -> None:
        self.x, self.batch_size = x, batch_size

    def __iter__(self):
        for i in range(0, len(self.x), self.batch_size):
            yield self.x[i : i + self.batch_size]

    def __len__(self):
        return (len(self.x) + self.batch_size - 1) // self.batch_size


def run_amp(
    model_path: Path,
    batches,
    x,
    y,
    in_name,
    out_dir: Path,
    stem: str,
    drop: float,
    cache_dir: Path,
    clean: bool,
    timer: Timer,
) -> dict:
    from aimet_onnx.amp.mixed_precision_algo import EvalCallbackFactory
    from aimet_onnx.common.amp.utils import AMPSearchAlgo
    from aimet_onnx.common.defs import CallbackFunc, QuantizationDataType
    from aimet_onnx.mixed_precision import choose_mixed_precision

    key = f"amp_drop{drop:g}"
    sim = new_sim(model_path, int8, int8, timer, key)

    def forward(session, _args):
        for b in batches:
            session.run(None, b)

    ints = QuantizationDataType.int
    # candidates: ((activation bw, dtype), (param bw, dtype))
    candidates = [((8, ints), (8, ints)), ((8, ints), (4, ints))]
    with timer.step(f"{key}/compute_encodings"):
        sim.compute_encodings(batches)
    phase1 = EvalCallbackFactory(
        _Loader(x, BATCH), forward_fn=lambda s, xb: s.run(None, {in_name: xb})[0]
    ).sqnr(sim, num_samples=len(x))
    phase2 = top1_fn(x, y, in_name)
    with timer.step(f"{key}/choose_mixed_precision"):
        pareto = choose_mixed_precision(
            sim,
            candidates,
            phase1,
            phase2,
            allowed_accuracy_drop=drop,
            results_dir=str(cache_dir),
            clean_start=clean,
            forward_pass_callback=CallbackFunc(forward, None),
            use_all_amp_candidates=True,
            amp_search_algo=AMPSearchAlgo.Binary,
        )
    final_calib_top1 = phase2(sim.session)
    path = out_dir / f"{stem}__{key}.onnx"
    save_qdq(sim, path, timer, key)
    wb = weight_bits(sim)
    info = {
        "variant": key,
        "scheme": "mixed {W4A8,W8A8}",
        "method": "AMP (choose_mixed_precision, RTN)",
        "onnx": str(path),
        "allowed_accuracy_drop": drop,
        "calib256_top1_after": final_calib_top1,
        "avg_weight_bits": wb["avg_weight_bits"],
        "weights_at_4bit": sum(1 for v in wb["per_weight"].values() if v["bits"] == 4),
        "weights_total": len(wb["per_weight"]),
        "per_weight_bits": {k: v["bits"] for k, v in wb["per_weight"].items()},
        "pareto": [[float(p[0]), float(p[1]), str(p[2]), str(p[3])] for p in (pareto or [])],
    }
    info["wall_s"] = timer.total(key + "/")
    return info


PLANS = {
    "w4a8_rtn": (int4, int8, False, "W4A8", "QuantSim RTN (compute_encodings)"),
    "w4a8_adaround": (int4, int8, True, "W4A8", "QuantSim + apply_adaround ({it} it)"),
    "w4a4_adaround": (int4, int4, True, "W4A4", "QuantSim + apply_adaround ({it} it)"),
    "w8a8_rtn": (int8, int8, False, "W8A8", "QuantSim RTN (compute_encodings)"),
}


def run_variant(stem: str, v: str, args, work: Path, out_dir: Path, timer: Timer) -> list[dict]:
    """One variant of one model; returns its result rows (AMP: one per allowed_accuracy_drop)."""
    model_path = work / f"{stem}.onnx"
    x = np.load(work / "calib256.npy")
    y = np.load(work / "calib256_y.npy") if (work / "calib256_y.npy").exists() else None
    in_name = onnx.load(str(model_path)).graph.input[0].name
    batches = [{in_name: x[i : i + BATCH]} for i in range(0, len(x), BATCH)]
    if v == "amp":
        if y is None:
            raise SystemExit("AMP needs calib256_y.npy (labels of the calibration images)")
        rows = []
        for drop in (float(d) for d in args.amp_drops.split(",")):
            # a clean results/cache dir per run, so each wall time is a full AMP search (phase 1 + 2)
            cache = work / f"amp_cache_{stem}_drop{drop:g}"
            if cache.exists():
                shutil.rmtree(cache)
            cache.mkdir(parents=True)
            print(f"  {stem} amp allowed_accuracy_drop={drop}", flush=True)
            info = run_amp(
                model_path, batches, x, y, in_name, out_dir, stem, drop, cache, True, timer
            )
            info["peak_rss_mib_so_far"] = peak_rss_mib()
            print(
                "   ",
                {k: v for k, v in info.items() if k not in ("pareto", "per_weight_bits")},
                flush=True,
            )
            rows.append(info)
        return rows
    w, a, ada, scheme, method = PLANS[v]
    print(f"  {stem} {v}", flush=True)
    sim = new_sim(model_path, w, a, timer, v)
    if ada:
        with timer.step(f"{v}/apply_adaround"):
            apply_adaround(sim, batches, num_iterations=args.adaround_iters)
    with timer.step(f"{v}/compute_encodings"):
        sim.compute_encodings(batches)
    info = {
        "variant": v,
        "scheme": scheme,
        "method": method.format(it=args.adaround_iters),
        "torch_threads": __import__("torch").get_num_threads(),
        "ort_threads": args.ort_threads or "default",
    }
    if y is not None:
        info["calib256_top1_sim"] = top1_fn(x, y, in_name)(sim.session)
    path = out_dir / f"{stem}__{v}.onnx"
    save_qdq(sim, path, timer, v)
    wb = weight_bits(sim)
    info.update(
        {
            "onnx": str(path),
            "avg_weight_bits": wb["avg_weight_bits"],
            "activation_bits": wb["activation_bits"],
            "wall_s": timer.total(v + "/"),
            "peak_rss_mib_so_far": peak_rss_mib(),
        }
    )
    return [info]


def versions() -> dict:
    out = {}
    for p in ("aimet-onnx", "onnxruntime", "onnx", "torch", "numpy", "onnx2torch", "torchvision"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    out["python"] = platform.python_version()
    out["aimet_onnx.__version__"] = aimet_onnx.__version__
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--work", required=True, help="folder with MODEL.onnx, calib256.npy, calib256_y.npy"
    )
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument(
        "--variants",
        default="w4a8_rtn,w8a8_rtn,amp,w4a8_adaround,w4a4_adaround",
        help="run in this order, variant-major (every model for a variant before the next variant), "
        "so the cheap and most important results land first",
    )
    ap.add_argument("--adaround-iters", type=int, default=1000)
    ap.add_argument(
        "--amp-drops",
        default="0.005,0.01,0.015,0.02",
        help="allowed_accuracy_drop values (fraction of top-1 on the 256 calibration images, "
        "relative to float) to run AMP at",
    )
    ap.add_argument("--out", help="folder for the exported QDQ models (default WORK/aimet_out)")
    ap.add_argument("--summary", help="JSON summary path (default OUT/aimet_summary.json)")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the (model, variant) results already in the summary and skip them",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads for AdaRound (0: torch default = all cores); 1 avoids the "
        "thread oversubscription that slows AdaRound many-fold on a busy 2-core machine",
    )
    ap.add_argument(
        "--ort-threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads of the sim's session (0: ORT default)",
    )
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.ort_threads:
        SIM_KWARGS["session_options_kwargs"] = {"intra_op_num_threads": args.ort_threads}
    work = Path(args.work)
    out_dir = Path(args.out or work / "aimet_out")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Path(args.summary or out_dir / "aimet_summary.json")
    t0 = time.perf_counter()
    meta = work / "calib256_meta.json"
    calib_seed = json.loads(meta.read_text())["seed"] if meta.exists() else 0
    # AdaRound's batch draws and its rounding init use these generators: one fixed seed per draw
    import torch

    random.seed(calib_seed)
    np.random.seed(calib_seed)
    torch.manual_seed(calib_seed)
    payload = {
        "versions": versions(),
        "cpus": os.cpu_count(),
        "calib_seed": calib_seed,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_at_start": os.getloadavg(),
        "adaround_iters": args.adaround_iters,
        "calib_batches": f"{BATCH}-image batches over calib256.npy",
        "models": [],
        "runs": [],
    }
    if args.resume and summary.exists():
        old = json.loads(summary.read_text())
        payload["models"], payload["runs"] = old.get("models", []), old.get("runs", [])
        payload.update(
            {k: v for k, v in old.items() if k not in payload}
        )  # e.g. notes added by hand
    models = {m["model"]: m for m in payload["models"]}
    for stem in args.models.split(","):
        if stem not in models:
            models[stem] = {"model": stem, "variants": [], "steps": {}}
            payload["models"].append(models[stem])
    print(payload["versions"], flush=True)
    run = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args)}
    payload["runs"].append(run)
    for v in args.variants.split(","):
        for stem in args.models.split(","):
            m = models[stem]
            done = {r["variant"] for r in m["variants"]}
            todo = args
            if v == "amp":
                drops = [
                    d for d in args.amp_drops.split(",") if f"amp_drop{float(d):g}" not in done
                ]
                todo = argparse.Namespace(**{**vars(args), "amp_drops": ",".join(drops)})
            if (v == "amp" and not drops) or v in done:
                print(f"  {stem} {v}: already in {summary}, skipped", flush=True)
                continue
            timer = Timer()
            rows = run_variant(stem, v, todo, work, out_dir, timer)
            m["variants"].extend(rows)
            m["steps"].update(timer.steps)
            run["wall_s"] = round(time.perf_counter() - t0, 1)
            run["peak_rss_mib"] = peak_rss_mib()
            summary.write_text(json.dumps(payload, indent=2, default=str))
    run["wall_s"] = round(time.perf_counter() - t0, 1)
    run["peak_rss_mib"] = peak_rss_mib()
    run["load_at_end"] = os.getloadavg()
    payload["total_wall_s"] = round(sum(r.get("wall_s", 0) for r in payload["runs"]), 1)
    payload["peak_rss_mib"] = max(r.get("peak_rss_mib", 0) for r in payload["runs"])
    summary.write_text(json.dumps(payload, indent=2, default=str))
    print(
        f"wrote {summary}; this run {run['wall_s']} s, peak RSS {run['peak_rss_mib']} MiB",
        flush=True,
    )


if __name__ == "__main__":
    main()
