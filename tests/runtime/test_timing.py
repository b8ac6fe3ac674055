"""Interleaved timing: sessions must not spin and no model may always follow the same one."""

from __future__ import annotations

import numpy as np
import pytest

from faaq_onnx.runtime import timing
from faaq_onnx.runtime.session import make_session


def test_a_session_made_without_spinning_tells_ort_so(tiny_cnn):
    opts = make_session(tiny_cnn, spinning=False).get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = make_session(tiny_cnn).get_session_options()
    with pytest.raises(RuntimeError):  # not set: ORT's default (spinning) stands
        default.get_session_config_entry("session.intra_op.allow_spinning")


def test_interleaved_timing_shuffles_the_order_and_turns_spinning_off(monkeypatch):
    runs, made = [], []

    class FakeSession:
        def __init__(self, name):
            self.name = name

        def run(self, _outputs, _feeds):
            runs.append(self.name)

    def fake_make_session(model, **kw):
        made.append(kw)
        return FakeSession(model)

    monkeypatch.setattr(timing, "make_session", fake_make_session)
    ms = timing.interleaved_median_ms(["a", "b", "c", "d"], {"x": np.zeros(1)}, pairs=20, warmup=0)
    assert len(ms) == 4 and all(m >= 0 for m in ms)
    assert made and all(kw.get("spinning") is False for kw in made)
    rounds = [runs[i : i + 4] for i in range(0, len(runs), 4)]
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in rounds)  # each model once per round
    before_b = {r[r.index("b") - 1] for r in rounds if r.index("b") > 0}
    assert len(before_b) > 1  # "b" does not always follow the same model
