"""Candidate kernels per quantizer group, and presets named after real targets."""

from __future__ import annotations

from faaq_onnx.config import FLOAT, Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGroup

PRESETS = {
    # what ONNX Runtime's CPU EP runs: int8 fused kernels; int4 weights stored packed
    # (dequantized before Conv, MatMulNBits for MatMul weights)
    "ort-cpu": "w4a8,w8a8",
    # seed 003's practical hardware set
    "practical": "w4a8,w8a8,w8a16",
    # weight-bit sweeps at 8-bit activations, for average-bit and size budgets
    "weights-a8": "w2a8,w3a8,w4a8,w5a8,w6a8,w8a8",
    "wide": "w4a4,w4a6,w6a4,w6a6,w8a6,w6a8,w8a8,w8a16",
}

# score and softmax tensors of attention get their own set: 16-bit allowed
ATTENTION_ACT_BITS = (8, 16)


def parse_candidates(text: str) -> list[Candidate]:
    # a preset's name stands for its candidates, alone or in a list ("wide,w4a8")
    items = [t.strip() for t in text.split(",") if t.strip()]
    expanded = ",".join(PRESETS.get(t.lower(), t) for t in items)
    cands = sorted(
        {Candidate.parse(t) for t in expanded.split(",") if t.strip()}, key=lambda c: (c.w, c.a)
    )
    if not cands:
        raise FaaqError(
            f"no candidates in {text!r}: write e.g. w4a8,w8a8,w8a16 or a preset ({', '.join(PRESETS)})"
        )
    return cands


def group_candidates(group: QuantizerGroup, cands: list[Candidate]) -> list[Candidate]:
    """The candidates that make sense for one group, from most to least precise.

    Weightless groups only choose activation bits; attention score/softmax groups
    choose from ATTENTION_ACT_BITS.
    """
    top_w = max(c.w for c in cands)
    if group.kind == "attention":
        # weight-only candidate sets leave the score MatMuls float as well
        acts = ATTENTION_ACT_BITS + ((FLOAT,) if any(c.a == FLOAT for c in cands) else ())
        out = [Candidate(top_w, a) for a in acts]
    elif not group.weights:
        out = sorted({Candidate(top_w, c.a) for c in cands}, key=lambda c: c.a)
    else:
        out = list(cands)
    return sorted(out, key=lambda c: (-c.w, -c.a))
