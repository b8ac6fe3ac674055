"""One AdaRound iteration on a large Conv layer, timed by its parts: autograd through
SoftWeight.soft()/reg() against the fused soft_and_reg, float32 against bfloat16 products.

The layer is ResNet-18/50's 512-channel 3x3 (K = 4608, 2.4 M weights) at the batch AdaRound
takes for it on sampled positions (patches.batch_positions: 910 positions). Variants alternate
round by round, one thread (as reconstruct() runs), medians reported with the load.

    python benchmarks/bench_adaround_iteration.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from common import OUT, git_state, machine

from faaq_onnx.optimize import patches as P
from faaq_onnx.optimize.reconstruct import SoftWeight, _recon_loss
from faaq_onnx.quant.weights import weight_grid

PARTS = ("soft", "forward", "loss", "backward", "adam")


def _layer(cin: int, cout: int):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.02).astype(np.float32)
    layer = P.ConvLayer(
        "w", (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1, np.zeros(cout, np.float32), (0.0, np.inf)
    )
    positions = P.batch_positions(cin * 9, 32)
    x = torch.from_numpy(rng.standard_normal((positions, 1, cin * 9)).astype(np.float32))
    target = torch.from_numpy(rng.standard_normal((positions, cout)).astype(np.float32))
    return w, layer, x, target


def _iteration(sw, opt, run, x, target, fused: bool, beta: float = 10.0) -> dict:
    t = [time.perf_counter()]
    if fused:
        soft, reg = sw.soft_and_reg(beta)
    else:
        soft, reg = sw.soft(), None
    t.append(time.perf_counter())
    out = run({P.INPUT: x, "w": soft})
    t.append(time.perf_counter())
    loss = _recon_loss(out, target) + 0.01 * (reg if fused else sw.reg(beta))
    t.append(time.perf_counter())
    opt.zero_grad()
    loss.backward()
    t.append(time.perf_counter())
    opt.step()
    t.append(time.perf_counter())
    return {p: t[i + 1] - t[i] for i, p in enumerate(PARTS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--cin", type=int, default=512)
    ap.add_argument("--cout", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    w, layer, x, target = _layer(args.cin, args.cout)
    grid = weight_grid(w, 4, "per-channel", 0, 1)
    variants = {
        f"{'fused' if fused else 'autograd'} {'bf16' if bf16 else 'fp32'}": (fused, bf16)
        for fused in (False, True)
        for bf16 in (False, True)
    }
    state = {}
    for name, (_, bf16) in variants.items():
        sw = SoftWeight(w, grid)
        state[name] = (sw, torch.optim.Adam([sw.v], lr=1e-3), P.patch_runner(layer, bf16=bf16))
    times: dict = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    rng = np.random.default_rng(0)
    for r in range(args.rounds + 2):
        for name in rng.permutation(list(variants)):
            sw, opt, run = state[name]
            parts = _iteration(sw, opt, run, x, target, variants[name][0])
            if r >= 2:  # two warm rounds
                times[name].append(parts)
    load.append(os.getloadavg()[0])
    rows = {
        name: {p: float(np.median([t[p] for t in ts])) * 1e3 for p in PARTS}
        | {"total": float(np.median([sum(t.values()) for t in ts])) * 1e3}
        for name, ts in times.items()
    }
    base = rows["autograd fp32"]["total"]
    lines = [
        f"# One AdaRound iteration, Conv {args.cin}->{args.cout} 3x3 (K = {args.cin * 9}), "
        f"{x.shape[0]} positions, one thread",
        "",
        f"Command: `python benchmarks/bench_adaround_iteration.py --rounds {args.rounds}`; "
        f"{args.rounds} interleaved rounds (order shuffled per round), median ms; load {load[0]:.2f} -> {load[1]:.2f}; "
        f"bf16 products fast here: {P._bf16_speedup() >= P.BF16_GAIN}.",
        "",
        "| variant | " + " | ".join(PARTS) + " | total | vs autograd fp32 |",
        "|---|" + "---|" * (len(PARTS) + 2),
    ]
    for name, row in rows.items():
        cells = " | ".join(f"{row[p]:.1f}" for p in PARTS)
        lines.append(f"| {name} | {cells} | {row['total']:.1f} | {row['total'] / base:.2f}x |")
    lines.append("")
    lines.append(f"Machine: {machine()}; {git_state()}.")
    text = "\n".join(lines) + "\n"
    print(text)
    (OUT / "adaround_iteration.md").write_text(text)
    (OUT / "adaround_iteration.json").write_text(
        json.dumps(
            {"rows": rows, "load": load, "rounds": args.rounds, "machine": machine()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
