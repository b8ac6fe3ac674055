"""Top-1 of a plan on labeled data, measured in a probe session (the max-drop budget)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from faaq_onnx.plan import choices_key


def probe_accuracy(comp, labeled: tuple[np.ndarray, np.ndarray]) -> Callable[[dict | None], float]:
    """top-1 of a plan on labeled data through a second probe session (None = float)."""
    from faaq_onnx.analysis.probe import build_probe
    from faaq_onnx.runtime.probe_session import ProbeSession

    x, y = labeled
    name = next(iter(comp.inputs))
    session = ProbeSession(
        build_probe(comp.float_proto, comp.qgraph),
        {name: x.astype(np.float32)},
        list(comp.qgraph.activations),
        max(comp.config.batch_size, 64),
    )
    memo: dict = {}

    def accuracy(choices: dict | None) -> float:
        key = None if choices is None else choices_key(choices)
        if key not in memo:
            outs = session.run() if choices is None else session.run(*comp.prober.feeds(choices))
            memo[key] = float(np.mean(outs[0].reshape(len(y), -1).argmax(1) == y))
        return memo[key]

    return accuracy
