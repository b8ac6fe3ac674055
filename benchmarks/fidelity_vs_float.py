"""How close each quantized model stays to the float model, draw by draw, tool against tool.

Top-1 on 1,017 images moves by a few images from one calibration draw to the next, and a
W4A8 ResNet-56 sits at the float model's own accuracy, so top-1 alone cannot say which
tool quantizes better. Fidelity to the float model can: on every test image, does the
quantized model predict what the float model predicts (agreement), how far apart are the
two output distributions (KL(float || quantized), nats) and how large is the logit error
(SQNR, dB). Each group is a path pattern with `{seed}` for the calibration draw; the last
group is the baseline the others are paired against on the draws both have.

    python benchmarks/fidelity_vs_float.py --data-dir ../shared/data --model resnet56-cifar10 \\
        --group "faaq AdaRound 2000 it=MODELS/resnet56-cifar10__w4a8__adaround-2x-iters__seed{seed}.onnx" \\
        --group "AIMET AdaRound 1000 it=/work/peer_runs_s{seed}/aimet_out/resnet56__w4a8_adaround.onnx"

(the faaq models are what `bench_rounding_accuracy.py --keep-models MODELS --seed N` keeps;
the AIMET ones what `run_aimet.sh` writes under its work folder). With `--keep-stored`, a
group's draws whose model files are gone (an earlier machine's) keep the scores stored for
that label in benchmarks/out/NAME.json, so a new group can be paired against them; every
score is a deterministic function of the model file and the two test sets.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from common import OUT, cifar_model, data_dir, machine, paired_stats, write

from faaq_onnx.data import load_labeled
from faaq_onnx.evaluate import fidelity, predict

TEST_SETS = {
    "test": "cifar10/cifar10_test.npz",
    "lossless": "cifar10/cifar10_test_lossless1017.npz",
}
METRICS = ("top1", "agreement", "kl", "logit_sqnr_db")
HIGHER_IS_BETTER = {"top1": True, "agreement": True, "kl": False, "logit_sqnr_db": True}
SCALE = {
    "top1": (100, ".2f"),
    "agreement": (100, ".2f"),
    "kl": (1, ".4f"),
    "logit_sqnr_db": (1, ".2f"),
}


def scores(logits: np.ndarray, ref: np.ndarray, y: np.ndarray) -> dict:
    """top-1 and faaq's own fidelity measures (faaq eval prints the same for a model pair)."""
    f = fidelity(logits, ref)
    return {
        "top1": float(np.mean(logits.argmax(1) == y)),
        "agreement": f["agreement"],
        "kl": f["kl"],
        "logit_sqnr_db": f["logit_sqnr_db"],
    }


def paired(a: dict, b: dict, metric: str, test_set: str) -> dict:
    """a minus b over the draws both have: mean, sample sd, paired t, draws where a is better."""
    p = paired_stats(
        [a[s][test_set][metric] - b[s][test_set][metric] for s in sorted(set(a) & set(b))]
    )
    return {k: p[k] for k in ("draws", "mean", "sd", "t")} | {
        "better": p["pos" if HIGHER_IS_BETTER[metric] else "neg"]
    }


def paired_cell(r: dict, metric: str, better: str = "") -> str:
    """One paired result as a table cell, in the metric's unit (percentage points for shares)."""
    k, f = SCALE[metric]
    return f"{k * r['mean']:+{f}} ± {k * r['sd']:{f}}, t = {r['t']:+.1f}, {better}{r['better']}/{r['draws']}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir")
    ap.add_argument(
        "--model", default="resnet56-cifar10", help="the float zoo model the groups quantize"
    )
    ap.add_argument(
        "--group",
        action="append",
        required=True,
        help="LABEL=PATH pattern with {seed} (LABEL without '='); the last is the baseline",
    )
    ap.add_argument(
        "--seeds", default="0-9", help="calibration draws to look for (A-B or a comma list)"
    )
    ap.add_argument("--name", default="fidelity_r56_w4a8", help="benchmarks/out/NAME.{json,md}")
    ap.add_argument(
        "--keep-stored",
        action="store_true",
        help="draws whose files are missing keep the scores NAME.json holds for the same label",
    )
    args = ap.parse_args()
    stored_file = OUT / f"{args.name}.json"
    stored = (
        json.loads(stored_file.read_text())["groups"]
        if args.keep_stored and stored_file.exists()
        else {}
    )
    ddir = data_dir(args.data_dir)
    if "-" in args.seeds:
        lo, hi = (int(v) for v in args.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(v) for v in args.seeds.split(",")]
    groups = {}
    for g in args.group:
        label, _, pattern = g.partition("=")
        if not pattern or "{seed}" not in pattern:
            raise SystemExit(f"--group {g!r}: expected LABEL=PATH with {{seed}} in PATH")
        groups[label] = {
            s: pattern.format(seed=s) for s in seeds if os.path.exists(pattern.format(seed=s))
        }
        if not groups[label] and label not in stored:
            raise SystemExit(
                f"--group {label!r}: no file matches {pattern!r} for draws {args.seeds}"
            )
    tests = {k: load_labeled(ddir / v) for k, v in TEST_SETS.items()}
    fp = cifar_model(args.model, ddir, Path(tempfile.mkdtemp(prefix="faaq-fidelity-")))
    ref = {k: predict(fp, x).reshape(len(y), -1) for k, (x, y) in tests.items()}
    float_top1 = {k: {"top1": float(np.mean(ref[k].argmax(1) == y))} for k, (x, y) in tests.items()}
    results: dict = {}
    for label, paths in groups.items():
        results[label] = {}
        for s, path in paths.items():
            results[label][s] = {
                k: scores(predict(path, x).reshape(len(y), -1), ref[k], y)
                for k, (x, y) in tests.items()
            }
            print(
                label,
                s,
                {k: {m: round(v, 4) for m, v in r.items()} for k, r in results[label][s].items()},
                flush=True,
            )
        old = stored.get(label, {"paths": {}, "draws": {}})
        for s in sorted(int(k) for k in old["draws"] if int(k) in seeds and int(k) not in paths):
            print(label, s, "kept from", stored_file.name, "(model file absent)", flush=True)
            results[label][s], paths[s] = old["draws"][str(s)], old["paths"][str(s)]
        results[label] = dict(sorted(results[label].items()))
        groups[label] = dict(sorted(paths.items()))
    base = list(groups)[-1]
    pairs = {
        f"{label} - {base}": {
            k: {m: paired(results[label], results[base], m, k) for m in METRICS} for k in tests
        }
        for label in list(groups)[:-1]
    }
    payload = {
        "machine": machine(),
        "model": args.model,
        "float": float_top1,
        "groups": {label: {"paths": groups[label], "draws": results[label]} for label in groups},
        "paired": pairs,
    }
    write(args.name, payload, render(payload))


def render(p: dict) -> str:
    fmt = {
        "top1": lambda v: f"{100 * v:.2f}",
        "agreement": lambda v: f"{100 * v:.2f}",
        "kl": lambda v: f"{v:.4f}",
        "logit_sqnr_db": lambda v: f"{v:.2f}",
    }
    lines = [
        f"{p['model']}: fidelity to the float model per calibration draw (top-1 %, agreement: same class "
        "as the float model %, KL(float || quantized) nats, logit SQNR dB)",
        "",
    ]
    for test_set in p["float"]:
        lines += [
            f"**{test_set}** (float top-1 {100 * p['float'][test_set]['top1']:.2f})",
            "",
            "| group | draw | " + " | ".join(METRICS) + " |",
            "|---|---|" + "---|" * len(METRICS),
        ]
        for label, g in p["groups"].items():
            for s, r in g["draws"].items():
                lines.append(
                    f"| {label} | {s} | "
                    + " | ".join(fmt[m](r[test_set][m]) for m in METRICS)
                    + " |"
                )
        lines.append("")
    lines += [
        "Paired differences (first minus baseline; mean ± sd over draws, paired t, draws where the first is better):",
        "",
        "| pair | set | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for pair, by_set in p["paired"].items():
        for test_set, by_m in by_set.items():
            cells = [paired_cell(by_m[m], m) for m in METRICS]
            lines.append(f"| {pair} | {test_set} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
