"""ConfigFeeds keeps each weight's dequantized values while its QuantizedWeight stays the same,
and feeds biases rounded as the emitted model stores them."""

import numpy as np
import pytest

import faaq_onnx.analysis.config_feeds as config_feeds
from faaq_onnx.analysis.config_feeds import ConfigFeeds
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation


@pytest.fixture
def comp(tiny_cnn, cnn_calib):
    return Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)


def _feeds(comp):
    return ConfigFeeds(comp.qgraph, comp.calibration, comp.weights, comp.config)


def test_the_same_weight_feeds_the_same_read_only_values_until_it_is_rounded_again(comp):
    feeds = _feeds(comp)
    plan = comp.uniform("w4a8").choices
    first, _ = feeds.feeds(plan)
    first = {w: v for w, v in first.items() if w in comp.qgraph.weights}
    again, _ = feeds.feeds(plan)
    name = next(iter(first))
    assert all(again[w] is first[w] for w in first)  # not dequantized a second time
    assert not first[name].flags.writeable  # a caller cannot change what the next one reads
    np.testing.assert_array_equal(first[name], comp.weights.get(name, 4).dequantized())
    # a weight rounded again (GPTQ, AdaRound put a new QuantizedWeight) feeds its new values
    qw = comp.weights.get(name, 4)
    codes = np.clip(qw.q.astype(np.int64) + 1, qw.fmt.qmin, qw.fmt.qmax)
    comp.weights.put(name, 4, qw.with_codes(codes, "gptq"))
    after, _ = feeds.feeds(plan)
    assert after[name] is not first[name]
    np.testing.assert_array_equal(after[name], comp.weights.get(name, 4).dequantized())
    assert all(after[w] is first[w] for w in first if w != name)


def test_values_past_the_byte_cap_are_dequantized_per_call(comp, monkeypatch):
    plan = comp.uniform("w4a8").choices
    weights = comp.qgraph.weights
    sizes = {w: v.nbytes for w, v in _feeds(comp).feeds(plan)[0].items() if w in weights}
    cap = min(sizes.values())
    monkeypatch.setattr(config_feeds, "FEED_CACHE_BYTES", cap)
    feeds = _feeds(comp)
    first, _ = feeds.feeds(plan)
    first = {w: v for w, v in first.items() if w in weights}
    again, _ = feeds.feeds(plan)
    kept = [w for w in first if again[w] is first[w]]
    assert 1 <= len(kept) < len(first)
    assert sum(sizes[w] for w in kept) <= cap
    for w in first:
        np.testing.assert_array_equal(again[w], first[w])


def _emitted_float_outputs(model, inputs):
    # ORT with every optimization off computes the QDQ model in float, as the probe does
    from faaq_onnx.runtime.runner import run_all
    from faaq_onnx.runtime.session import make_session

    session = make_session(model, opt_level="disable")
    return run_all(session, inputs, 16, [o.name for o in session.get_outputs()])


@pytest.mark.parametrize("scheme", ["w4a8", "w8a8", "w4a4"])
def test_the_probe_computes_what_the_emitted_model_computes_biases_included(comp, scheme):
    """Biases are int32 at s_x · s_w in the emitted model; fed as float, the probe measured
    PP-OCRv4's recognizer 0.8 dB away from the model faaq wrote (W4A8)."""
    plan = comp.uniform(scheme)
    steps = comp.prober.bias_steps(plan.choices)
    assert steps  # every conv of the tiny CNN takes an int32 bias
    model, summary = comp.build(plan, bias_corrected=False)
    assert sorted(summary.int32_biases) == sorted(steps)
    emitted = _emitted_float_outputs(model, comp.prober.session.inputs)
    probed = comp.prober.outputs(plan.choices)
    for e, p in zip(emitted, probed):
        np.testing.assert_allclose(p, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))
    # and the rounding is not negligible here: float biases land measurably elsewhere
    weights, acts = comp.prober.feeds(plan.choices)
    float_biases = {b: comp.weights.float_initializer(b) for b in steps}
    unrounded = comp.prober.session.run({**weights, **float_biases}, acts)
    assert max(float(np.abs(u - e).max()) for u, e in zip(unrounded, emitted)) > 10 * max(
        float(np.abs(p - e).max()) for p, e in zip(probed, emitted)
    )


def test_corrected_biases_are_measured_as_the_emitted_model_rounds_them(comp):
    from faaq_onnx.optimize.bias_correction import bias_corrections

    plan = comp.uniform("w4a8")
    corrected = bias_corrections(comp, plan)
    assert corrected
    model, _ = comp.emission.build(plan, biases=corrected)
    emitted = _emitted_float_outputs(model, comp.prober.session.inputs)
    weights, acts = comp.prober.feeds(plan.choices, corrected)
    probed = comp.prober.session.run(weights, acts)
    for e, p in zip(emitted, probed):
        np.testing.assert_allclose(p, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))


def test_a_widened_dead_channel_is_measured_as_it_is_emitted(tmp_path):
    """A bias too large for int32 at s_x · s_w widens its channel's weight scale in the emitted
    model (quant.bias.widened_for_bias); the probe feeds that widened weight and its bias."""
    import onnx

    from tests.conftest import build_dead_channel_conv

    onnx.save(build_dead_channel_conv(head=True), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    calib = {"x": rng.standard_normal((16, 3, 8, 8)).astype(np.float32)}
    comp = Compilation(str(tmp_path / "m.onnx"), calib, QuantConfig(progress=False), 21)
    plan = comp.uniform("w8a8")
    (layer,) = comp.prober.int32_layers(plan.choices).values()
    assert layer.weight is not comp.weights.get("w", 8)  # widened
    assert layer.weight.scale[2] > 100 * comp.weights.get("w", 8).scale[2]
    model, _ = comp.build(plan, bias_corrected=False)
    emitted = _emitted_float_outputs(model, comp.prober.session.inputs)
    probed = comp.prober.outputs(plan.choices)
    np.testing.assert_allclose(probed[0], emitted[0], rtol=1e-4, atol=1e-4)
