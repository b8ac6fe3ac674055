"""stages/weights.py: when a plan's biases are corrected, from where, and once per plan."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from faaq_onnx.config import Candidate
from faaq_onnx.optimize import bias_correction
from faaq_onnx.plan import BitPlan, choices_key
from faaq_onnx.stages import weights as stage
from faaq_onnx.stages.weights import WeightOptimization


def make(optimize=("bias-correction",), auto=False, samples=17, reduce_range=False):
    stages = []

    @contextlib.contextmanager
    def stage_cm(name):
        stages.append(name)
        yield

    comp = SimpleNamespace(
        model=None,
        qgraph=None,
        config=SimpleNamespace(
            optimize=list(optimize),
            optimize_auto=auto,
            optimize_samples=samples,
            weights_reduce_range=reduce_range,
        ),
        stage=stage_cm,
    )
    return WeightOptimization(comp), comp, stages


@pytest.fixture
def corrections(monkeypatch):
    calls = []

    def fake(comp, plan, samples):
        calls.append((comp, choices_key(plan.choices), samples))
        return {"b": len(calls)}

    monkeypatch.setattr(bias_correction, "bias_corrections", fake)
    return calls


def plan(*ws):
    return BitPlan({f"g{i}": Candidate(w, 8) for i, w in enumerate(ws)})


def test_no_correction_unless_asked(corrections):
    opt, _, stages = make(optimize=("adaround",))
    assert opt.bias_overrides(plan(4, 8)) == {} and corrections == [] and stages == []


def test_auto_corrects_only_plans_with_weights_below_8_bits(corrections):
    opt, comp, stages = make(auto=True)
    assert opt.bias_overrides(plan(8, 8)) == {} and corrections == []
    assert opt.bias_overrides(plan(8, 4)) == {"b": 1}
    assert corrections == [(comp, choices_key(plan(8, 4).choices), 17)]
    assert stages == ["bias_correction"]


def test_auto_corrects_8_bit_weights_kept_to_a_7_bit_range(corrections):
    """reduce_range (ORT's int8 kernels without VNNI): 8-bit weights are on a 7-bit grid."""
    opt, _, _ = make(auto=True, reduce_range=True)
    assert opt.bias_overrides(plan(8, 8)) == {"b": 1}
    assert opt.bias_overrides(BitPlan({"g": Candidate(32, 32)})) == {}  # float: nothing to fix
    assert opt.bias_overrides(BitPlan({"g": Candidate(8, 16), "h": Candidate(16, 16)})) == {"b": 2}


def test_asked_explicitly_corrects_8_bit_plans_too_once_per_plan(corrections):
    opt, _, stages = make(auto=False)
    assert opt.bias_overrides(plan(8, 8)) == {"b": 1}
    assert opt.bias_overrides(plan(8, 8)) == {"b": 1}  # memoized
    assert opt.bias_overrides(plan(4, 8)) == {"b": 2}
    assert len(corrections) == 2 and stages == ["bias_correction"] * 2


def test_biases_corrected_during_the_rounding_pass_are_reused(corrections):
    opt, _, stages = make()
    p = plan(4, 4)
    opt.rounding.biases[choices_key(p.choices)] = {"b": "from gptq"}
    assert opt.bias_overrides(p) == {"b": "from gptq"}
    assert corrections == [] and stages == []


def test_quantized_weights_come_from_the_cache_in_the_weight_stage(monkeypatch):
    opt, _, stages = make()
    seen = []
    monkeypatch.setattr(
        stage, "quantize_weights", lambda cache, p: seen.append((cache, p)) or {"w": 1}
    )
    p = plan(4)
    assert opt.quantized(p) == {"w": 1}
    assert seen == [(opt.weights, p)] and stages == ["optimize_weights"]
