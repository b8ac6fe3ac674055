"""Experiment (not a faaq option): AdaRound with a Fisher-weighted loss, BRECQ-style, on W4A8.

Each layer unit's squared output error is weighted per element by E_y[(dCE(y)/dz)^2] of the
float model at that unit's output z (labels y drawn from the float model's own softmax, K draws
per sample, the calibration samples AdaRound uses), normalised to mean 1 per unit so AIMET's
regulariser weight keeps its balance. The weighting is patched around faaq's reconstruction
for this run only. Result (ResNet-56, 2000 it, K = 4, draws 0-1) in the README: worse than the
plain loss on the test set by every measure.

    python benchmarks/screen_fisher_adaround.py --data-dir ../shared/data --seed 0
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import OUT, cifar_model, data_dir

from faaq_onnx.config import QuantConfig
from faaq_onnx.data import load_labeled
from faaq_onnx.evaluate import fidelity, predict
from faaq_onnx.interpreter import TorchGraph
from faaq_onnx.optimize import rounding, unit_data
from faaq_onnx.optimize.units import layer_units
from faaq_onnx.pipeline import Compilation

ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
ap.add_argument("--data-dir")
ap.add_argument("--model", default="resnet56-cifar10")
ap.add_argument("--iters", type=int, default=2000)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument(
    "--label-draws", type=int, default=4, help="K: sampled labels per sample in the Fisher estimate"
)
args = ap.parse_args()
name, iters, seed, K = args.model, args.iters, args.seed, args.label_draws
ddir = data_dir(args.data_dir)
work = Path(tempfile.mkdtemp(prefix="faaq-fisher-"))
fp = cifar_model(name, ddir, work)
cfg = QuantConfig(
    calib_size=256,
    progress=False,
    seed=seed,
    scheme="w4a8",
    optimize="adaround",
    optimize_iters=iters,
)
comp = Compilation(fp, str(ddir / "cifar10/cifar10_train5000.npz"), cfg, target_opset=21)
plan = comp.uniform("w4a8")
units = layer_units(comp.float_proto, comp.qgraph)
outs = sorted({u.output for u in units})
x = next(iter(comp.inputs.values()))[:256]
in_name = next(iter(comp.inputs))
tg = TorchGraph(comp.float_proto)
gen = torch.Generator().manual_seed(seed)
t0 = time.perf_counter()
chunks = {t: [] for t in outs}
for i in range(0, len(x), 32):
    acc = {t: 0.0 for t in outs}
    for _ in range(K):
        xin = torch.from_numpy(np.ascontiguousarray(x[i : i + 32])).requires_grad_(True)
        (logits,), tapped = tg.run({in_name: xin}, set(outs))
        y = torch.multinomial(torch.softmax(logits.detach(), 1), 1, generator=gen)[:, 0]
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        grads = torch.autograd.grad(loss, [tapped[t] for t in outs])
        for t, g in zip(outs, grads):
            acc[t] = acc[t] + g.detach().numpy() ** 2 / K
    for t in outs:
        chunks[t].append(acc[t])
G2 = {}
for t in outs:
    a = np.concatenate(chunks[t]).astype(np.float32)
    G2[t] = a / max(float(a.mean()), 1e-30)
print("fisher s", round(time.perf_counter() - t0, 1), flush=True)

LAST = [None]
orig_ft = unit_data.UnitData.float_tensors


def float_tensors(self, names):
    LAST[0] = names[0]
    return orig_ft(self, names)


unit_data.UnitData.float_tensors = float_tensors
orig_rec = rounding.reconstruct


def weighted(run_unit, soft, acts, inputs, target, settings, progress=None, float_inputs=None):
    w = G2[LAST[0]][: len(target)]
    sw = np.sqrt(w).astype(np.float32)
    sw_t = torch.from_numpy(sw)
    inputs = dict(inputs)
    inputs["__idx"] = np.arange(len(target), dtype=np.int64)

    def run2(feeds, hooks):
        idx = feeds.pop("__idx")
        return run_unit(feeds, hooks) * sw_t[idx]

    if float_inputs is not None:
        float_inputs = dict(float_inputs)
        float_inputs["__idx"] = inputs["__idx"]
    return orig_rec(run2, soft, acts, inputs, target * sw, settings, progress, float_inputs)


rounding.reconstruct = weighted

t0 = time.perf_counter()
comp.optimize_rounding([plan])
secs = time.perf_counter() - t0
out = work / f"{name}_fisherK{K}_it{iters}_s{seed}.onnx"
comp.emit(plan, out)
res = {"iters": iters, "seed": seed, "K": K, "seconds": round(secs, 1)}
for k, f in {
    "test": "cifar10/cifar10_test.npz",
    "lossless": "cifar10/cifar10_test_lossless1017.npz",
}.items():
    xx, y = load_labeled(ddir / f)
    ref = predict(fp, xx)
    got = predict(out, xx)
    fd = fidelity(got, ref, y)
    res[k] = {"top1": float((got.argmax(1) == y).mean()), **fd}
print(json.dumps(res))
results_file = OUT / "screen_fisher_adaround.json"
results = json.loads(results_file.read_text()) if results_file.exists() else {}
results[f"{name}|w4a8|adaround-{iters}-it+fisher-K{K}|seed={seed}"] = res
results_file.write_text(json.dumps(results, indent=1))
