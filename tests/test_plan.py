"""faaq_onnx.plan: bits per weight and activation, the saved form, ORT's TensorQuantOverrides, and
the check that a plan fits a model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from faaq_onnx.config import FLOAT, Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import ActivationQuantizer, QuantizerGraph, QuantizerGroup, WeightQuantizer
from faaq_onnx.plan import BitPlan, choices_key

QG = QuantizerGraph(
    weights={
        "w1": WeightQuantizer("w1", ["c1"], "Conv", (4, 2, 3, 3), 0, 1, 10),
        "w2": WeightQuantizer("w2", ["fc"], "Gemm", (3, 36), None, 1, 10),
    },
    activations={
        "act:x": ActivationQuantizer("act:x", ["x"], ["x"]),
        "act:h": ActivationQuantizer("act:h", ["h", "h_relu"], ["h"]),
    },
    groups={
        "g:c1": QuantizerGroup("g:c1", "conv", ["c1"], ["w1"], ["act:x"], 10, 72),
        "g:fc": QuantizerGroup("g:fc", "gemm", ["fc"], ["w2"], ["act:h"], 10, 108),
        "g:pool": QuantizerGroup("g:pool", "pool", ["p"], [], [], 0, 0),
    },
)


def plan(c1="w4a8", fc="w8a16", pool="w8a8"):
    return BitPlan(
        {"g:c1": Candidate.parse(c1), "g:fc": Candidate.parse(fc), "g:pool": Candidate.parse(pool)}
    )


def test_bits_per_weight_and_activation():
    p = plan(fc="float")
    assert p.weight_bits(QG) == {"w1": 4, "w2": FLOAT}
    assert p.weight_bits(QG, quantized_only=True) == {"w1": 4}
    assert p.act_bits(QG) == {"act:x": 8, "act:h": FLOAT}
    assert p.act_bits(QG, quantized_only=True) == {"act:x": 8}
    assert plan().avg_weight_bits(QG) == pytest.approx((4 * 72 + 8 * 108) / 180)
    empty = QuantizerGraph({}, {}, {"g": QuantizerGroup("g", "pool", [], [], [], 0, 0)})
    assert BitPlan({"g": Candidate(8, 8)}).avg_weight_bits(empty) == 0.0
    assert choices_key({"b": Candidate(4, 8), "a": Candidate(8, 8)}) == (
        ("a", "w8a8"),
        ("b", "w4a8"),
    )


def test_save_and_load_round_trip(tmp_path):
    p = plan()
    p.meta = {"allocator": "knapsack"}
    p.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text()) == {
        "choices": {"g:c1": "w4a8", "g:fc": "w8a16", "g:pool": "w8a8"},
        "meta": {"allocator": "knapsack"},
    }
    back = BitPlan.load(tmp_path / "p.json")
    assert back.choices == p.choices and back.meta == p.meta
    (tmp_path / "no_meta.json").write_text('{"choices": {"g": "w8a8"}}')
    assert BitPlan.load(tmp_path / "no_meta.json").meta == {}


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(FaaqError) as e:
        BitPlan.load(tmp_path / "missing.json")
    assert str(e.value) == f"plan file not found: {tmp_path / 'missing.json'}"
    for text, kind in (("{", "JSONDecodeError"), ('{"x": 1}', "KeyError"), ("[1]", "TypeError")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(FaaqError) as e:
            BitPlan.load(tmp_path / "bad.json")
        assert str(e.value).startswith(f"{tmp_path / 'bad.json'} is not a faaq bit plan ({kind}: ")


def test_tensor_quant_overrides():
    cfg = SimpleNamespace(
        symmetric_weights=lambda bits: True, act_symmetric=False, weight_granularity="per-channel"
    )
    got = plan(c1="w3a8", fc="w8a16").tensor_quant_overrides(QG, cfg)
    assert got == {
        "w1": [{"quant_type": "QInt4", "symmetric": True, "axis": 0}],
        "x": [{"quant_type": "QUInt8"}],
        "w2": [{"quant_type": "QInt8", "symmetric": True}],  # no channel axis: per tensor
        "h": [{"quant_type": "QUInt16"}],
        "h_relu": [{"quant_type": "QUInt16"}],
        "_faaq_effective_bits": {"w1": 3, "x": 8, "w2": 8, "h": 16, "h_relu": 16},
    }
    cfg = SimpleNamespace(
        symmetric_weights=lambda bits: False, act_symmetric=True, weight_granularity="per-tensor"
    )
    got = plan(c1="w5a4", fc="float").tensor_quant_overrides(QG, cfg)
    assert got == {
        "w1": [{"quant_type": "QUInt8", "symmetric": False}],
        "x": [{"quant_type": "QInt8"}],
        "_faaq_effective_bits": {"w1": 5, "x": 4},
    }
    # the default grids: asymmetric up to 6 bits, symmetric from 7
    got = plan(c1="w4a8", fc="w8a8").tensor_quant_overrides(QG, QuantConfig())
    assert got["w1"] == [{"quant_type": "QUInt4", "symmetric": False, "axis": 0}]
    assert got["w2"] == [{"quant_type": "QInt8", "symmetric": True}]
    weight_only = plan(c1="w4", fc="w16a16").tensor_quant_overrides(QG, cfg)
    assert "x" not in weight_only and weight_only["w2"] == [
        {"quant_type": "QUInt16", "symmetric": False}
    ]


def test_a_plan_must_name_exactly_the_models_groups():
    plan().check_against(QG)
    short = BitPlan({"g:c1": Candidate(8, 8)})
    with pytest.raises(FaaqError) as e:
        short.check_against(QG)
    assert str(e.value) == (
        "the plan does not match this model: 2 group(s) missing (e.g. g:fc), 0 unknown"
    )
    extra = plan()
    extra.choices["g:zz"] = Candidate(8, 8)
    extra.choices["g:aa"] = Candidate(8, 8)
    with pytest.raises(FaaqError) as e:
        extra.check_against(QG)
    assert str(e.value) == (
        "the plan does not match this model: 0 group(s) missing, 2 unknown (e.g. g:aa)"
    )
