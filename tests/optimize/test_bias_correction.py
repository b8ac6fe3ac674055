import numpy as np
import pytest

from faaq_onnx.config import QuantConfig
from faaq_onnx.optimize.bias_correction import bias_corrections
from faaq_onnx.pipeline import Compilation
from tests.conftest import run_model


def test_bias_correction_removes_the_mean_output_shift(tiny_cnn, cnn_calib):
    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="bias-correction")
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    plan = comp.uniform("w2a8")
    corr = bias_corrections(comp, plan, samples=32)
    assert set(corr) == {"conv1_bias_bnfold", "conv2_bias_bnfold", "fc.b"}
    x = {"input": cnn_calib["input"][32:]}  # held out
    ref = run_model(tiny_cnn, x)[0]
    corrected = run_model(comp.build(plan)[0], x)[0]
    comp.config.optimize = ()
    plain = run_model(comp.build(plan)[0], x)[0]
    shift = lambda y: float(np.abs((ref - y).mean(0)).mean())  # noqa: E731 - mean logit shift
    assert shift(corrected) < 0.6 * shift(plain)
    # the correction lives in the int32 bias: QLinearConv fusion survives
    res = Compilation(
        tiny_cnn,
        cnn_calib,
        QuantConfig(progress=False, scheme="w4a8", calib_size=32, optimize="bias-correction"),
        target_opset=21,
    )
    assert res.emit(res.uniform("w4a8")).report["verify"]["kernels"]["summary"][0].startswith("all")


def _channel_means_unoptimized(proto, names, x):
    """Per-channel means of `names` (float tensors of the graph), ORT with graph optimizations
    off so the QDQ model's Conv/Gemm outputs stay visible."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have
    )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [o.reshape(o.shape[0], o.shape[1], -1).mean((0, 2)) for o in sess.run(names, x)]


def _read_tensors(model, outs, clipped=("c1",)):
    """The tensor whose mean bias correction matches, per layer output in `outs`, in the emitted
    model: the layer output itself, or for one read through a Relu (`clipped`), folded into the
    activation quantizer behind it, that quantizer's dequantized output."""
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    read = []
    for o in outs:
        rs = readers.get(o, [])
        if o in clipped and len(rs) == 1 and rs[0].op_type == "QuantizeLinear":
            (dq,) = readers[rs[0].output[0]]
            read.append(dq.output[0])
        else:
            read.append(o)
    return read


def test_corrected_layers_keep_the_float_channel_means(tiny_cnn, cnn_calib):
    """On the samples it was measured on, the correction removes the per-channel mean shift of
    what the next layer reads, not part of it: a layer's output, or for conv1, read only through
    a Relu, the Relu's output (matching conv1's own mean would count the error of values the
    Relu throws away). In the emitted model what is left is the rounding of the int32 bias and
    of the activation quantizer, under 10 % of the uncorrected shift over all layers. Matching
    conv1's mean before its Relu leaves more than that."""
    from faaq_onnx.optimize.bias_correction import correction_targets

    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="bias-correction")
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    plan = comp.uniform("w2a8")
    outs = [t[1] for t in correction_targets(comp)]
    assert outs == ["c1", "c2", "logits"]
    x = {"input": comp.inputs["input"]}
    assert len(x["input"]) == 32  # the samples the correction measured
    ref = _channel_means_unoptimized(comp.float_proto, ["r1", "c2", "logits"], x)
    model = comp.build(plan)[0]
    read = _read_tensors(model, outs)
    assert read[0] != "c1" and read[1:] == ["c2", "logits"]  # conv1's Relu folded into its Q
    corrected = _channel_means_unoptimized(model, read, x)
    comp.config.optimize = ()
    plain_model = comp.build(plan)[0]
    plain = _channel_means_unoptimized(plain_model, _read_tensors(plain_model, outs), x)
    before = np.concatenate([p - r for p, r in zip(plain, ref)])
    after = np.concatenate([c - r for c, r in zip(corrected, ref)])
    assert np.sqrt((after**2).mean()) < 0.1 * np.sqrt((before**2).mean())


def test_gptq_corrects_biases_in_its_own_pass(tiny_cnn, cnn_calib):
    """With GPTQ on the quantized model's inputs, each bias is corrected as soon as its layer is
    rounded, in GPTQ's layer-by-layer run: no second pass over the model (no bias_correction
    stage), and the emitted layers keep the float channel means as the separate pass does."""
    from faaq_onnx.optimize.bias_correction import correction_targets

    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="gptq,bias-correction")
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    plan = comp.uniform("w2a8")
    comp.optimize_rounding([plan])
    corr = comp.bias_overrides(plan)
    assert set(corr) == {"conv1_bias_bnfold", "conv2_bias_bnfold", "fc.b"}
    assert "bias_correction" not in comp.timings  # bias_corrections' own pass never ran
    outs = [t[1] for t in correction_targets(comp)]
    x = {"input": comp.inputs["input"]}
    ref = _channel_means_unoptimized(comp.float_proto, ["r1", "c2", "logits"], x)
    model = comp.build(plan)[0]
    corrected = _channel_means_unoptimized(model, _read_tensors(model, outs), x)
    comp.config.optimize = ("gptq",)
    model = comp.build(plan)[0]
    plain = _channel_means_unoptimized(model, _read_tensors(model, outs), x)
    before = np.concatenate([p - r for p, r in zip(plain, ref)])
    after = np.concatenate([c - r for c, r in zip(corrected, ref)])
    assert np.sqrt((after**2).mean()) < 0.1 * np.sqrt((before**2).mean())


def test_the_float_means_are_measured_once_per_compilation(tiny_cnn, cnn_calib, monkeypatch):
    """A second plan's correction over the same samples reuses the float pass of the first (the
    float model does not change within a compilation), and corrects exactly as a fresh pass does."""
    from faaq_onnx.optimize import bias_correction as bc

    calls = []
    real = bc.channel_means
    monkeypatch.setattr(bc, "channel_means", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="bias-correction")
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    first = bias_corrections(comp, comp.uniform("w2a8"), samples=32)
    second = bias_corrections(comp, comp.uniform("w4a8"), samples=32)
    assert len(calls) == 1
    comp.float_means.clear()
    fresh = bias_corrections(comp, comp.uniform("w4a8"), samples=32)
    assert len(calls) == 2
    assert set(first) == set(second) == set(fresh)
    for k in fresh:
        np.testing.assert_array_equal(second[k], fresh[k])
    bias_corrections(comp, comp.uniform("w4a8"), samples=16)  # other samples: measured again
    assert len(calls) == 3


def test_float_means_of_symbolic_shapes_run_in_batches_that_fit(monkeypatch):
    """The float model's per-channel means (one tapped pass) take their batch from one measured
    sample where the graph's shapes are symbolic, as calibration does."""
    from types import SimpleNamespace

    import onnx_ir as ir
    from onnx import TensorProto, helper

    from faaq_onnx.analysis import calibrate as cal
    from faaq_onnx.optimize import bias_correction as bc

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", 4])],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["n", "c", 4])],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    comp = SimpleNamespace(
        float_proto=proto,
        model=ir.from_proto(proto),
        config=SimpleNamespace(batch_size=16),
        float_means={},
    )
    monkeypatch.setattr(cal, "TAP_BATCH_BYTES", 48 * 5)  # h: 12 floats = 48 bytes a sample
    monkeypatch.setattr(cal, "TAP_MAX_BYTES", 48 * 6)
    batches = []
    real = bc.channel_means
    monkeypatch.setattr(
        bc, "channel_means", lambda s, i, b, o, **k: batches.append(b) or real(s, i, b, o, **k)
    )
    x = np.random.default_rng(0).standard_normal((40, 3, 4)).astype(np.float32)
    means = bc.float_channel_means(comp, ["h"], {"x": x})
    assert batches == [6]  # 48 bytes a sample measured: the floor of 16 capped at 6
    np.testing.assert_allclose(means["h"], np.maximum(x, 0).mean(axis=(0, 2)), rtol=1e-5)


def _activation_shift_ratio(model_path, calib, read) -> float:
    """conv1's activation output ("r1" in the float model) against the float model's, per-channel
    mean shift (RMS) with bias correction over without; `read` names the tensor that holds it in
    an emitted model."""
    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="bias-correction")
    comp = Compilation(str(model_path), calib, cfg, target_opset=21)
    plan = comp.uniform("w2a8")
    x = {"input": comp.inputs["input"]}
    ref = _channel_means_unoptimized(comp.float_proto, ["r1"], x)[0]
    out = []
    for optimize in (("bias-correction",), ()):
        comp.config.optimize = optimize
        model = comp.build(plan)[0]
        got = _channel_means_unoptimized(model, [read(model)], x)[0]
        out.append(np.sqrt(((got - ref) ** 2).mean()))
    return out[0] / out[1]


def test_a_layer_read_through_a_relu_is_corrected_after_it(tiny_cnn, cnn_calib, monkeypatch):
    """conv1 is read only through its Relu: the correction matches the Relu output's mean per
    channel (to 10 % of the uncorrected shift). Matching conv1's own mean instead (the Relu
    ignored) leaves the Relu output's shift where it was: the error of values below zero, which
    the Relu drops, moves the values it keeps."""
    from faaq_onnx.optimize import bias_correction as bc

    def relu_output(model):  # the Relu is folded into conv1's activation quantizer
        return _read_tensors(model, ["c1"])[0]

    assert _activation_shift_ratio(tiny_cnn, cnn_calib, relu_output) < 0.1
    monkeypatch.setattr(bc, "clipping_activations", lambda proto, outs: {})
    assert _activation_shift_ratio(tiny_cnn, cnn_calib, relu_output) > 0.5


def test_clipping_activations_names_the_clip_each_layer_is_read_through():
    """Relu, LeakyRelu (its alpha), HardSigmoid (an affine map of a clip) and Clip with constant
    bounds (inputs from an initializer or a Constant node, or opset 6 attributes); a Clip with a
    computed bound, an output with two readers and a graph output are left to the plain mean."""
    from onnx import TensorProto, helper

    from faaq_onnx.optimize.bias_correction import ClippedActivation, clipping_activations

    six = helper.make_tensor("six", TensorProto.FLOAT, [], [6.0])
    nodes = [
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("LeakyRelu", ["b"], ["rb"], alpha=0.2),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", 1, [], [0.0])),
        helper.make_node("Clip", ["c", "zero", "six"], ["rc"]),
        helper.make_node("Clip", ["d", "", "computed"], ["rd"]),
        helper.make_node("Relu", ["e"], ["re1"]),
        helper.make_node("Sigmoid", ["e"], ["re2"]),
        helper.make_node("Relu", ["out"], ["rout"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "abcde"],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
        [six],
    )
    found = clipping_activations(helper.make_model(graph), ["a", "b", "c", "d", "e", "out"])
    assert found == {
        "a": ClippedActivation("ra", 0.0, np.inf),
        "b": ClippedActivation("rb", 0.0, np.inf, slope=pytest.approx(0.2)),
        "c": ClippedActivation("rc", 0.0, 6.0),
    }
    old = helper.make_node("Clip", ["a"], ["r"], min=-1.0, max=1.0)  # opset 6: attributes
    hard = helper.make_node("HardSigmoid", ["b"], ["h"], alpha=0.25, beta=0.5)
    g6 = helper.make_graph([old, hard], "g6", graph.input[:2], [])
    found = clipping_activations(helper.make_model(g6), ["a", "b"])
    assert found["a"] == ClippedActivation("r", -1.0, 1.0)
    h = found["b"]  # 0.25 x + 0.5 in [0, 1]: x in [-2, 2]
    assert (h.low, h.high, h.scale, h.offset) == (-2.0, 2.0, 0.25, 0.5)
    x = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(
        h.scale * np.clip(x, h.low, h.high) + h.offset, np.clip(0.25 * x + 0.5, 0, 1)
    )
    assert h.clip_target(np.array([0.5])) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "op, attrs, after, before",
    [
        ("LeakyRelu", {"alpha": 0.1}, 0.1, 0.5),
        ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, 0.35, 0.45),
    ],
)
def test_a_layer_read_through_another_clipping_activation_is_corrected_after_it(
    tmp_path, cnn_calib, monkeypatch, op, attrs, after, before
):
    """The same for LeakyRelu and HardSigmoid in the Relu's place, each an op of its own in the
    emitted model: the activation output's mean shift per channel falls below `after` of the
    uncorrected one, and matching conv1's own mean instead leaves more than `before` of it
    (measured: LeakyRelu 0.02 against 0.99; HardSigmoid 0.26 against 0.55, what is left being
    mostly the rounding of conv1's own 8-bit output quantizer, which the solve does not see)."""
    import onnx
    from onnx import helper

    from faaq_onnx.optimize import bias_correction as bc
    from tests.conftest import build_tiny_cnn

    proto = build_tiny_cnn()
    relu = next(n for n in proto.graph.node if n.name == "relu1")
    relu.CopyFrom(helper.make_node(op, list(relu.input), ["r1"], name="relu1", **attrs))
    path = tmp_path / "act.onnx"
    onnx.save(proto, path)

    def act_output(model):
        return "r1"

    assert _activation_shift_ratio(path, cnn_calib, act_output) < after
    monkeypatch.setattr(bc, "clipping_activations", lambda proto, outs: {})
    assert _activation_shift_ratio(path, cnn_calib, act_output) > before


def _w2a8_probe_feeds(tiny_cnn, cnn_calib):
    """(compilation, W2A8 plan, 32 samples, the probe feeds of that plan)."""
    from faaq_onnx.analysis.probe import probe_feeds

    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="bias-correction")
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    plan = comp.uniform("w2a8")
    inputs = {k: v[:32] for k, v in comp.inputs.items()}
    weights, acts = comp.feeds.feeds(plan.choices)
    return comp, plan, inputs, probe_feeds(comp.qgraph.activations, weights, acts)


def test_float_means_from_a_shared_float_run_correct_as_their_own_pass_does(
    tiny_cnn, cnn_calib, monkeypatch
):
    """In a pass that runs the float model layer by layer anyway (GPTQ fit to the float output),
    bias correction takes its float means from that run: no float pass of its own, the same
    corrections."""
    from faaq_onnx.analysis.probe import build_probe
    from faaq_onnx.optimize import bias_correction as bc
    from faaq_onnx.runtime.segments import SegmentedRun

    comp, plan, inputs, feeds = _w2a8_probe_feeds(tiny_cnn, cnn_calib)
    probe = build_probe(comp.float_proto, comp.qgraph)
    passes = []
    real = bc.channel_means
    monkeypatch.setattr(bc, "channel_means", lambda *a, **k: passes.append(1) or real(*a, **k))

    def corrections(float_run):
        fix = bc.LayerBiasCorrection(comp, inputs, plan.choices, float_run)
        run = SegmentedRun(probe, inputs, 32, feeds=lambda: feeds)
        for node in fix.targets:
            fix.correct(node, run)
        return fix.result()

    shared = corrections(SegmentedRun(comp.float_proto, inputs, 16))
    assert passes == []  # no float pass of its own
    own = corrections(None)
    assert passes == [1]
    assert set(shared) == set(own) and len(own) == 3
    for k in own:
        np.testing.assert_allclose(shared[k], own[k], rtol=1e-4, atol=1e-5)


def test_layers_after_a_correction_read_what_the_emitted_model_computes(tiny_cnn, cnn_calib):
    """The emitted model rounds a corrected bias to its int32 grid (s_x · s_w), so a layer-by-
    layer pass must move what later layers read by the rounded correction, not the float one:
    every corrected layer's kept output equals the emitted model's, run in float."""
    import onnx

    from faaq_onnx.analysis.probe import build_probe
    from faaq_onnx.optimize import bias_correction as bc
    from faaq_onnx.runtime.runner import run_all
    from faaq_onnx.runtime.segments import SegmentedRun
    from faaq_onnx.runtime.session import make_session

    comp, plan, inputs, feeds = _w2a8_probe_feeds(tiny_cnn, cnn_calib)
    run = SegmentedRun(build_probe(comp.float_proto, comp.qgraph), inputs, 32, feeds=lambda: feeds)
    fix = bc.LayerBiasCorrection(comp, inputs, plan.choices)
    kept = {}
    for node, (_, out, _, _) in fix.targets.items():
        fix.correct(node, run)
        kept[out] = np.array(run.get(out))  # as the next layer reads it
    # (a graph output is fake-quantized under its own name in the probe: not compared)
    outs = [o for o in kept if o not in {v.name for v in comp.float_proto.graph.output}]
    assert len(outs) == 2
    steps = comp.feeds.bias_steps(plan.choices)
    assert set(fix.corrected) <= set(steps)  # every corrected bias is rounded when emitted
    model, _ = comp.emission.build(plan, biases=fix.corrected)
    for o in outs:
        model.graph.output.append(onnx.ValueInfoProto(name=o))
    session = make_session(model, opt_level="disable")
    emitted = dict(zip(outs, run_all(session, inputs, 32, outs)))
    for o in outs:
        np.testing.assert_allclose(
            kept[o], emitted[o], rtol=1e-4, atol=1e-4 * np.abs(kept[o]).max()
        )


@pytest.mark.parametrize("float_run", [False, True], ids=["float-pass", "float-run"])
def test_a_clipped_layer_sampled_against_its_float_twin_is_not_corrected(
    tiny_cnn, cnn_calib, monkeypatch, float_run
):
    """Where a clipped layer's values are sampled (channel_sample), its float target is the mean
    over the same positions, from either source of float means: a layer computing exactly the
    float output gets no correction. Against the mean over every value it would be shifted by
    the sample's noise."""
    from faaq_onnx.optimize import bias_correction as bc
    from faaq_onnx.optimize import clipped_mean as cm
    from faaq_onnx.runtime.segments import SegmentedRun

    monkeypatch.setattr(cm, "SAMPLE_PER_CHANNEL", 8)  # a few positions per sample, not all
    cfg = QuantConfig(progress=False, scheme="w8a8", calib_size=32)
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    inputs = {k: v[:32] for k, v in comp.inputs.items()}
    twin = SegmentedRun(comp.float_proto, inputs, 32) if float_run else None
    fix = bc.LayerBiasCorrection(comp, inputs, None, twin)
    shape = SegmentedRun(comp.float_proto, inputs, 32).get
    sampled = [o for o in fix.clipped if cm.sample_positions(shape(o).shape) is not None]
    assert sampled  # the check is about sampled layers
    run = SegmentedRun(comp.float_proto, inputs, 32)  # "quantized" values equal to the float ones
    for node in fix.targets:
        fix.correct(node, run)
    assert set(fix.corrected) >= {fix.targets[n][2] for n in fix.targets}
    for bias, value in fix.corrected.items():
        base = comp.weights.float_initializer(bias)
        np.testing.assert_allclose(value, base, rtol=1e-5, atol=1e-6 * np.abs(base).max())
