"""QuantConfig: what --optimize auto and --effort resolve to."""

from __future__ import annotations

import pytest

from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError


@pytest.mark.parametrize(
    "scheme, effort, optimize, inputs, iters, qdrop",
    [
        ("w4a8", "fast", ("gptq",), "float", 1000, 0.0),
        ("w4a8", "default", ("gptq", "bias-correction"), "quantized", 1000, 0.0),
        ("w4a8", "best", ("adaround", "bias-correction"), "quantized", 2000, 0.0),
        ("w4a4", "best", ("brecq", "bias-correction"), "quantized", 2000, 0.5),
    ],
)
def test_effort_maps_auto_to_its_settings(scheme, effort, optimize, inputs, iters, qdrop):
    c = QuantConfig(scheme=scheme, optimize="auto", effort=effort)
    assert (c.optimize, c.optimize_inputs, c.optimize_iters, c.qdrop) == (
        optimize,
        inputs,
        iters,
        qdrop,
    )
    assert c.optimize_auto


def test_an_explicit_rounding_optimizer_wins_over_effort():
    c = QuantConfig(scheme="w4a8", optimize="auto,adaround", effort="best")
    assert (c.optimize, c.optimize_iters, c.optimize_auto) == (("adaround",), 1000, False)
    c = QuantConfig(scheme="w4a8", optimize="auto,cle", effort="best", optimize_iters=300)
    assert c.optimize == ("cle", "adaround", "bias-correction") and c.optimize_iters == 300


def test_an_unknown_effort_is_one_clear_error():
    with pytest.raises(FaaqError, match="unknown --effort 'max'"):
        QuantConfig(scheme="w4a8", optimize="auto", effort="max")
