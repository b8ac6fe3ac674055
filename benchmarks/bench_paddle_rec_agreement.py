"""PP-OCRv4's text recognizer (Paddle2ONNX, from rapidocr-onnxruntime) quantized by faaq, scored
against the float model on text lines calibration did not see: it has no labels here, so the
scores are per-step argmax agreement, whole lines identical and the mean KL of each step's
character distribution to the float one.

`--ablate` also bypasses each activation Q/DQ pair of each scheme's model in turn (its
consumers read the float tensor again) and lists the bypasses that lower KL the most: whether
one quantizer carries the error or all share it.

    python benchmarks/bench_paddle_rec_agreement.py [--calib-size 64] [--schemes w8a8,w4a8]
        [--ablate] [--data-dir ../shared/data]
    python benchmarks/bench_paddle_rec_agreement.py --flags "--budget avg-bits=4.5" \
        --flags "--budget avg-bits=4.5 --weight-symmetric" --out paddle_rec_budget

`--flags` (repeatable): whole `faaq quantize` option sets, each a row, instead of --schemes.
`--kind cls`: the angle classifier (ch_ppocr_mobile_v2.0_cls) instead, one step per line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from common import faaq_cli, meta_stamp, run_meta, write
from foreign_corpus import paddle


def outputs(model, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    blob = model if isinstance(model, str) else model.SerializeToString()
    s = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"x": x[i : i + 16]})[0] for i in range(0, len(x), 16)])


def score(ref: np.ndarray, q: np.ndarray) -> dict:
    """Per step (rec) or per line (cls: one step, its orientation)."""
    a, b = ref.argmax(-1), q.argmax(-1)
    kl = np.sum(ref * (np.log(ref + 1e-12) - np.log(q + 1e-12)), -1)
    same = (a == b).reshape(len(a), -1)
    return {
        "step_agreement": float(same.mean()),
        "lines_identical": float(same.all(axis=1).mean()),
        "kl": float(kl.mean()),
    }


def bypassed(q: onnx.ModelProto, qnode: onnx.NodeProto) -> onnx.ModelProto:
    """q with one activation quantizer's DequantizeLinear outputs replaced by its float input."""
    out = onnx.ModelProto()
    out.CopyFrom(q)
    dq_outs = {
        n.output[0]
        for n in q.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] == qnode.output[0]
    }
    for n in out.graph.node:
        for i, name in enumerate(n.input):
            if name in dq_outs:
                n.input[i] = qnode.input[0]
    return out


def ablation(qpath: Path, x: np.ndarray, ref: np.ndarray, top: int = 10) -> dict:
    q = onnx.load(str(qpath))
    inits = {i.name for i in q.graph.initializer}
    acts = [n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    kls = sorted((score(ref, outputs(bypassed(q, n), x))["kl"], n.input[0]) for n in acts)
    return {
        "quantizers": len(acts),
        "lowest": kls[:top],
        "median": float(np.median([k for k, _ in kls])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--eval-size", type=int, default=64)
    ap.add_argument("--schemes", default="w8a8,w4a8")
    ap.add_argument("--ablate", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--flags", action="append", help="faaq quantize options, a row each")
    ap.add_argument(
        "--kind", choices=("rec", "cls"), default="rec", help="cls: the angle classifier"
    )
    ap.add_argument("--out", default="paddle_rec_agreement", help="result name in benchmarks/out")
    args = ap.parse_args()
    commands = args.flags or [f"--scheme {s}" for s in args.schemes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        entry = paddle(args.kind, work, args.data_dir)
        calib = np.concatenate([f["x"] for f in entry.feeds("calib", args.calib_size)])
        x = np.concatenate([f["x"] for f in entry.feeds("eval", args.eval_size)])
        np.savez(work / "calib.npz", x=calib)
        ref = outputs(str(entry.path), x)
        rows, loads = {}, []
        for k, flags in enumerate(commands):
            scheme = flags.removeprefix("--scheme ") if not args.flags else flags
            q = work / f"q{k}.onnx"
            wall = faaq_cli(
                "quantize", str(entry.path), "-o", str(q), "--calib", str(work / "calib.npz"),
                *flags.split(), "--no-cache",
            )  # fmt: skip
            loads.append(os.getloadavg()[0])
            rows[scheme] = {**score(ref, outputs(str(q), x)), "wall_s": round(wall, 1)}
            if args.ablate:
                rows[scheme]["ablation"] = ablation(q, x, ref)
    meta = run_meta(loads)
    lines = [
        f"PP-OCR {args.kind} (`{entry.path.name}`), {args.calib_size} synthetic text lines to calibrate,"
        f" {args.eval_size} others scored against the float model. {meta_stamp(meta)}",
        "",
        f"| {'flags' if args.flags else 'scheme'} | step agreement % | whole lines identical % | KL to float | wall s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s, r in rows.items():
        lines.append(
            f"| {s} | {100 * r['step_agreement']:.2f} | {100 * r['lines_identical']:.1f} "
            f"| {r['kl']:.4f} | {r['wall_s']} |"
        )
    for s, r in rows.items():
        if "ablation" in r:
            ab = r["ablation"]
            lines += ["", f"{s}: each of {ab['quantizers']} activation quantizers bypassed alone "
                      f"(KL with all: {r['kl']:.4f}); the lowest:", ""]  # fmt: skip
            lines += [f"- {t}: {kl:.4f}" for kl, t in ab["lowest"]]
            lines += ["", f"median over all bypasses: {ab['median']:.4f}"]
    write(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
