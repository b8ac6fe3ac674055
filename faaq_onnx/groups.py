"""Quantizers and the groups that must share a bit width (seed 003 §3.4).

A *WeightQuantizer* quantizes one weight initializer. An *ActivationQuantizer* is one
scale shared by a set of tensors joined by pass-through ops (Relu, MaxPool, Reshape,
...) so integer kernels can run across them without requantizing. A *QuantizerGroup*
binds the weights of an op to the activations it reads: a candidate kernel (W4A8,
W8A8, ...) is chosen per group, so only valid weight/activation pairs exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class WeightQuantizer:
    name: str  # initializer name
    consumers: list[str]  # node names that read it
    op_type: str
    shape: tuple[int, ...]
    channel_axis: int | None  # output-channel axis, for per-channel scales
    block_axis: int | None  # reduction axis, for blocked scales
    macs: int  # MACs per sample of the consuming op(s)
    bias: str | None = None  # float bias initializer of the consumer, if any
    activation: str | None = None  # activation quantizer of the consumer's data input

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class ActivationQuantizer:
    name: str
    tensors: list[str]  # tensors that carry this one scale
    range_tensors: list[str]  # tensors whose values decide the range
    droppable: list[str] = field(
        default_factory=list
    )  # Relu/Clip nodes the quantizer's clamp replaces


@dataclass
class QuantizerGroup:
    name: str
    kind: str  # 'conv', 'gemm', 'matmul', 'attention', 'eltwise', 'pool', 'concat', 'output'
    ops: list[str]
    weights: list[str]
    activations: list[str]
    macs: int
    weight_params: int


@dataclass
class QuantizerGraph:
    """Everything discovery found: the objects `faaq inspect` prints."""

    weights: dict[str, WeightQuantizer]
    activations: dict[str, ActivationQuantizer]
    groups: dict[str, QuantizerGroup]
    skipped: list[str] = field(default_factory=list)  # ops seen but not quantized, with why
    # Add/Mul node -> the indices of its constant operands, quantized with its activations
    constants: dict[str, list[int]] = field(default_factory=dict)
    # ops ORT could run on an integer kernel that get no quantizer: node -> why (kernel report)
    left_float: dict[str, str] = field(default_factory=dict)

    def group_of_activation(self, act: str) -> str:
        for g in self.groups.values():
            if act in g.activations:
                return g.name
        raise KeyError(act)

    def edge_groups(self, node_order: list[str]) -> list[str]:
        """The groups of the first and the last weighted op in graph order (input and classifier)."""
        order = {n: i for i, n in enumerate(node_order)}
        weighted = [g for g in self.groups.values() if g.weights]
        if not weighted:
            return []
        first = min(weighted, key=lambda g: min(order.get(o, 0) for o in g.ops))
        last = max(weighted, key=lambda g: max(order.get(o, 0) for o in g.ops))
        return sorted({first.name, last.name})

    def to_dict(self) -> dict:
        return {
            "weights": {k: asdict(v) for k, v in self.weights.items()},
            "activations": {k: asdict(v) for k, v in self.activations.items()},
            "groups": {k: asdict(v) for k, v in self.groups.items()},
            "skipped": list(self.skipped),
            "constants": dict(self.constants),
            "left_float": dict(self.left_float),
        }
