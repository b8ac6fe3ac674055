"""Issue 10: a model over 2 GB end to end, in bounded memory.

Builds a decoder-only, LLaMA-shaped transformer from a `transformers` config with random
weights (nothing downloaded; hidden 2048, 12 layers, vocab 32000: 748 M parameters,
2.99 GB of fp32), exports it with external data, then runs `faaq quantize` W8A8 and W4
(weight-only, MatMulNBits) as separate processes under /usr/bin/time -v: wall time, peak
RSS against the budget 1.5 x model bytes + 1 GB, output SQNR vs float on a few token
sequences through plain ONNX Runtime, and bytes on disk.

    python benchmarks/bench_big_model.py --work /tmp/faaq-big      # needs ~12 GB of disk
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import machine, write

EXPORT = r"""
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=12,
                  num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=256,
                  tie_word_embeddings=False)
torch.manual_seed(0)
m = LlamaForCausalLM(cfg).eval()
class Logits(torch.nn.Module):
    def __init__(s, m): super().__init__(); s.m = m
    def forward(s, ids): return s.m(input_ids=ids, use_cache=False).logits
ids = torch.ones(1, 16, dtype=torch.int64)
with torch.no_grad():
    torch.onnx.export(Logits(m).eval(), (ids,), sys.argv[1], dynamo=True, opset_version=18,
                      input_names=["input_ids"], output_names=["logits"], external_data=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=256)},))
print(sum(p.numel() for p in m.parameters()))
"""


def timed(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out = {
        "cmd": " ".join(cmd),
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mb": int(rss.group(1)) // 1024 if rss else None,
        "stdout": proc.stdout[-2000:],
    }
    if proc.returncode:
        out["stderr"] = proc.stderr[-3000:]
    return out


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def sqnr_vs_float(float_path: Path, quant_path: Path, tokens: np.ndarray) -> float:
    import onnxruntime as ort

    from faaq_onnx.analysis.metrics import sqnr_db

    so = ort.SessionOptions()
    so.add_session_config_entry("session.disable_prepacking", "1")
    ref = ort.InferenceSession(str(float_path), so, providers=["CPUExecutionProvider"])
    r = [ref.run(None, {"input_ids": t[None]})[0] for t in tokens]
    del ref
    q = ort.InferenceSession(
        str(quant_path), so, providers=["CPUExecutionProvider"]
    )  # plain ORT, from the file
    g = [q.run(None, {"input_ids": t[None]})[0] for t in tokens]
    return sqnr_db(np.concatenate(r), np.concatenate(g))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="/tmp/faaq-big")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "llama-3g.onnx"
    result = {"machine": machine()}
    if not model.exists():
        result["export"] = timed([sys.executable, "-c", EXPORT, str(model)])
    model_bytes = disk_bytes(model)
    budget_mb = (1.5 * model_bytes + 2**30) / 2**20
    rng = np.random.default_rng(0)
    np.savez(work / "tokens.npz", input_ids=rng.integers(0, 32000, (80, 64)).astype(np.int64))
    tokens = rng.integers(0, 32000, (4, 64)).astype(np.int64)  # other sequences, for the SQNR check
    result.update(model_bytes=model_bytes, rss_budget_mb=round(budget_mb))
    for scheme in ("w8a8", "w4"):
        out = work / f"llama-3g.{scheme}.onnx"
        run = timed(
            [
                "faaq",
                "quantize",
                str(model),
                "-o",
                str(out),
                "--calib",
                str(work / "tokens.npz"),
                "--calib-size",
                "8",
                "--batch-size",
                "1",
                "--scheme",
                scheme,
                "-q",
                "--json",
                str(work / f"{scheme}.json"),
            ]
        )
        if run["rc"] == 0:
            rep = json.loads((work / f"{scheme}.json").read_text())
            run.update(
                output_bytes=disk_bytes(out),
                sqnr_db_4_sequences=sqnr_vs_float(model, out, tokens),
                kernels=rep["verify"]["kernels"]["summary"][0],
                timings=rep["timings_s"],
                within_rss_budget=run["peak_rss_mb"] <= budget_mb,
            )
        result[scheme] = run
        print(scheme, {k: v for k, v in run.items() if k not in ("stdout", "stderr")}, flush=True)
    md = [
        f"LLaMA-shaped decoder, random weights, {model_bytes / 1e9:.2f} GB on disk (fp32, external data); "
        f"RSS budget 1.5 x model + 1 GB = {budget_mb:.0f} MB",
        "",
        "| scheme | wall s | peak RSS MB | within budget | output bytes | SQNR vs float (4 seqs) | kernels |",
        "|---|---|---|---|---|---|---|",
    ]
    for scheme in ("w8a8", "w4"):
        r = result[scheme]
        md.append(
            f"| {scheme} | {r['wall_s']} | {r['peak_rss_mb']} | {r.get('within_rss_budget')} | "
            f"{r.get('output_bytes', '-')} | {r.get('sqnr_db_4_sequences', float('nan')):.2f} dB | "
            f"{r.get('kernels', r.get('stderr', '')[-200:])} |"
        )
    write("big_model", result, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
