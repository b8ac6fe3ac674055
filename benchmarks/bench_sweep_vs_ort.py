"""The default mixed-precision command against ONNX Runtime's own static quantization, timed.

faaq: `faaq quantize model.onnx -o out.onnx --calib calib.npz --budget avg-bits=4.5 --candidates
w4a8,w8a8 --no-cache -q` (the default SQNR sweep and, below 8 bits, the default --optimize auto:
GPTQ + bias correction), one process per run, wall time start to exit. ORT: quant_pre_process +
quantize_static (QDQ, per-channel QInt8, MinMax), one process per run. Runs alternate (ORT, faaq,
ORT, faaq, ... in a shuffled order per repeat); the ratio of medians is reported with the load.
Also the same faaq command with --optimize none (the sweep alone), so the sweep's share shows.

Models: ResNet-50 (random weights, faaq's zoo export; 64 val1300 images), EfficientNet-Lite0
(real weights; 64 val1300 images) and all-MiniLM-L6-v2 (real weights, benchmarks/minilm.py's
sentence-embedding export at length 64; 64 tokenized SST-2 train sentences).

    python benchmarks/bench_sweep_vs_ort.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import OUT, data_dir, git_state, machine

ORT_SCRIPT = (
    "import sys, numpy as np; sys.path.insert(0, {bench!r}); from common import ort_quantize_static; "
    "from pathlib import Path; x = dict(np.load({calib!r})); "
    "ort_quantize_static(Path({src!r}), Path({dst!r}), x)"
)


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", default="resnet50,efficientnet-lite0,minilm")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-sweep-"))
    from faaq_onnx import zoo
    from faaq_onnx.data import load_inputs

    x = np.asarray(
        load_inputs(ddir / "imagenet/val1300", ["input"], preset="imagenet", limit=64, seed=0)[
            "input"
        ]
    )
    image_calib = work / "calib.npz"
    np.savez(image_calib, input=x)
    rows, loads = {}, [os.getloadavg()[0]]
    for name in args.models.split(","):
        fp, calib = work / f"{name}.onnx", image_calib
        if name == "resnet50":
            zoo.export("resnet50-imagenet", fp)
        elif name == "minilm":  # the real all-MiniLM-L6-v2, 64 tokenized SST-2 train sentences
            from minilm import minilm_onnx

            fp, _, text_calib = minilm_onnx(work, ddir, calib_size=0)
            calib = work / "minilm_calib64.npz"
            np.savez(calib, **{k: v[:64] for k, v in np.load(text_calib).items()})
        else:
            zoo.export("efficientnet-lite0-imagenet", fp, weights="auto")
        base = ["faaq", "quantize", str(fp), "-o", str(work / "q.onnx"), "--calib", str(calib)]
        faaq = [*base, "--budget", "avg-bits=4.5", "--candidates", "w4a8,w8a8", "--no-cache", "-q"]
        cmds = {
            "ort": [
                sys.executable,
                "-c",
                ORT_SCRIPT.format(
                    bench=str(Path(__file__).parent),
                    calib=str(calib),
                    src=str(fp),
                    dst=str(work / "ort.onnx"),
                ),
            ],
            "faaq": faaq,
            "faaq --optimize none": [*faaq, "--optimize", "none"],
        }
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.repeats):
            order = list(cmds)
            random.shuffle(order)
            for k in order:
                times[k].append(run(cmds[k]))
                loads.append(os.getloadavg()[0])
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows[name] = {
            "seconds": times,
            "median_s": med,
            "ratio_faaq_ort": med["faaq"] / med["ort"],
            "ratio_sweep_only_ort": med["faaq --optimize none"] / med["ort"],
            "faaq_command": shlex.join(faaq),
        }
        print(name, json.dumps(rows[name]), flush=True)
    meta = {
        **machine(),
        "git": git_state(),
        "loadavg": [round(v, 2) for v in loads],
        "command": shlex.join([sys.executable, *sys.argv]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sweep_vs_ort.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = [
        "Mixed precision `--budget avg-bits=4.5 --candidates w4a8,w8a8` (default metric and "
        "optimizer) vs ORT quant_pre_process + quantize_static, wall seconds per process, "
        f"interleaved, median of {args.repeats}. {meta['date']}, {meta['machine']}, "
        f"{meta['cpus']} CPUs, git {meta['git'].get('head', '?')}, load during the runs "
        f"{min(loads):.1f}–{max(loads):.1f}. `{meta['command']}`",
        "",
        "| model | ORT s | faaq s | faaq / ORT | faaq --optimize none s | / ORT |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        m = r["median_s"]
        md.append(
            f"| {name} | {m['ort']:.1f} | {m['faaq']:.1f} | {r['ratio_faaq_ort']:.2f} | "
            f"{m['faaq --optimize none']:.1f} | {r['ratio_sweep_only_ort']:.2f} |"
        )
    (OUT / "sweep_vs_ort.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
