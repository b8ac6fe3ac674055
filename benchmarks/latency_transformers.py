"""MatMul-heavy models for bench_latency: a BERT-shaped encoder built here and the real
all-MiniLM-L6-v2; float, faaq W8A8 (QDQ), faaq W4 weight-only (QDQ and MatMulNBits) and ORT's
MatMulNBits tool."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
from latency_common import faaq_quantize, log, measure, quantize_variant, sqnr_db


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
        torch.onnx.export(
            module,
            (torch.zeros(shape),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    m = onnx.load(str(path))
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


def ort_matmul_nbits(src: Path, dst: Path) -> dict:
    """ORT's own weight-only int4 tool (round to nearest, block 32, symmetric, accuracy level 4)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    t0 = time.perf_counter()
    q = MatMulNBitsQuantizer(
        onnx.load(str(src)), block_size=32, is_symmetric=True, accuracy_level=4
    )
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


SIMPLIFY_NOTE = (
    "faaq run with simplify=False: onnxsim would fuse Q/K/V into a com.microsoft Attention node "
    "whose weight faaq leaves float"
)


def transformer_variants(
    stem: str, fp: Path, calib: dict, evalx: dict, args, work: Path, description: str
) -> dict:
    """float, faaq W8A8 (QDQ), faaq W4 weight-only (QDQ and MatMulNBits), ORT's MatMulNBits tool."""
    from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
    from faaq_onnx.runtime.kernels import kernel_report

    variants = {"float": fp}
    info: dict = {"model": description, "quantize": {}, "note": SIMPLIFY_NOTE}
    qdq_w4 = work / f"{stem}.faaq_w4_qdq.onnx"

    def w4_weight_only(nbits_path: Path) -> dict:
        t0 = time.perf_counter()
        faaq_quantize(
            fp, qdq_w4, calib, "w4a8", weight_granularity="block", block_size=32, simplify=False
        )
        wo = strip_activation_qdq(onnx.load(str(qdq_w4)))
        onnx.save(wo, str(qdq_w4))
        conv, names = convert_to_matmulnbits(wo, bits_allowed=(4,), accuracy_level=4)
        onnx.save(conv, str(nbits_path))
        return {"seconds": round(time.perf_counter() - t0, 1), "matmulnbits_nodes": len(names)}

    steps = [
        (
            "faaq W8A8 (QDQ)",
            work / f"{stem}.faaq_w8a8.onnx",
            lambda d: faaq_quantize(fp, d, calib, "w8a8", simplify=False),
        ),
        ("faaq W4 weight-only -> MatMulNBits", work / f"{stem}.faaq_w4_mnb.onnx", w4_weight_only),
        (
            "ORT MatMulNBitsQuantizer W4",
            work / f"{stem}.ort_w4.onnx",
            lambda d: ort_matmul_nbits(fp, d),
        ),
    ]
    for label, dst, fn in steps:
        if quantize_variant(info, variants, stem, label, dst, fn) and label.startswith("faaq W4"):
            variants["faaq W4 weight-only (QDQ, before the pass)"] = qdq_w4
    info["sqnr_db"] = {k: sqnr_db(fp, p, evalx) for k, p in variants.items() if k != "float"}
    log(f"{stem}: timing {len(variants)} variants")
    info["results"] = measure(variants, args)
    info["kernels"] = {
        k: kernel_report(str(p))["summary"] for k, p in variants.items() if k != "float"
    }
    return info


def bert_part(args, work: Path) -> dict:
    from faaq_onnx.inputs import random_inputs

    module, shape = bert_like()
    fp = export_torch(module, shape, work / "bert-like.onnx")
    proto = onnx.load(str(fp))
    return transformer_variants(
        "bert-like",
        fp,
        random_inputs(proto, args.calib, seed=0),
        random_inputs(proto, 8, seed=1),
        args,
        work,
        "BERT-shaped encoder (4 layers, hidden 384, 6 heads, seq 128, FFN 1536, random init)",
    )


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
        return {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }

    calib, evalx = encode(sentences[: args.calib]), encode(sentences[args.calib : args.calib + 8])
    enc = Encoder(model).eval()
    with torch.no_grad():
        ref = enc(*(torch.from_numpy(evalx[k]) for k in ("input_ids", "attention_mask"))).numpy()
    fp = work / "minilm-l6.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = tuple(torch.from_numpy(calib[k][:1]) for k in ("input_ids", "attention_mask"))
        torch.onnx.export(
            enc,
            example,
            str(fp),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                n: {0: "batch"} for n in ("input_ids", "attention_mask", "last_hidden_state")
            },
        )
    m = onnx.load(str(fp))
    m.ir_version = 10
    onnx.save(m, str(fp))
    from faaq_onnx.runtime.session import make_session

    got = make_session(str(fp)).run(None, evalx)[0]
    mask = evalx["attention_mask"].astype(bool)
    export_err = float(np.abs(got[mask] - ref[mask]).max())
    if export_err > 1e-3:
        return {
            "skipped": f"the ONNX export of MiniLM does not match torch (max error {export_err:.3g})"
        }
    info = transformer_variants(
        "minilm-l6",
        fp,
        calib,
        evalx,
        args,
        work,
        f"all-MiniLM-L6-v2 (pretrained, seq 128, calibration: {args.calib} {source})",
    )
    info["export_max_abs_error"] = export_err
    return info
