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


def make(optimize=("bias-correction",), auto=False, samples=17, reduce_range=False, shapes=()):
    stages = []

    @contextlib.contextmanager
    def stage_cm(name):
        stages.append(name)
        yield

    weights = {
        f"w{i}": SimpleNamespace(op_type="Conv", shape=shape) for i, shape in enumerate(shapes)
    }
    comp = SimpleNamespace(
        model=None,
        qgraph=SimpleNamespace(weights=weights),
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


def test_auto_corrects_only_plans_with_weights_below_8_bits(corrections, measured):
    opt, comp, stages = make(auto=True)
    assert opt.bias_overrides(plan(8, 8)) == {} and corrections == []
    assert opt.bias_overrides(plan(8, 4)) == {"b": 1}
    assert corrections == [(comp, choices_key(plan(8, 4).choices), 17)]
    assert stages == ["bias_correction", "bias_correction_check"]


DEPTHWISE, DENSE, ONE_BY_ONE = (32, 1, 3, 3), (32, 16, 3, 3), (32, 1, 1, 1)


@pytest.mark.parametrize(
    "reduce_range, shapes, corrected",
    [
        (True, (DENSE, DEPTHWISE), True),  # 8-bit weights on a 7-bit grid, depthwise convs
        (True, (DENSE, ONE_BY_ONE), False),  # no depthwise conv (a 1x1 with one input channel)
        (False, (DENSE, DEPTHWISE), False),  # a full 8-bit grid (VNNI, GPU, --reduce-range off)
    ],
)
def test_auto_corrects_8_bit_weights_on_a_7_bit_grid_in_depthwise_networks(
    corrections, measured, reduce_range, shapes, corrected
):
    opt, _, _ = make(auto=True, reduce_range=reduce_range, shapes=shapes)
    assert bool(opt.bias_overrides(plan(8, 8))) is corrected
    assert opt.bias_overrides(BitPlan({"g": Candidate(32, 32)})) == {}  # float: nothing to fix
    assert opt.bias_overrides(plan(8, 4)) != {}  # below 8 bits: always


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


@pytest.fixture
def measured(monkeypatch):
    calls = []

    def fake(comp, plan, corrected):
        calls.append(choices_key(plan.choices))
        return corrected, {"kept": "all"}

    monkeypatch.setattr(stage, "measure_bias_variants", fake)
    return calls


def test_auto_measures_its_corrections_once_per_plan(corrections, measured):
    """Every plan auto corrects, at 8-bit activations too: matching channel means can cost output
    fidelity there as well (EfficientNet-Lite0's avg-bits=4.5 plan, KL 0.044 -> 0.270)."""
    opt, _, stages = make(auto=True)
    a8 = plan(4, 8)
    assert opt.bias_overrides(a8) == {"b": 1} and opt.bias_check(a8) == {"kept": "all"}
    a4 = BitPlan({"g0": Candidate(4, 4), "g1": Candidate(8, 8)})
    assert opt.bias_overrides(a4) == {"b": 2} and opt.bias_check(a4) == {"kept": "all"}
    assert opt.bias_overrides(a4) == {"b": 2} and opt.bias_overrides(a8) == {"b": 1}
    assert measured == [choices_key(a8.choices), choices_key(a4.choices)]
    assert stages == [
        "bias_correction",
        "bias_correction_check",
        "bias_correction",
        "bias_correction_check",
    ]
    explicit, _, _ = make(auto=False)  # asked for by name: every correction is applied, unmeasured
    assert explicit.bias_overrides(a4) != {} and len(measured) == 2


def test_bias_variants_are_measured_on_the_emitted_models(tiny_cnn, cnn_calib):
    """Real ORT runs: corrections that wreck the output are dropped, and each variant's figure
    is the SQNR of the plan's emitted model with those biases against the model given."""
    import numpy as np
    import onnxruntime as ort

    from faaq_onnx.analysis.metrics import output_errors, output_metrics
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.graph import const_array
    from faaq_onnx.pipeline import Compilation

    comp = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)
    p = comp.uniform("w4a4")
    biases = {wq.bias for wq in comp.qgraph.weights.values() if wq.bias}
    assert biases
    init = comp.model.graph.initializers
    wrecked = {b: const_array(init[b]).astype(np.float32) + 100.0 for b in biases}
    kept, check = stage.measure_bias_variants(comp, p, wrecked)
    assert kept == {} and check["kept"] == "none" and check["samples"] == 48
    assert check["sqnr_db"]["all"] < check["sqnr_db"]["none"] - 20
    inputs = {k: v[: stage.BIAS_CHECK_SAMPLES] for k, v in comp.inputs.items()}

    def run(model):
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return sess.run(None, inputs)

    plain, _ = comp.build(p, bias_corrected=False)
    none = output_metrics(*output_errors(run(str(tiny_cnn)), run(plain.SerializeToString())))
    assert check["sqnr_db"]["none"] == pytest.approx(none["sqnr_db"], abs=1e-4)
    same = {b: const_array(init[b]).astype(np.float32) for b in biases}  # a no-op correction
    _, check = stage.measure_bias_variants(comp, p, same)
    assert check["sqnr_db"]["all"] == pytest.approx(check["sqnr_db"]["none"])
    assert check["kept"] == "all"  # a tie keeps the corrections
