"""Runs the sensitivity probe graph: one session, configurations fed as data."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from faaq_onnx.analysis.probe import probe_feeds
from faaq_onnx.graph import prefix_model
from faaq_onnx.runtime.runner import channel_means, run_all
from faaq_onnx.runtime.session import make_session


class ProbeSession:
    """One session over the probe graph. With prefix=True each run builds (and keeps, until
    other outputs are asked for) a session of only the nodes its outputs depend on: passes
    that take one layer's output at a time, in graph order, then pay about half the model per
    layer instead of all of it."""

    def __init__(
        self,
        probe: onnx.ModelProto,
        inputs: dict[str, np.ndarray],
        acts: list[str],
        batch_size: int = 32,
        threads: int | None = None,
        prefix: bool = False,
    ) -> None:
        self.probe, self.threads, self.prefix = probe, threads, prefix
        self._full: ort.InferenceSession | None = None
        self._part: tuple[tuple, ort.InferenceSession] | None = None
        self.inputs = inputs
        self.batch_size = batch_size
        self.output_names = [o.name for o in probe.graph.output]
        self.acts = list(acts)  # their quantizers are off unless a run's act_params set them
        if not prefix:
            self._full = make_session(probe, opt_level="extended", threads=threads)

    @property
    def session(self) -> ort.InferenceSession:
        if self._full is None:
            self._full = make_session(self.probe, opt_level="extended", threads=self.threads)
        return self._full

    def _session_for(self, outputs: list[str] | None) -> ort.InferenceSession:
        if not self.prefix or not outputs:
            return self.session
        key = tuple(outputs)
        if self._part is None or self._part[0] != key:
            self._part = None  # the last one's memory goes before the next is built
            self._part = (
                key,
                make_session(
                    prefix_model(self.probe, outputs), opt_level="extended", threads=self.threads
                ),
            )
        return self._part[1]

    def feed_values(self, weights=None, act_params=None) -> dict[str, np.ndarray]:
        """Everything but the samples that a run under this configuration is fed."""
        return probe_feeds(self.acts, weights, act_params)

    def _feeds(self, session, weights, act_params, inputs):
        feeds = self.feed_values(weights, act_params)
        names = {i.name for i in session.get_inputs() + session.get_overridable_initializers()}
        data = self.inputs if inputs is None else inputs
        return (
            {k: v for k, v in data.items() if k in names},
            {k: v for k, v in feeds.items() if k in names},
        )

    def run(
        self,
        weights: dict[str, np.ndarray] | None = None,
        act_params: dict[str, np.ndarray] | None = None,
        outputs: list[str] | None = None,
        inputs: dict[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Outputs (default: the model's) on the probe inputs under one quantization configuration."""
        session = self._session_for(outputs)
        data, feeds = self._feeds(session, weights, act_params, inputs)
        return run_all(
            session, data, self.batch_size, outputs or self.output_names, extra_feeds=feeds
        )

    def channel_means(
        self,
        weights: dict[str, np.ndarray],
        act_params: dict[str, np.ndarray],
        outputs: list[str],
        axis: int = 1,
    ) -> list[np.ndarray]:
        """Per-channel means of `outputs` over the probe inputs, batch by batch."""
        session = self._session_for(outputs)
        data, feeds = self._feeds(session, weights, act_params, None)
        return channel_means(session, data, self.batch_size, outputs, axis, extra_feeds=feeds)
