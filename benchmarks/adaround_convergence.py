"""Does AdaRound converge before its fixed iteration count? (issue: stop on convergence)

Runs `--effort best`'s learned rounding (AdaRound, 2000 iterations from GPTQ's solution, loss
on sampled output positions) on a CIFAR ResNet and records, every 50 iterations of every unit,
how many hard rounding decisions (h(V) >= 0.5) changed since the last look and what share of
h(V) is still undecided (between 0.01 and 0.99). A stop on convergence can only save time if
the decisions settle well before the last iteration. Nothing in faaq_onnx is changed: the
benchmark wraps the reconstruction call and reads the soft weights it is given.

    python benchmarks/adaround_convergence.py --data-dir ../shared/data --model resnet20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import cifar_model, data_dir, git_state, machine, write

import faaq_onnx.optimize.rounding as rounding
from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig

NAME = "adaround_convergence"


def traced(units: list[list[tuple]]):
    """reconstruct() that logs, every 50 iterations, decisions flipped and the undecided share."""
    inner = rounding.reconstruct

    def reconstruct(run_unit, weights, acts, inputs, target, settings, progress=None, **kw):
        log: list[tuple] = []
        units.append(log)
        prev: list[torch.Tensor | None] = [None]
        size = sum(w.v.numel() for w in weights.values())

        def look(it, loss):
            with torch.no_grad():
                h = torch.cat([w.h().reshape(-1) for w in weights.values()])
            codes = h >= 0.5
            flips = -1 if prev[0] is None else int((codes != prev[0]).sum())
            prev[0] = codes
            undecided = float(((h > 0.01) & (h < 0.99)).float().mean())
            log.append((it, flips, undecided, loss, size))
            if progress is not None:
                progress(it, loss)

        return inner(run_unit, weights, acts, inputs, target, settings, progress=look, **kw)

    return reconstruct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "resnet56"])
    ap.add_argument("--scheme", default="w4a8")
    ap.add_argument("--work", default="/tmp/adaround_convergence")
    ap.add_argument("--tag", default="", help="appended to the output name (another setting's run)")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = cifar_model(f"{args.model}-cifar10", ddir, work)
    units: list[list[tuple]] = []
    rounding.reconstruct = traced(units)
    cfg = QuantConfig(
        scheme=args.scheme,
        optimize="adaround",
        optimize_iters=2000,
        rounding_start="gptq",
        optimize_positions="sampled",
        calib_size=256,
        seed=0,
        progress=False,
    )
    t0 = time.perf_counter()
    quantize(str(model), str(ddir / "cifar10" / "cifar10_train5000.npz"), None, cfg)
    seconds = time.perf_counter() - t0
    rows = []
    for i, log in enumerate(units):
        size = log[-1][4]
        flips = [(it, f) for it, f, *_ in log if f >= 0]
        last = max((it for it, f in flips if f > 0), default=0)
        second_half = sum(f for it, f in flips if it >= 1000)
        rows.append(
            {
                "unit": i,
                "weights": size,
                "last_flip_at": last,
                "flips_after_1000": second_half,
                "flips_after_1000_share": second_half / size,
                "undecided_at_1000": next(u for it, _, u, *_ in log if it >= 1000),
                "undecided_at_end": log[-1][2],
            }
        )
    payload = {
        "command": f"python benchmarks/adaround_convergence.py --model {args.model} --scheme {args.scheme}"
        + (f" --tag {args.tag}" if args.tag else ""),
        "faaq_onnx": str(Path(rounding.__file__).parent.parent),
        "machine": machine(),
        "git": git_state(),
        "seconds": round(seconds, 1),
        "units": rows,
        "trace": units,
    }
    md = [
        f"# AdaRound convergence: {args.model} {args.scheme}, 2000 iterations from GPTQ, sampled positions",
        "",
        f"Command: `{payload['command']}`; {len(rows)} units, {seconds:.0f} s. Every 50 iterations: hard "
        "decisions (h >= 0.5) flipped since the last look; share of h still between 0.01 and 0.99.",
        "",
        "| unit | weights | last flip at iteration | flips after 1000 (share) | undecided at 1000 | undecided at 2000 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        md.append(
            f"| {r['unit']} | {r['weights']} | {r['last_flip_at']} | {r['flips_after_1000']} "
            f"({100 * r['flips_after_1000_share']:.2f} %) | {100 * r['undecided_at_1000']:.1f} % | "
            f"{100 * r['undecided_at_end']:.1f} % |"
        )
    lasts = np.array([r["last_flip_at"] for r in rows])
    md += [
        "",
        f"Last flip: median iteration {int(np.median(lasts))}, earliest {int(lasts.min())}; "
        f"undecided at the end: median {100 * np.median([r['undecided_at_end'] for r in rows]):.1f} %.",
    ]
    name = f"{NAME}_{args.model}_{args.scheme}{'_' + args.tag if args.tag else ''}"
    write(name, payload, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
