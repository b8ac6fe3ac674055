import numpy as np

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


def test_corrected_layers_keep_the_float_channel_means(tiny_cnn, cnn_calib):
    """On the samples it was measured on, the correction removes each layer's per-channel mean
    shift, not part of it: in the emitted model what is left is the int32 bias's rounding (half a
    bias step, plus what upstream rounding passes on), at most 2 steps per channel, and under 5 %
    of the uncorrected shift over all layers. Half a correction leaves half the shift."""
    from onnx import numpy_helper

    from faaq_onnx.optimize.bias_correction import correction_targets

    cfg = QuantConfig(progress=False, scheme="w2a8", calib_size=32, optimize="bias-correction")
    comp = Compilation(tiny_cnn, cnn_calib, cfg, target_opset=21)
    plan = comp.uniform("w2a8")
    outs = [t[1] for t in correction_targets(comp)]
    assert outs == ["c1", "c2", "logits"]
    x = {"input": comp.inputs["input"]}
    assert len(x["input"]) == 32  # the samples the correction measured
    ref = _channel_means_unoptimized(comp.float_proto, outs, x)
    model = comp.build(plan)[0]
    corrected = _channel_means_unoptimized(model, outs, x)
    comp.config.optimize = ()
    plain = _channel_means_unoptimized(comp.build(plan)[0], outs, x)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            i = outs.index(node.output[0])
            bias_step = inits[
                producer[node.input[2]].input[1]
            ]  # the int32 bias's scale, per channel
            assert np.all(np.abs(corrected[i] - ref[i]) <= 2 * bias_step), node.name
    before = np.concatenate([p - r for p, r in zip(plain, ref)])
    after = np.concatenate([c - r for c, r in zip(corrected, ref)])
    assert np.sqrt((after**2).mean()) < 0.05 * np.sqrt((before**2).mean())


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
    ref = _channel_means_unoptimized(comp.float_proto, outs, x)
    corrected = _channel_means_unoptimized(comp.build(plan)[0], outs, x)
    comp.config.optimize = ("gptq",)
    plain = _channel_means_unoptimized(comp.build(plan)[0], outs, x)
    before = np.concatenate([p - r for p, r in zip(plain, ref)])
    after = np.concatenate([c - r for c, r in zip(corrected, ref)])
    assert np.sqrt((after**2).mean()) < 0.05 * np.sqrt((before**2).mean())


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
        bc, "channel_means", lambda s, i, b, o: batches.append(b) or real(s, i, b, o)
    )
    x = np.random.default_rng(0).standard_normal((40, 3, 4)).astype(np.float32)
    means = bc.float_channel_means(comp, [("relu", "h", "b", 1)], {"x": x})
    assert batches == [6]  # 48 bytes a sample measured: the floor of 16 capped at 6
    np.testing.assert_allclose(means["h"], np.maximum(x, 0).mean(axis=(0, 2)), rtol=1e-5)
