"""Budgets a user can give, and what each candidate costs against them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from faaq_onnx.config import FLOAT, Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.weights import OFFSET_MAX_BITS, symmetric_at

KINDS = {
    "avg-bits": "average weight bits over quantized weights: bits as stored (container width, the default) "
    "or effective bits (write avg-bits=4@effective)",
    "size-mb": "model size in MB as written (packed weights, scales and zero points, float leftovers)",
    "bops": "bit operations relative to a reference scheme (default W8A8; write bops=0.25@w8a16)",
    "latency": "latency relative to the all-W8A8 model, from measured kernel costs on --ep (e.g. latency=1.1)",
    "latency-ms": "latency in milliseconds per run at --latency-batch, from measured kernel costs on --ep",
    "sqnr-db": "floor on the output SQNR in dB, measured on the emitted model",
    "max-drop": "maximum top-1 drop in percentage points (needs labeled data)",
}
FLOORS = ("sqnr-db", "max-drop")
LATENCY = ("latency", "latency-ms")
BIT_BASES = ("stored", "effective")


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float
    reference: Candidate = Candidate(8, 8)
    bits: str = "stored"  # avg-bits only: count stored (container) or effective bits
    confidence: float | None = (
        None  # floors only: checked on a bound at this confidence (None: 0.95)
    )

    @classmethod
    def parse(cls, text: str) -> Budget:
        m = re.fullmatch(
            r"\s*([a-z-]+)\s*=\s*([0-9.eE+-]+)\s*(?:@\s*([a-z0-9.]+))?\s*", text.lower()
        )
        if not m or m.group(1) not in KINDS:
            raise FaaqError(
                f"cannot read budget {text!r}: write KIND=VALUE with KIND one of {', '.join(KINDS)}"
            )
        kind, suffix = m.group(1), m.group(3)
        try:
            value = float(m.group(2))
        except ValueError:
            raise FaaqError(f"--budget {kind}: {m.group(2)!r} is not a number") from None
        if not math.isfinite(value):
            raise FaaqError(f"--budget {kind} must be a finite number, got {m.group(2)}")
        if kind == "max-drop":  # 0: no drop at all, a valid (strict) floor
            if value < 0:
                raise FaaqError(
                    f"--budget max-drop must be >= 0 (percentage points of top-1), got {value:g}"
                )
        elif value <= 0:
            raise FaaqError(f"--budget {kind} must be > 0, got {value:g}")
        ref, bits, confidence = Candidate(8, 8), "stored", None
        if suffix is not None:
            if kind == "bops":
                ref = Candidate.parse(suffix)
            elif kind == "avg-bits" and suffix in BIT_BASES:
                bits = suffix
            elif (
                kind in FLOORS and re.fullmatch(r"0?\.[0-9]+", suffix) and 0.5 <= float(suffix) < 1
            ):
                confidence = float(suffix)
            else:
                allowed = (
                    "@w8a16 (a reference scheme)"
                    if kind == "bops"
                    else (
                        "@stored or @effective"
                        if kind == "avg-bits"
                        else "@0.95 (the confidence of the bound it is checked on, in [0.5, 1))"
                        if kind in FLOORS
                        else "nothing"
                    )
                )
                raise FaaqError(f"cannot read budget {text!r}: after {kind}= write {allowed}")
        return cls(kind, value, ref, bits, confidence)

    @property
    def is_floor(self) -> bool:
        return self.kind in FLOORS

    def __str__(self) -> str:
        suffix = ""
        if self.kind == "bops" and self.reference != Candidate(8, 8):
            suffix = f"@{self.reference}"
        elif self.kind == "avg-bits" and self.bits != "stored":
            suffix = f"@{self.bits}"
        elif self.kind in FLOORS and self.confidence is not None:
            suffix = f"@{self.confidence:g}"
        return f"{self.kind}={self.value:g}{suffix}"


class CostModel:
    """Additive cost of a plan: sum over groups of cost(group, candidate).

    `min_container` is the smallest weight container the emitter will use (2 with
    int2 storage, else 4), so stored bits and bytes are what lands on disk.
    """

    def __init__(
        self,
        qgraph: QuantizerGraph,
        kind: str,
        other_bytes: int = 0,
        reference: Candidate = Candidate(8, 8),
        symmetric_weights: bool | None = True,
        bits: str = "stored",
        min_container: int = 4,
        granularity: str = "per-channel",
        block_size: int = 32,
        latency=None,
    ) -> None:
        self.qgraph, self.kind, self.other_bytes, self.reference = (
            qgraph,
            kind,
            other_bytes,
            reference,
        )
        self.symmetric, self.bits, self.min_container = symmetric_weights, bits, min_container
        self.granularity, self.block_size, self.latency = granularity, block_size, latency
        self.total_params = sum(g.weight_params for g in qgraph.groups.values())
        if kind in LATENCY and latency is None:
            raise FaaqError("a latency budget needs measured kernel costs (the latency table)")

    def weight_format(self, bits: int) -> IntFormat | None:
        """None for float weights (32 bits, 4 bytes each)."""
        if bits >= FLOAT:
            return None
        return IntFormat(bits, symmetric_at(bits, self.symmetric), self.min_container)

    def group_cost(self, g: QuantizerGroup, c: Candidate) -> float:
        if self.kind == "avg-bits":
            fmt = self.weight_format(c.w)
            per = c.w if self.bits == "effective" or fmt is None else fmt.container_bits
            return float(per * g.weight_params)
        if self.kind == "size-mb":
            return float(sum(self.weight_bytes(w, c.w) for w in g.weights))
        if self.kind == "bops":
            return float(g.macs * (c.w if g.weights else c.a) * c.a)
        if self.kind in LATENCY:
            return float(self.latency.cost(g.name, c))
        raise KeyError(self.kind)

    def weight_bytes(self, name: str, bits: int) -> int:
        """Packed integers plus float scales (and packed zero points when asymmetric)."""
        wq = self.qgraph.weights[name]
        fmt = self.weight_format(bits)
        if fmt is None:
            return 4 * wq.size
        if self.granularity == "block" and wq.block_axis is not None:
            n_scales = -(-wq.size // self.block_size)
        elif self.granularity in ("per-channel", "block") and wq.channel_axis is not None:
            n_scales = wq.shape[wq.channel_axis]
        else:
            n_scales = 1
        # zero points: packed, or one int8 offset each where emitted as offset codes
        offsets = n_scales if bits <= OFFSET_MAX_BITS else 0
        zp = 0 if fmt.signed else max(fmt.stored_bytes(n_scales), offsets)
        return fmt.stored_bytes(wq.size) + 4 * n_scales + zp

    def plan_cost(self, choices: dict[str, Candidate]) -> float:
        return sum(self.group_cost(self.qgraph.groups[g], c) for g, c in choices.items())

    def _reference_cost(self) -> float:
        return self.plan_cost(
            {g: Candidate(self.reference.w, self.reference.a) for g in self.qgraph.groups}
        )

    def _latency_overhead_us(self) -> float:
        """Time outside every group (framework, ops nobody owns), from the W8A8 profile."""
        return self.latency.plan_ms({}, Candidate(8, 8)) * 1e3

    def limit(self, budget: Budget) -> float:
        """The budget expressed in this model's additive cost units."""
        if budget.kind == "avg-bits":
            return budget.value * self.total_params
        if budget.kind == "size-mb":
            return budget.value * 1e6 - self.other_bytes
        if budget.kind == "bops":
            return budget.value * self._reference_cost()
        if budget.kind == "latency":
            ref_us = (
                self.latency.plan_ms(
                    {g: Candidate(8, 8) for g in self.qgraph.groups}, Candidate(8, 8)
                )
                * 1e3
            )
            return budget.value * ref_us - self._latency_overhead_us()
        if budget.kind == "latency-ms":
            return budget.value * 1e3 - self._latency_overhead_us()
        raise KeyError(budget.kind)

    def in_budget_units(self, cost: float, budget: Budget) -> float:
        """Inverse of limit(): a plan cost as the value a user would write in the budget."""
        if budget.kind == "avg-bits":
            return cost / self.total_params if self.total_params else 0.0
        if budget.kind == "size-mb":
            return (cost + self.other_bytes) / 1e6
        if budget.kind == "bops":
            return cost / self._reference_cost()
        if budget.kind == "latency":
            ref_us = (
                self.latency.plan_ms(
                    {g: Candidate(8, 8) for g in self.qgraph.groups}, Candidate(8, 8)
                )
                * 1e3
            )
            return (cost + self._latency_overhead_us()) / ref_us
        if budget.kind == "latency-ms":
            return (cost + self._latency_overhead_us()) / 1e3
        raise KeyError(budget.kind)
