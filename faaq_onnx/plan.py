"""BitPlan: which candidate kernel each quantizer group runs with.

A plan is plain data: saved as JSON, loaded back with `faaq quantize --plan`, and
checked against the model it is applied to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from faaq_onnx.config import FLOAT, Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph


def choices_key(choices: dict[str, Candidate]) -> tuple:
    """A hashable key of a plan's choices (memos of per-plan measurements)."""
    return tuple(sorted((g, str(c)) for g, c in choices.items()))


@dataclass
class BitPlan:
    choices: dict[str, Candidate]
    meta: dict = field(default_factory=dict)

    @classmethod
    def uniform(cls, qgraph: QuantizerGraph, cand: Candidate) -> BitPlan:
        return cls({g: cand for g in qgraph.groups}, {"kind": "uniform", "scheme": str(cand)})

    def weight_bits(self, qgraph: QuantizerGraph, quantized_only: bool = False) -> dict[str, int]:
        """Bits per weight (32: left float; left out with quantized_only)."""
        out = {w: self.choices[g.name].w for g in qgraph.groups.values() for w in g.weights}
        return {k: v for k, v in out.items() if v < FLOAT} if quantized_only else out

    def act_bits(self, qgraph: QuantizerGraph, quantized_only: bool = False) -> dict[str, int]:
        out = {a: self.choices[g.name].a for g in qgraph.groups.values() for a in g.activations}
        return {k: v for k, v in out.items() if v < FLOAT} if quantized_only else out

    def avg_weight_bits(self, qgraph: QuantizerGraph) -> float:
        num = sum(self.choices[g.name].w * g.weight_params for g in qgraph.groups.values())
        den = sum(g.weight_params for g in qgraph.groups.values())
        return num / den if den else 0.0

    def to_dict(self) -> dict:
        return {"choices": {k: str(v) for k, v in self.choices.items()}, "meta": self.meta}

    def save(self, path: str | Path) -> None:
        from faaq_onnx.outputs import write_json_atomic

        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> BitPlan:
        try:
            data = json.loads(Path(path).read_text())
            return cls(
                {k: Candidate.parse(v) for k, v in data["choices"].items()}, data.get("meta", {})
            )
        except FileNotFoundError:
            raise FaaqError(f"plan file not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise FaaqError(
                f"{path} is not a faaq bit plan ({type(exc).__name__}: {exc})"
            ) from None

    def tensor_quant_overrides(self, qgraph: QuantizerGraph, config) -> dict:
        """The plan as ONNX Runtime's TensorQuantOverrides (extra_options of quantize_static).

        Bit widths ORT has no QuantType for (2, 3, 5, 6, 7) are written as their
        container type, and listed under "_faaq_effective_bits" so nothing is hidden.
        """

        def qtype(bits: int, signed: bool) -> str:
            container = 4 if bits <= 4 else 8 if bits <= 8 else 16
            return f"Q{'' if signed else 'U'}Int{container}"

        overrides: dict = {}
        effective: dict = {}
        for g in qgraph.groups.values():
            c = self.choices[g.name]
            if c.is_float:
                continue
            for w in g.weights:
                wq = qgraph.weights[w]
                entry = {
                    "quant_type": qtype(c.w, config.symmetric_weights(c.w)),
                    "symmetric": config.symmetric_weights(c.w),
                }
                if config.weight_granularity != "per-tensor" and wq.channel_axis is not None:
                    entry["axis"] = wq.channel_axis
                overrides[w] = [entry]
                effective[w] = c.w
            for a in g.activations if c.a < FLOAT else []:
                act_bits = 8 if c.a <= 8 else 16
                for t in qgraph.activations[a].tensors:
                    overrides[t] = [{"quant_type": qtype(act_bits, config.act_symmetric)}]
                    effective[t] = c.a
        overrides["_faaq_effective_bits"] = effective
        return overrides

    def check_against(self, qgraph: QuantizerGraph) -> None:
        missing = sorted(set(qgraph.groups) - set(self.choices))
        extra = sorted(set(self.choices) - set(qgraph.groups))
        if missing or extra:
            raise FaaqError(
                f"the plan does not match this model: {len(missing)} group(s) missing"
                f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(extra)} unknown"
                f"{' (e.g. ' + extra[0] + ')' if extra else ''}"
            )
