"""Peer baseline: AIMET-ONNX on EfficientNet-Lite0 W4A8 (runs in AIMET's own venv).

Measures AIMET-ONNX 2.42 on the same float model and the same 256 calibration images faaq
quantizes EfficientNet-Lite0 with, so the two can be compared side by side:

    (a) w4a8_rtn       QuantizationSimModel(param_type=int4, activation_type=int8), default
                       config (per-channel symmetric weights on Conv/Gemm, asymmetric activations,
                       model input quantized), quant_scheme min_max; sim.compute_encodings(calib)
    (b) w4a8_adaround  same sim, aimet_onnx.apply_adaround(sim, calib, num_iterations=N), then
                       sim.compute_encodings(calib)

The calibration images are fed as 8 batches of 32 (AdaRound optimises each layer on 32 images
per iteration, cycling over the batches). Each result is exported with sim.to_onnx_qdq()
(QuantizeLinear/DequantizeLinear, opset 21 for int4) to OUT/effnet__w4a8_rtn.onnx and
OUT/effnet__w4a8_adaround_<N>it.onnx. The summary
JSON (--summary) records the wall time and 1-minute load average of every AIMET step (sim
construction, AdaRound, encodings, export), AdaRound's per-layer wall time split into activation
sampling and optimisation, the process peak RSS, and the package versions. Scoring is done
outside this venv, with faaq's evaluator (`python -m faaq_onnx eval`), see
benchmarks/out/aimet_effnet.md.

It reuses the helpers of aimet_cifar.py (timer, load sampler, QDQ export, sim construction) and,
like it, must NOT import faaq_onnx. Torch and ONNX Runtime run at --threads / --ort-threads (both
default 1: on a shared 2-core machine larger pools oversubscribe the cores).

The runs behind benchmarks/out/aimet_effnet.{json,md} (N=500; see there why not 1000):

    /work/venvs/aimet/bin/python benchmarks/peers/aimet_effnet.py \\
        --model /tmp/seed003work/effnet_float.onnx --calib /tmp/seed003work/effnet_calib.npz \\
        --out /tmp/aimet_eff/final --adaround-iters 500 --threads 1 --ort-threads 1 \\
        --summary /tmp/aimet_eff/final/summary.json
    /work/venvs/aimet/bin/python benchmarks/peers/aimet_effnet.py \\
        --model /tmp/seed003work/effnet_float.onnx --calib /tmp/seed003work/effnet_calib.npz \\
        --out /tmp/aimet_eff/probe --variants w4a8_adaround --adaround-iters 20 \\
        --summary /tmp/aimet_eff/probe/summary_it20.json

The short AdaRound run (N=20) gives, per layer, the fixed time (activation sampling, sessions)
and the time per iteration, from which `adaround_split.projected_layers_s` in the summary
extrapolates AdaRound's run time to N = 200/500/1000/2000.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aimet_cifar as ac
from aimet_onnx import apply_adaround
from aimet_onnx.adaround.activation_sampler import ActivationSampler
from aimet_onnx.adaround.adaround_loss import AdaroundLoss
from aimet_onnx.adaround.adaround_optimizer import AdaroundOptimizer

T0 = time.perf_counter()
LAYERS: list[dict] = []  # per-layer AdaRound timing, filled by the patches below


def _instrument_adaround() -> None:
    """Time every layer AdaRound optimises, split into activation sampling and iterations."""
    orig_module = AdaroundOptimizer.adaround_module  # bound classmethod
    orig_sample = ActivationSampler.sample_and_place_all_acts_on_cpu
    orig_round = AdaroundLoss.compute_round_loss  # called once per iteration

    def round_loss(cls, alpha, num_iterations, cur_iter):
        if LAYERS and cur_iter in (0, num_iterations - 1):
            LAYERS[-1][f"t_it{'0' if cur_iter == 0 else 'last'}"] = time.perf_counter()
        return orig_round(alpha, num_iterations, cur_iter)

    def sample(self, dataset):
        t0 = time.perf_counter()
        out = orig_sample(self, dataset)
        if LAYERS:
            LAYERS[-1]["sample_s"] = round(time.perf_counter() - t0, 3)
        return out

    def module(cls, info, *args, **kwargs):
        LAYERS.append({"weight": info.params["weight"].name, "type": info.type})
        t0 = time.perf_counter()
        out = orig_module(info, *args, **kwargs)
        row = LAYERS[-1]
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        n = kwargs.get("num_iterations", args[5] if len(args) > 5 else 0)
        t_0, t_n = row.pop("t_it0", None), row.pop("t_itlast", None)
        if t_0 is not None and t_n is not None and n > 1:
            row["s_per_iteration"] = round((t_n - t_0) / (n - 1), 4)
            row["iters_s"] = round(row["s_per_iteration"] * n, 3)
        else:
            row["iters_s"] = 0.0
        row["overhead_s"] = round(row["wall_s"] - row["iters_s"] - row.get("sample_s", 0.0), 3)
        print(
            f"      [{len(LAYERS)}] {row['weight']} {info.type}: {row['wall_s']:.1f} s "
            f"(sampling {row.get('sample_s', 0):.1f} s, {row.get('s_per_iteration', 0):.3f} s/it) load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        return out

    AdaroundOptimizer.adaround_module = classmethod(module)
    ActivationSampler.sample_and_place_all_acts_on_cpu = sample
    AdaroundLoss.compute_round_loss = classmethod(round_loss)


def _projection(iters: int) -> dict:
    """Extrapolate the AdaRound wall time to other iteration counts from the per-layer split."""
    fixed = sum(r["wall_s"] - r["iters_s"] for r in LAYERS)
    rest = sum(r["iters_s"] for r in LAYERS)
    per_it = rest / iters
    return {
        "layers": len(LAYERS),
        "sampling_s": round(sum(r.get("sample_s", 0.0) for r in LAYERS), 1),
        "fixed_s_incl_sampling": round(fixed, 1),
        "iterations_s": round(rest, 1),
        "s_per_iteration_all_layers": round(per_it, 3),
        "projected_layers_s": {str(n): round(fixed + n * per_it) for n in (200, 500, 1000, 2000)},
    }


def run(v: str, args, batches, out_dir: Path, payload: dict, summary: Path) -> None:
    w, a, ada, scheme, method = ac.PLANS[v]
    print(f"  effnet {v}", flush=True)
    timer = ac.Timer()
    LAYERS.clear()
    sim = ac.new_sim(Path(args.model), w, a, timer, v)
    if ada:
        with timer.step(f"{v}/apply_adaround"):
            apply_adaround(sim, batches, num_iterations=args.adaround_iters)
    with timer.step(f"{v}/compute_encodings"):
        sim.compute_encodings(batches)
    path = out_dir / f"effnet__{v}{f'_{args.adaround_iters}it' if ada else ''}.onnx"
    ac.save_qdq(sim, path, timer, v)
    wb = ac.weight_bits(sim)
    info = {
        "variant": v,
        "scheme": scheme,
        "method": method.format(it=args.adaround_iters),
        "adaround_iters": args.adaround_iters if ada else None,
        "torch_threads": torch.get_num_threads(),
        "ort_threads": args.ort_threads or "default",
        "onnx": str(path),
        "avg_weight_bits": wb["avg_weight_bits"],
        "activation_bits": wb["activation_bits"],
        "weights_quantized": len(wb["per_weight"]),
        "steps": {k.split("/", 1)[1]: s for k, s in timer.steps.items()},
        "wall_s": timer.total(v + "/"),
        "peak_rss_mib_so_far": ac.peak_rss_mib(),
    }
    if ada:
        info["adaround_layers"] = list(LAYERS)
        info["adaround_split"] = _projection(args.adaround_iters)
    payload["variants"].append(info)
    payload["peak_rss_mib"] = ac.peak_rss_mib()
    payload["wall_s"] = round(time.perf_counter() - T0, 1)
    summary.write_text(json.dumps(payload, indent=2))
    print(
        "   ",
        {k: x for k, x in info.items() if k not in ("adaround_layers", "steps")},
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="float ONNX model (input 'input', NCHW)")
    ap.add_argument("--calib", required=True, help=".npz with key 'input': calibration images")
    ap.add_argument("--out", required=True, help="folder for the QDQ exports (outside the repo)")
    ap.add_argument("--variants", default="w4a8_rtn,w4a8_adaround")
    ap.add_argument("--adaround-iters", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--seed", type=int, default=0, help="seeds AdaRound's batch draws")
    ap.add_argument("--summary", help="JSON summary (default OUT/aimet_effnet_summary.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.ort_threads:
        ac.SIM_KWARGS["session_options_kwargs"] = {
            "intra_op_num_threads": args.ort_threads,
            "inter_op_num_threads": 1,
        }
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    _instrument_adaround()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Path(args.summary or out_dir / "aimet_effnet_summary.json")
    x = np.load(args.calib)["input"].astype(np.float32)
    in_name = onnx.load(args.model).graph.input[0].name
    batches = [{in_name: x[i : i + ac.BATCH]} for i in range(0, len(x), ac.BATCH)]
    payload = {
        "versions": ac.versions(),
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "load_at_start": os.getloadavg(),
        "args": vars(args),
        "calib": f"{len(x)} images {list(x.shape[1:])}, {len(batches)} batches of {ac.BATCH}",
        "variants": [],
    }
    print(payload["versions"], payload["calib"], flush=True)
    for v in args.variants.split(","):
        run(v, args, batches, out_dir, payload, summary)
    payload["load_at_end"] = os.getloadavg()
    summary.write_text(json.dumps(payload, indent=2))
    print(
        f"wrote {summary}; {payload['wall_s']} s, peak RSS {payload['peak_rss_mib']} MiB",
        flush=True,
    )


if __name__ == "__main__":
    main()
