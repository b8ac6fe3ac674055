"""GPTQ on min-max grids against GPTQ on output-clipped grids (--gptq-clip, the default).

For each model and scheme: the plain command `faaq quantize model.onnx -o q.onnx --calib ...
--scheme wNa8 --no-cache` with and without `--no-gptq-clip`, each scored by `faaq eval` against
the float model (top-1, agreement with the float model's class, KL to it, logit SQNR), and the
wall time of each command. Models: ResNet-20/56 (real CIFAR-10 weights; 256 images of
cifar10_train5000 with --seed 0, the 10,000 JPEG test images) and EfficientNet-Lite0 (real
weights; 256 val1300 calibration / 1,044 evaluation images, bench_seed003_tables.prepare).

    python benchmarks/bench_gptq_clip.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench_seed003_tables import prepare, quantize_args
from common import data_dir, faaq_cli, meta_stamp, run_meta, scores, write

ROWS = {
    "resnet20": ("w4a8", "w3a8", "w2a8"),
    "resnet56": ("w4a8", "w3a8", "w2a8"),
    "efficientnet-lite0": ("w4a8",),
}
VARIANTS = {"min-max": ["--no-gptq-clip"], "output-clipped": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default=",".join(ROWS))
    ap.add_argument("--work", help="where the float models and data are kept (cached)")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-clip-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, loads = [], [os.getloadavg()[0]]
    for model in args.models.split(","):
        files = prepare(model, ddir, work)
        for scheme in ROWS[model]:
            written, walls = [], {}
            for name, flags in VARIANTS.items():
                q = work / f"{files['prefix']}_{scheme}_{name}.onnx"
                walls[name] = faaq_cli(
                    "quantize", *quantize_args(files, q, scheme), "--no-cache", "-q", *flags
                )
                written.append(q)
                loads.append(os.getloadavg()[0])
            measured = scores(files["float"], written, files["eval"], work)
            for (name, _), q in zip(VARIANTS.items(), written):
                rows.append(
                    {"model": model, "scheme": scheme, "grid": name, "wall_s": walls[name]}
                    | measured[q.name]
                )
            print(rows[-2], rows[-1], flush=True)
    meta = run_meta(loads)
    lines = [
        "GPTQ (the plain command: GPTQ fit to the float output + bias correction) on min-max grids "
        "(`--no-gptq-clip`) and on output-clipped grids (the default). "
        f"{meta_stamp(meta)} "
        "`python benchmarks/bench_gptq_clip.py --data-dir ../shared/data`",
        "",
        "| model | scheme | grid | top-1 % | agreement % | KL | logit SQNR dB | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['scheme']} | {r['grid']} | {r['top1']:.2f} | "
            f"{r['agreement']:.2f} | {r['kl']:.4f} | {r['logit_sqnr_db']:.1f} | {r['wall_s']:.1f} |"
        )
    write("gptq_clip", {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
