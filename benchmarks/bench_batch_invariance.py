"""Does the written model depend on how calibration batched or ordered the same samples?

For each model, `faaq quantize --scheme w8a8 --optimize none` (calibration and ranges only:
the default `--act-range mse` from histograms) runs on one 256-sample calibration file at
`--batch-size` 4 and 64, and on the same samples in reverse order; the three written files
are compared by SHA-256. Then the plain `--scheme w4a8` command (the README's) is scored by
`faaq eval` against the float model. Models: ResNet-20/56 (256 cifar10_train5000 images,
`--seed 0`; 10,000 JPEG test images), EfficientNet-Lite0 (256 val1300 calibration / 1,044
evaluation images, bench_seed003_tables.prepare) and, with `--foreign MODEL.onnx:CALIB.npz`,
any other graph (no evaluation set: hashes only).

    python benchmarks/bench_batch_invariance.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from bench_seed003_tables import prepare, quantize_args
from common import data_dir, faaq_cli, meta_stamp, run_meta, scores, write


def quantize(*args: str) -> float:
    """Wall seconds of `faaq quantize ARGS --no-cache -q` (its warnings shown)."""
    return faaq_cli("quantize", *args, "--no-cache", "-q", stderr=None)


def sample_file(files: dict, work: Path) -> Path:
    """The 256 calibration samples the model's documented command uses, as one .npz."""
    if not files["extra"]:
        return Path(files["calib"])
    import onnx

    from faaq_onnx.data import load_inputs

    out = work / f"{files['prefix']}_calib256.npz"
    if not out.exists():
        names = [
            i.name for i in onnx.load(str(files["float"]), load_external_data=False).graph.input
        ]
        x = load_inputs(files["calib"], names, limit=256, seed=0)
        np.savez(out, **{k: np.asarray(v) for k, v in x.items()})
    return out


def reversed_file(calib: Path, work: Path) -> Path:
    out = work / f"{calib.stem}_reversed.npz"
    with np.load(calib) as z:
        np.savez(out, **{k: z[k][::-1] for k in z.files})
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="resnet20,resnet56,efficientnet-lite0")
    ap.add_argument("--foreign", action="append", default=[], help="MODEL.onnx:CALIB.npz")
    ap.add_argument("--work")
    ap.add_argument("--out", default="batch_invariance")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="faaq-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    jobs = [(m, prepare(m, ddir, work)) for m in args.models.split(",") if m]
    for spec in args.foreign:
        model, calib = spec.rsplit(":", 1)
        name = Path(model).stem
        jobs.append((name, {"float": Path(model), "calib": Path(calib), "eval": None,
                            "prefix": name, "extra": []}))  # fmt: skip
    rows, loads = [], [os.getloadavg()[0]]
    for model, files in jobs:
        calib = sample_file(files, work)
        variants = {
            "batch 4": (calib, ["--batch-size", "4"]),
            "batch 64": (calib, ["--batch-size", "64"]),
            "reversed, batch 16": (reversed_file(calib, work), []),
        }
        hashes, walls = {}, {}
        for name, (cal, flags) in variants.items():
            q = work / f"{files['prefix']}_w8a8_{name.split(',')[0].replace(' ', '')}.onnx"
            same_samples = {**files, "calib": cal, "extra": []}  # all 256, no seeded subset
            walls[name] = quantize(
                *quantize_args(same_samples, q, "w8a8"), "--optimize", "none", *flags
            )
            hashes[name] = sha(q)
        row = {"model": model, "w8a8": hashes, "w8a8_wall_s": walls,
               "identical": len(set(hashes.values())) == 1}  # fmt: skip
        if files["eval"] is not None:
            q = work / f"{files['prefix']}_w4a8_plain.onnx"
            row["w4a8_wall_s"] = quantize(*quantize_args(files, q, "w4a8"))
            row["w4a8"] = scores(files["float"], [q], files["eval"], work)[q.name]
        loads.append(os.getloadavg()[0])
        rows.append(row)
        print(row, flush=True)
    meta = run_meta(loads)
    lines = [
        "W8A8 (`--optimize none`) written from the same 256 calibration samples at --batch-size 4 "
        "and 64 and in reverse order (SHA-256 of the files), and the plain `--scheme w4a8` "
        f"command scored against the float model. {meta_stamp(meta)} "
        "`python benchmarks/bench_batch_invariance.py --data-dir ../shared/data`",
        "",
        "| model | W8A8 batch 4 | batch 64 | reversed | identical | plain W4A8 top-1 % | "
        "agreement % | logit SQNR dB | W4A8 wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h = list(r["w8a8"].values())
        acc = (
            f"{r['w4a8']['top1']:.2f} | {r['w4a8']['agreement']:.2f} | "
            f"{r['w4a8']['logit_sqnr_db']:.1f} | {r['w4a8_wall_s']:.0f}"
            if "w4a8" in r
            else "– | – | – | –"
        )
        lines.append(
            f"| {r['model']} | {h[0]} | {h[1]} | {h[2]} | {'yes' if r['identical'] else 'no'} | {acc} |"
        )
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
