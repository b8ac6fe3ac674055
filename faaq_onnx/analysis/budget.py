"""Budgets a user can give, and what each candidate costs against them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup
from faaq_onnx.quant.formats import IntFormat

KINDS = {
    "avg-bits": "average weight bits over quantized weights",
    "size-mb": "model size in MB (quantized weights as stored, plus float leftovers)",
    "bops": "bit operations relative to a reference scheme (default W8A8; write bops=0.25@w8a16)",
    "sqnr-db": "floor on the jointly measured output SQNR in dB",
    "max-drop": "maximum top-1 drop in percentage points (needs labeled data)",
}
FLOORS = ("sqnr-db", "max-drop")


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float
    reference: Candidate = Candidate(8, 8)

    @classmethod
    def parse(cls, text: str) -> "Budget":
        m = re.fullmatch(r"\s*([a-z-]+)\s*=\s*([0-9.eE+-]+)\s*(?:@\s*(w\d+a\d+))?\s*", text.lower())
        if not m or m.group(1) not in KINDS:
            raise FaaqError(f"cannot read budget {text!r}: write KIND=VALUE with KIND one of {', '.join(KINDS)}")
        try:
            value = float(m.group(2))
        except ValueError:
            raise FaaqError(f"budget value {m.group(2)!r} is not a number") from None
        if value <= 0 and m.group(1) != "max-drop" or value < 0:
            raise FaaqError(f"budget {text!r} must be positive")
        ref = Candidate.parse(m.group(3)) if m.group(3) else Candidate(8, 8)
        return cls(m.group(1), value, ref)

    @property
    def is_floor(self) -> bool:
        return self.kind in FLOORS

    def __str__(self) -> str:
        ref = f"@{self.reference}" if self.kind == "bops" and self.reference != Candidate(8, 8) else ""
        return f"{self.kind}={self.value:g}{ref}"


class CostModel:
    """Additive cost of a plan: sum over groups of cost(group, candidate)."""

    def __init__(self, qgraph: QuantizerGraph, kind: str, other_bytes: int = 0,
                 reference: Candidate = Candidate(8, 8), symmetric_weights: bool = True) -> None:
        self.qgraph, self.kind, self.other_bytes, self.reference = qgraph, kind, other_bytes, reference
        self.symmetric = symmetric_weights
        self.total_params = sum(g.weight_params for g in qgraph.groups.values())

    def group_cost(self, g: QuantizerGroup, c: Candidate) -> float:
        if self.kind == "avg-bits":
            return float(c.w * g.weight_params)
        if self.kind == "size-mb":
            return float(sum(IntFormat(c.w, self.symmetric).stored_bytes(self.qgraph.weights[w].size) for w in g.weights))
        if self.kind == "bops":
            return float(g.macs * (c.w if g.weights else c.a) * c.a)
        raise KeyError(self.kind)

    def plan_cost(self, choices: dict[str, Candidate]) -> float:
        return sum(self.group_cost(self.qgraph.groups[g], c) for g, c in choices.items())

    def limit(self, budget: Budget) -> float:
        """The budget expressed in this model's additive cost units."""
        if budget.kind == "avg-bits":
            return budget.value * self.total_params
        if budget.kind == "size-mb":
            return budget.value * 1e6 - self.other_bytes
        if budget.kind == "bops":
            ref = {g: Candidate(self.reference.w, self.reference.a) for g in self.qgraph.groups}
            return budget.value * self.plan_cost(ref)
        raise KeyError(budget.kind)

    def in_budget_units(self, cost: float, budget: Budget) -> float:
        """Inverse of limit(): a plan cost as the value a user would write in the budget."""
        if budget.kind == "avg-bits":
            return cost / self.total_params if self.total_params else 0.0
        if budget.kind == "size-mb":
            return (cost + self.other_bytes) / 1e6
        if budget.kind == "bops":
            ref = {g: Candidate(self.reference.w, self.reference.a) for g in self.qgraph.groups}
            return cost / self.plan_cost(ref)
        raise KeyError(budget.kind)
