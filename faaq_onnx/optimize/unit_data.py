"""Inputs and targets of reconstruction units, taken from ONNX Runtime.

Targets are always the float model's outputs of the unit. Inputs are one of
config.OPTIMIZE_INPUTS: what the quantized model itself feeds the unit (`quantized`, as
AdaRound's asymmetric reconstruction and QDrop recommend: the probe graph with every unit
upstream already rounded, activations fake-quantized, so errors do not compound unseen);
the same with activations left float (`weights`: only the rounded weights upstream, what
AIMET's apply_adaround feeds, its activation quantizers still collecting statistics); or
the float model's (`float`); or `mixed`, QDrop's input drop (Wei et al. 2022): the `quantized`
inputs with each element replaced by the float model's at random during reconstruction
(reconstruct.MIX_FLOAT), so the rounding is fit to a neighbourhood of both. Only the
tensors one unit needs are kept, every sample (big ones in a file: runtime.spill).
"""

from __future__ import annotations

import numpy as np

from faaq_onnx.analysis.calibrate import tap_model
from faaq_onnx.analysis.probe import build_probe
from faaq_onnx.runtime.probe_session import ProbeSession
from faaq_onnx.runtime.runner import run_all
from faaq_onnx.runtime.segments import SegmentedRun
from faaq_onnx.runtime.session import make_session

# inputs modes in which a unit reads quantized activations (and int32-rounded biases)
QUANTIZED_ACTIVATION_MODES = ("quantized", "mixed")


class UnitData:
    def __init__(self, comp, tensors: list[str], samples: int, batch_size: int = 32) -> None:
        self.comp = comp
        inputs = {k: v[:samples] for k, v in comp.inputs.items()}
        self.inputs = inputs
        self.batch_size = batch_size
        self.float_session = make_session(tap_model(comp.float_proto, tensors), opt_level="basic")
        probe = build_probe(comp.float_proto, comp.qgraph)
        produced = {o for n in probe.graph.node for o in n.output}
        self.probe_name = {t: (f"{t}__fq" if f"{t}__fq" in produced else t) for t in tensors}
        self.probe = ProbeSession(
            probe, inputs, list(comp.qgraph.activations), batch_size, prefix=True
        )

    def float_tensors(self, names: list[str]) -> dict[str, np.ndarray]:
        """The float model's values of `names`; graph inputs are the feeds themselves (ORT
        cannot return an input as an output)."""
        computed = [n for n in names if n not in self.inputs]
        values = (
            run_all(self.float_session, self.inputs, self.batch_size, computed) if computed else []
        )
        outs = dict(zip(computed, values))
        return {n: (np.asarray(self.inputs[n]) if n in self.inputs else outs[n]) for n in names}

    def float_batches(self, names: list[str]):
        """The float model's values of `names`, one batch of samples at a time ({name: array}):
        one pass gives every layer its float inputs at once."""
        n = len(next(iter(self.inputs.values())))
        computed = [x for x in names if x not in self.inputs]
        for s in range(0, n, self.batch_size):
            chunk = {k: v[s : s + self.batch_size] for k, v in self.inputs.items()}
            outs = run_all(self.float_session, chunk, self.batch_size, computed) if computed else []
            values = dict(zip(computed, outs))
            values.update({x: chunk[x] for x in names if x in chunk})
            yield values

    def unit_inputs(self, names: list[str], choices, mode: str) -> dict[str, np.ndarray]:
        """The values of `names` a unit is reconstructed from, in one of config.OPTIMIZE_INPUTS."""
        if mode == "float":
            return self.float_tensors(names)
        return self.quantized_tensors(names, choices, activations=mode in ("quantized", "mixed"))

    def sequential_inputs(self, choices, mode: str):
        """A function giving `name` as unit_inputs would, for every sample, to a caller that asks
        for layer inputs in graph order and rounds each layer before asking past it: each call
        runs only the part of the model after the previous one (runtime.segments)."""
        return SequentialInputs(self, choices, mode in QUANTIZED_ACTIVATION_MODES)

    def float_sequence(self):
        """A function giving the float model's `name` for every sample, to a caller that asks in
        graph order (runtime.segments: each call runs only the part of the model after the
        previous one); `lazy` as SegmentedRun.get."""
        return self.float_run().get

    def float_run(self) -> SegmentedRun:
        """The SegmentedRun under float_sequence (for a caller that also watches tensors)."""
        return SegmentedRun(self.comp.float_proto, self.inputs, self.batch_size)

    def reconstruction_sequence(self, choices, mode: str):
        """What each unit is reconstructed from, for units asked in graph order, each rounded
        before the next is asked for: every call runs only the part of the float model (and of
        the quantized one) after the previous call (runtime.segments), not both whole models
        over every sample per unit."""
        return ReconstructionSequence(self, choices, mode)

    def quantized_tensors(
        self, names: list[str], choices, activations: bool = True
    ) -> dict[str, np.ndarray]:
        """`names` in the model that runs `choices`' weights, and its activation quantizers
        unless `activations` is False (they are then the probe's default: switched off)."""
        weights, acts = self.comp.feeds.feeds(choices, activations=activations)
        outs = self.probe.run(weights, acts, outputs=[self.probe_name[n] for n in names])
        return dict(zip(names, outs))


class SequentialInputs:
    """UnitData's tensors layer by layer (see UnitData.sequential_inputs): called with a tensor
    name, that tensor as a unit reads it (fake-quantized where the probe quantizes it). `run`
    is the SegmentedRun under it (raw tensors, shifts after a bias correction)."""

    def __init__(self, data: UnitData, choices, with_acts: bool) -> None:
        def feeds() -> dict[str, np.ndarray]:  # the weights as rounded so far
            weights, acts = data.comp.feeds.feeds(choices, activations=with_acts)
            return data.probe.feed_values(weights, acts)

        self.probe_name = data.probe_name
        self.run = SegmentedRun(data.probe.probe, data.inputs, data.batch_size, feeds=feeds)

    def __call__(self, name: str, lazy: bool = False):
        """`lazy`: a tensor kept in a file may come back as its SpilledArray (SegmentedRun.get)."""
        return self.run.get(self.probe_name.get(name, name), lazy=lazy)


class ReconstructionSequence:
    """A unit's inputs in one of OPTIMIZE_INPUTS, the float model's values of them where the mode
    is `mixed` (else None) and its float target, unit after unit in graph order (see
    UnitData.reconstruction_sequence)."""

    def __init__(self, data: UnitData, choices, mode: str) -> None:
        self.mode = mode
        self.float_get = data.float_sequence()
        self.layer_input = None if mode == "float" else data.sequential_inputs(choices, mode)

    def __call__(self, names: list[str], output: str):
        """(inputs, float inputs where mode is mixed else None, float target) of one unit. A
        tensor the run keeps in a file comes back as its SpilledArray: reconstruction reads the
        rows of each batch from it, so every sample is used whatever the tensors' size."""
        get = self.float_get
        fl = {n: get(n, lazy=True) for n in names} if self.mode in ("float", "mixed") else {}
        layer_input = self.layer_input
        x = fl if layer_input is None else {n: layer_input(n, lazy=True) for n in names}
        return x, (fl if self.mode == "mixed" else None), get(output, lazy=True)
