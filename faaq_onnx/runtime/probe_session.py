"""Runs the sensitivity probe graph: one session, configurations fed as data."""

from __future__ import annotations

import numpy as np
import onnx

from faaq_onnx.analysis.probe import disabled_params, param_name
from faaq_onnx.runtime.runner import channel_means, run_all
from faaq_onnx.runtime.session import make_session


class ProbeSession:
    def __init__(self, probe: onnx.ModelProto, inputs: dict[str, np.ndarray], acts: list[str],
                 batch_size: int = 32, threads: int | None = None) -> None:
        self.session = make_session(probe, opt_level="extended", threads=threads)
        self.inputs = inputs
        self.batch_size = batch_size
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.defaults = {param_name(a): disabled_params() for a in acts}

    def run(self, weights: dict[str, np.ndarray] | None = None,
            act_params: dict[str, np.ndarray] | None = None, outputs: list[str] | None = None,
            inputs: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """Outputs (default: the model's) on the probe inputs under one quantization configuration."""
        feeds = dict(self.defaults)
        for a, p in (act_params or {}).items():
            feeds[param_name(a)] = p
        feeds.update(weights or {})
        return run_all(self.session, self.inputs if inputs is None else inputs, self.batch_size,
                       outputs or self.output_names, extra_feeds=feeds)

    def channel_means(self, weights: dict[str, np.ndarray], act_params: dict[str, np.ndarray],
                      outputs: list[str], axis: int = 1) -> list[np.ndarray]:
        """Per-channel means of `outputs` over the probe inputs, batch by batch."""
        feeds = {**self.defaults, **{param_name(a): p for a, p in act_params.items()}, **weights}
        return channel_means(self.session, self.inputs, self.batch_size, outputs, axis, extra_feeds=feeds)
