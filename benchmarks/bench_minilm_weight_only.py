"""Issue 10: weight-only W4 on the real all-MiniLM-L6-v2, faaq vs ONNX Runtime vs onnxsim.

Variants: faaq round-to-nearest (W4, block 128 asymmetric: ORT's defaults), faaq GPTQ, faaq
AWQ, faaq AWQ+GPTQ; ONNX Runtime's MatMulNBitsQuantizer (RTN; GPTQ where it runs);
onnxsim's quantize_weight_only_int4 followed by its apply_gptq and apply_awq. Calibration:
128 SST-2 train sentences (seq 64). Scores on the 872 SST-2 dev sentences: mean cosine of the
sentence embedding to the float model's, and dev accuracy of a logistic-regression head
trained on float embeddings of 4,000 train sentences. Also: activation Q/DQ nodes left and
MatMulNBits nodes in each graph, and bytes on disk.

    python benchmarks/bench_minilm_weight_only.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from common import data_dir, machine, write
from minilm import embed, minilm_onnx, read_sst2, tokenize

from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import quantize


class Reader:
    """ORT's CalibrationDataReader over the calibration npz, one sentence at a time."""

    def __init__(self, calib):
        self.rows = [
            {k: v[i : i + 1] for k, v in calib.items()} for i in range(len(calib["input_ids"]))
        ]
        self.it = iter(self.rows)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.rows)

    def __iter__(self):  # ORT's GPTQ path iterates the reader
        return iter(self.rows)


def faaq_variant(fp, calib_path, out, optimize, block=128, symmetric=False):
    cfg = QuantConfig(
        scheme="w4",
        weight_granularity="block",
        block_size=block,
        weight_symmetric=symmetric,
        calib_size=128,
        optimize=optimize,
        progress=False,
    )
    quantize(fp, str(calib_path), out, cfg)


def ort_variant(fp, calib, out, algo):
    from onnxruntime.quantization import matmul_nbits_quantizer as m

    cfg = (
        m.DefaultWeightOnlyQuantConfig(block_size=128, is_symmetric=False)
        if algo == "rtn"
        else m.GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader(calib), block_size=128)
    )
    q = m.MatMulNBitsQuantizer(
        onnx.load(str(fp)), block_size=128, is_symmetric=False, algo_config=cfg
    )
    q.process()
    q.model.save_model_to_file(str(out))


def onnxsim_variant(fp, calib, out, step):
    """onnxsim's int4 pass leaves models below opset 21 untouched: upgrade the export first."""
    import onnxsim
    from onnx import version_converter

    upgraded = version_converter.convert_version(onnx.load(str(fp)), 21)
    upgraded.ir_version = 10
    fp21 = Path(out).with_suffix(".opset21.onnx")
    onnx.save(upgraded, str(fp21))
    fp = fp21
    base = onnxsim.quantize_weight_only_int4(str(fp))
    batches = [{k: v[i : i + 16] for k, v in calib.items()} for i in range(0, 128, 16)]
    model = (
        base
        if step == "rtn"
        else getattr(onnxsim, f"apply_{step}")(str(fp), base, calibration_data=batches)
    )
    onnx.save(model, str(out))


def graph_facts(path: Path) -> dict:
    m = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in m.graph.node)
    return {
        "qdq_nodes": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0),
        "matmulnbits": ops.get("MatMulNBits", 0),
        "matmul_float": ops.get("MatMul", 0),
        "bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir")
    ap.add_argument("--head-train", type=int, default=4000)
    ap.add_argument(
        "--only",
        default=None,
        help="re-run these variants (comma-separated), keep the others' rows",
    )
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="faaq-minilm-w4-"))
    fp, tok, calib_path = minilm_onnx(work, ddir)
    calib = {k: v[:128] for k, v in np.load(calib_path).items()}
    dev_x, dev_y = read_sst2(ddir / "sst2" / "dev.tsv")
    tr_x, tr_y = read_sst2(ddir / "sst2" / "train.tsv")
    pick = np.random.default_rng(1).choice(len(tr_x), args.head_train, replace=False)
    dev, train = tokenize(tok, dev_x), tokenize(tok, [tr_x[i] for i in pick])
    from sklearn.linear_model import LogisticRegression

    ref_dev = embed(fp, dev)
    head = LogisticRegression(max_iter=2000).fit(embed(fp, train), tr_y[pick])
    variants = {
        "faaq RTN": lambda o: faaq_variant(fp, calib_path, o, "none"),
        "faaq GPTQ": lambda o: faaq_variant(fp, calib_path, o, "gptq"),
        "faaq AWQ": lambda o: faaq_variant(fp, calib_path, o, "awq"),
        "faaq AWQ+GPTQ": lambda o: faaq_variant(fp, calib_path, o, "awq,gptq"),
        "faaq RTN (block 32, symmetric)": lambda o: faaq_variant(
            fp, calib_path, o, "none", 32, True
        ),
        "faaq GPTQ (block 32, symmetric)": lambda o: faaq_variant(
            fp, calib_path, o, "gptq", 32, True
        ),
        "ORT MatMulNBits RTN": lambda o: ort_variant(fp, calib, o, "rtn"),
        "ORT MatMulNBits GPTQ": lambda o: ort_variant(fp, calib, o, "gptq"),
        "onnxsim int4 RTN": lambda o: onnxsim_variant(fp, calib, o, "rtn"),
        "onnxsim apply_gptq": lambda o: onnxsim_variant(fp, calib, o, "gptq"),
        "onnxsim apply_awq": lambda o: onnxsim_variant(fp, calib, o, "awq"),
    }
    rows = [
        {
            "variant": "float",
            "cosine": 1.0,
            "dev_acc": float(np.mean(head.predict(ref_dev) == dev_y)),
            **graph_facts(fp),
        }
    ]
    previous = {}
    if args.only:
        import json

        from common import OUT

        previous = {
            r["variant"]: r
            for r in json.loads((OUT / "minilm_weight_only.json").read_text())["rows"]
        }
    for name, make in variants.items():
        if args.only and name not in args.only.split(","):
            if name in previous:
                rows.append(previous[name])
            continue
        out = work / (name.replace(" ", "_").replace("+", "_") + ".onnx")
        row = {"variant": name}
        try:
            t0 = time.perf_counter()
            make(out)
            row["quantize_s"] = round(time.perf_counter() - t0, 1)
            e = embed(out, dev)
            row["cosine"] = float(
                np.mean(
                    np.sum(e * ref_dev, 1)
                    / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref_dev, axis=1))
                )
            )
            row["dev_acc"] = float(np.mean(head.predict(e) == dev_y))
            row.update(graph_facts(out))
        except Exception as exc:  # a peer that does not run here is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            traceback.print_exc()
        rows.append(row)
        print(row, flush=True)
    md = [
        "all-MiniLM-L6-v2, weight-only W4 (block 128, asymmetric), 128 SST-2 calibration sentences; "
        "scores on the 872 SST-2 dev sentences",
        "",
        "| variant | cosine to float | dev accuracy | quantize s | act Q/DQ nodes | MatMulNBits | float MatMul | bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['variant']} | - | - | - | - | - | - | {r['error']} |")
            continue
        md.append(
            f"| {r['variant']} | {r['cosine']:.4f} | {100 * r['dev_acc']:.2f} | {r.get('quantize_s', '-')} | "
            f"{r['qdq_nodes']} | {r['matmulnbits']} | {r['matmul_float']} | {r['bytes']} |"
        )
    write("minilm_weight_only", {"machine": machine(), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
