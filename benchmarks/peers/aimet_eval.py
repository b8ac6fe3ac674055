"""System-python half of the AIMET-ONNX peer baseline (see run_aimet.sh).

    python benchmarks/peers/aimet_eval.py prepare  --work /work/peer_runs --data-dir ../shared/data
    python benchmarks/peers/aimet_eval.py evaluate --work /work/peer_runs --data-dir ../shared/data

`prepare` exports the float ResNet-20/56 with faaq's zoo (as `faaq export` does) and writes
the calibration set exactly as faaq's benchmarks pick it (`load_inputs(cifar10_train5000.npz,
limit=256, seed=SEED)`, `--seed`, default 0) as calib256.npy (+ labels calib256_y.npy from
`load_labeled` with the same subset, checked identical), so AIMET's venv, which has no faaq,
reads the same images.

`evaluate` runs faaq's own evaluator (`faaq_onnx.evaluate.evaluate`, ONNX Runtime CPU EP) on the
float models and every QDQ model AIMET exported (listed in WORK/aimet_out/aimet_summary.json),
on cifar10_test.npz (10,000, JPEG) and cifar10_test_lossless1017.npz, and writes
benchmarks/out/aimet_cifar.json and benchmarks/out/aimet_cifar.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import OUT, data_dir, machine, write

from faaq_onnx.data import load_inputs, load_labeled
from faaq_onnx.evaluate import evaluate

MODELS = {
    "resnet20": ("resnet20-cifar10", "resnet20-12fca82f.th"),
    "resnet56": ("resnet56-cifar10", "resnet56-4bfd9763.th"),
}
TEST_SETS = {
    "test": "cifar10/cifar10_test.npz",
    "lossless": "cifar10/cifar10_test_lossless1017.npz",
}
CALIB = "cifar10/cifar10_train5000.npz"


def prepare(args, ddir: Path, work: Path) -> None:
    from faaq_onnx import zoo

    work.mkdir(parents=True, exist_ok=True)
    for stem in args.models.split(","):
        name, ckpt = MODELS[stem]
        out = work / f"{stem}.onnx"
        if not out.exists():
            zoo.export(name, out, weights=str(ddir / "cifar10" / ckpt))
            print(f"exported {name} -> {out}")
    x = load_inputs(ddir / CALIB, ["input"], limit=args.calib_size, seed=args.seed)["input"]
    xl, yl = load_labeled(ddir / CALIB, limit=args.calib_size, seed=args.seed)
    if not np.array_equal(x, xl):
        raise SystemExit("load_inputs and load_labeled picked different calibration images")
    np.save(work / "calib256.npy", x)
    np.save(work / "calib256_y.npy", yl)
    (work / "calib256_meta.json").write_text(json.dumps({"seed": args.seed, "size": len(x)}))
    print(f"calib {x.shape} {x.dtype} -> {work / 'calib256.npy'} (+ labels)")
    if args.save_test_npy:
        for key, rel in TEST_SETS.items():
            tx, ty = load_labeled(ddir / rel)
            np.save(work / f"{key}_x.npy", tx)
            np.save(work / f"{key}_y.npy", ty)


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _top1(onnx_path, tests: dict, reuse: dict, key: tuple) -> dict:
    """Top-1 on every test set; reuses an earlier measurement of the same file when --reuse is given."""
    old = reuse.get(key)
    if old and old.get("onnx_mtime") == os.path.getmtime(onnx_path):
        return {k: old[k] for k in tests}
    return {k: evaluate(onnx_path, x, y)["top1"] for k, (x, y) in tests.items()}


def evaluate_all(args, ddir: Path, work: Path) -> None:
    summary_path = Path(args.summary or work / "aimet_out" / "aimet_summary.json")
    summary = json.loads(summary_path.read_text())
    tests = {k: load_labeled(ddir / v) for k, v in TEST_SETS.items()}
    reuse, full_pass = {}, None
    prev = OUT / f"{args.out_name}.json"
    if args.reuse and prev.exists():
        old = json.loads(prev.read_text())
        full_pass = old.get("eval_wall_s_full_pass", old.get("eval_wall_s"))
        reuse = {
            (r["model"], r["variant"], r.get("onnx")): r
            for r in old["rows"] + old.get("superseded_rows", [])
        }
    rows, superseded = [], []
    t0 = time.perf_counter()
    for m in summary["models"]:
        stem = m["model"]
        fp = work / f"{stem}.onnx"
        row = {
            "model": stem,
            "variant": "float",
            "scheme": "float",
            "method": "-",
            "aimet_wall_s": None,
            "onnx": str(fp),
            "onnx_mtime": os.path.getmtime(fp),
        }
        row.update(_top1(fp, tests, reuse, (stem, "float", str(fp))))
        rows.append(row)
        print(row, flush=True)
        order = ["w8a8_rtn", "w4a8_rtn", "w4a8_adaround", "w4a4_adaround"]
        for v in sorted(
            m["variants"],
            key=lambda r: (
                order.index(r["variant"]) if r["variant"] in order else len(order),
                r.get("allowed_accuracy_drop") or 0,
            ),
        ):
            row = {
                "model": stem,
                **{
                    k: v.get(k)
                    for k in (
                        "variant",
                        "scheme",
                        "method",
                        "avg_weight_bits",
                        "allowed_accuracy_drop",
                        "calib256_top1_after",
                        "calib256_top1_sim",
                        "weights_at_4bit",
                        "weights_total",
                        "torch_threads",
                        "ort_threads",
                        "onnx",
                    )
                },
                "aimet_wall_s": v.get("wall_s"),
                "onnx_mtime": os.path.getmtime(v["onnx"]),
            }
            steps = {
                k.split("/", 1)[1]: s
                for k, s in m["steps"].items()
                if k.split("/", 1)[0] == v["variant"]
            }
            row["aimet_steps"] = steps
            loads = [s["load1_mean"] for s in steps.values()]
            row["load1_mean"] = round(float(np.mean(loads)), 2) if loads else None
            row["load1_max"] = max((s["load1_max"] for s in steps.values()), default=None)
            row.update(_top1(v["onnx"], tests, reuse, (stem, row["variant"], v["onnx"])))
            rows.append(row)
            print(
                {k: row[k] for k in ("model", "variant", "test", "lossless", "aimet_wall_s")},
                flush=True,
            )
    for sup in summary.get("superseded", []):
        r = dict(sup["row"])
        row = {
            "model": sup["model"],
            **r,
            "aimet_wall_s": r.get("wall_s"),
            "why": sup.get("why"),
            "onnx_mtime": os.path.getmtime(r["onnx"]),
        }
        row.update(_top1(r["onnx"], tests, reuse, (sup["model"], r["variant"], r["onnx"])))
        superseded.append(row)
        print(
            {k: row[k] for k in ("model", "variant", "test", "lossless", "aimet_wall_s")},
            flush=True,
        )
    payload = {
        "machine": machine(),
        "eval_machine_load_at_end": os.getloadavg(),
        "aimet": summary,
        "eval_wall_s": round(time.perf_counter() - t0, 1),
        "rows": rows,
        "superseded_rows": superseded,
    }
    payload["eval_wall_s_full_pass"] = (
        full_pass if full_pass is not None else payload["eval_wall_s"]
    )
    write(args.out_name, payload, render(payload))


def render(payload: dict) -> str:
    summary, rows = payload["aimet"], payload["rows"]
    v = summary["versions"]
    md = [
        "AIMET-ONNX peer baseline on the real CIFAR-10 ResNets (benchmarks/peers/run_aimet.sh).",
        "",
        f"AIMET venv: aimet-onnx {v['aimet-onnx']}, onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, "
        f"torch {v['torch']} (CPU), python {v['python']}; {summary['cpus']} CPUs (machine shared with other work), "
        f"{summary['date']}. Evaluated with faaq's evaluator (`faaq_onnx.evaluate`, onnxruntime "
        f"{payload['machine']['onnxruntime']}, CPU EP).",
        "",
        "Calibration: the 256 images faaq picks (cifar10_train5000.npz, calib size 256, "
        f"seed {summary.get('calib_seed', 0)}), as 8 batches of 32. "
        "QuantSim defaults: config `default` (per-channel symmetric weights on Conv/Gemm, asymmetric activations, "
        "model input quantized), quant_scheme min_max. AdaRound: `aimet_onnx.apply_adaround(sim, 8 batches, "
        f"num_iterations={summary['adaround_iters']})`, then `compute_encodings`, torch and ORT at 1 thread. "
        "AMP: `aimet_onnx.mixed_precision.choose_mixed_precision`, candidates {W8A8, W4A8}, phase 1 = AIMET's SQNR "
        "callback, phase 2 = top-1 on the 256 labeled calibration images, binary search; knob = "
        "`allowed_accuracy_drop` (absolute fraction of that top-1; AIMET has no bit-budget knob). "
        "Every model is exported with `sim.to_onnx_qdq()` (opset 21 for int4) and run by plain onnxruntime.",
        "",
        "AIMET wall time = sim construction + encodings/AdaRound/AMP + QDQ export (evaluation not included). "
        "Load = 1-minute load average sampled every 2 s during the AIMET steps.",
        "",
        "| model | scheme | AIMET method | avg W bits | top-1 test (10000) | top-1 lossless (1017) | AIMET wall (s) | load avg (mean / max) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def line(r, note=""):
        method = r["method"]
        if r.get("allowed_accuracy_drop") is not None:
            method += (
                f", allowed_accuracy_drop={r['allowed_accuracy_drop']:g} "
                f"({r['weights_at_4bit']}/{r['weights_total']} weights at 4 bit)"
            )
        wall = "-" if r.get("aimet_wall_s") is None else f"{r['aimet_wall_s']:.1f}"
        load = (
            "-" if r.get("load1_mean") is None else f"{r['load1_mean']:.2f} / {r['load1_max']:.2f}"
        )
        bits = "-" if r.get("avg_weight_bits") is None else f"{r['avg_weight_bits']:.2f}"
        return (
            f"| {r['model']} | {r['scheme']} | {method}{note} | {bits} | {pct(r['test'])} % | "
            f"{pct(r['lossless'])} % | {wall} | {load} |"
        )

    md += [line(r) for r in rows]
    if payload.get("superseded_rows"):
        md += [
            "",
            "Superseded run (not in the table above): "
            + " ".join(
                f"{r['model']} {r['scheme']} AdaRound with torch/ORT default threads: top-1 {pct(r['test'])} % / "
                f"{pct(r['lossless'])} %, {r['aimet_wall_s']:.1f} s. {r.get('why', '')}"
                for r in payload["superseded_rows"]
            ),
        ]
    walls = [r["aimet_wall_s"] for r in rows if r.get("aimet_wall_s")]
    peaks = [r.get("peak_rss_mib") for r in summary.get("runs", []) if r.get("peak_rss_mib")]
    md += [
        "",
        f"Sum of the AIMET wall times in the table: {sum(walls):.0f} s; AIMET process peak RSS "
        f"{max(peaks) if peaks else '?'} MiB; faaq evaluation of all rows "
        f"{payload.get('eval_wall_s_full_pass', payload.get('eval_wall_s'))} s (one full pass).",
    ]
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("cmd", choices=["prepare", "evaluate", "render"])
    ap.add_argument("--work", default="/work/peer_runs")
    ap.add_argument("--data-dir")
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument(
        "--seed", type=int, default=0, help="prepare: the calibration draw (faaq's --seed)"
    )
    ap.add_argument(
        "--save-test-npy", action="store_true", help="also write the preprocessed test sets as .npy"
    )
    ap.add_argument(
        "--summary", help="AIMET summary JSON (default WORK/aimet_out/aimet_summary.json)"
    )
    ap.add_argument(
        "--out-name", default="aimet_cifar", help="results go to benchmarks/out/OUT_NAME.{json,md}"
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse top-1 of models already scored in benchmarks/out/aimet_cifar.json (same file, same mtime)",
    )
    args = ap.parse_args()
    if args.cmd == "render":
        payload = json.loads((OUT / f"{args.out_name}.json").read_text())
        write(args.out_name, payload, render(payload))
        return
    ddir, work = data_dir(args.data_dir), Path(args.work)
    (prepare if args.cmd == "prepare" else evaluate_all)(args, ddir, work)


if __name__ == "__main__":
    main()
