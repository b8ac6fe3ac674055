"""analysis/calibrate.py on a hand-made graph: statistics of inputs and intermediate tensors, the
tap batch size, failures in one line, and activation parameters with a learned step."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from faaq_onnx.analysis import calibrate as cal
from faaq_onnx.analysis.calibrate import Calibration, calibrate, tap_batch_size, tap_model
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import ActivationQuantizer, QuantizerGraph
from faaq_onnx.quant.observers import TensorStats


def proto(h_shape=("n", 3, 4)):
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"]),
            helper.make_node("Neg", ["h"], ["y"]),
            helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT32),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 4]),
            helper.make_tensor_value_info("xi", TensorProto.INT32, ["n", 3, 4]),
        ],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, list(h_shape))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def qgraph(*range_tensors):
    acts = {f"act:{t}": ActivationQuantizer(f"act:{t}", [t], [t]) for t in range_tensors}
    return QuantizerGraph({}, acts, {})


def test_statistics_of_inputs_and_intermediate_tensors():
    x = np.random.default_rng(0).standard_normal((600, 3, 4)).astype(np.float32)
    c = calibrate(ir.from_proto(proto()), qgraph("x", "h", "y"), {"x": x}, batch_size=7)
    assert set(c.stats) == {"x", "h", "y"}
    assert (c.stats["x"].min, c.stats["x"].max) == (float(x.min()), float(x.max()))
    assert c.stats["x"].count == x.size  # read in chunks of 256, every sample once
    assert (c.stats["h"].min, c.stats["h"].max) == (0.0, float(x.max()))
    assert c.stats["y"].min == -float(x.max()) and c.stats["y"].count == x.size
    s = TensorStats()
    cal._observe(s, np.ones((2, 2), np.int32))  # integer tensors are not observed
    assert s.count == 0
    assert not c.data_free and c.learned == {}


def test_non_finite_calibration_is_one_line():
    x = np.ones((2, 3, 4), np.float32)
    x[0, 0, 0] = np.inf
    with pytest.raises(FaaqError) as e:
        calibrate(ir.from_proto(proto()), qgraph("h"), {"x": x})
    assert str(e.value) == (
        "calibration data holds non-finite values in input 'x'; check the calibration data"
    )


def test_a_tensor_the_model_drives_to_inf_gets_an_unbounded_range_and_is_left_float():
    """An attention mask (finfo.min added to scores) overflows to -inf from finite data: that
    tensor's quantizer is dropped with a reason, the others are calibrated as usual."""
    from faaq_onnx.analysis.prune import prune_quantizers

    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "big"], ["h"]),  # 3e38 * 2 overflows
            helper.make_node("Relu", ["x"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["n", 3, 4]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 4]),
        ],
        [helper.make_tensor("big", TensorProto.FLOAT, [], [3e38])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    x = np.random.default_rng(0).standard_normal((40, 3, 4)).astype(np.float32) + 3.0
    q = qgraph("h", "y")
    c = calibrate(ir.from_proto(m), q, {"x": x}, batch_size=8)
    assert np.isinf(c.stats["h"].min) and np.isinf(c.stats["h"].max)
    assert c.stats["y"].max == float(x.max())
    pruned = prune_quantizers(q, c)
    assert set(pruned.activations) == {"act:y"}
    assert any(s.startswith("act:h: range [-inf, inf] too wide") for s in pruned.skipped)


def test_tap_model_adds_each_tensor_once():
    t = tap_model(proto(), ["h", "h", "y", "x"])
    assert [o.name for o in t.graph.output] == ["y", "xi", "h"]
    assert [o.name for o in proto().graph.output] == ["y", "xi"]


def test_tap_batch_size(monkeypatch):
    model = ir.from_proto(proto())
    monkeypatch.setattr(cal, "TAP_BATCH_BYTES", 48 * 10)  # h: 12 floats = 48 bytes a sample
    assert tap_batch_size(model, ["h"], 4) == 10
    assert tap_batch_size(model, ["h"], 16) == 16  # never below the floor
    assert tap_batch_size(model, ["h"], 1, ceiling=8) == 8
    assert tap_batch_size(model, ["h", "y"], 1) == 5
    symbolic = ir.from_proto(proto(h_shape=("n", "c", 4)))
    assert tap_batch_size(symbolic, ["h"], 3) == 3  # a symbolic dim: the floor
    assert tap_batch_size(model, ["nowhere"], 5) == 5
    monkeypatch.setattr(cal, "TAP_MAX_BYTES", 48 * 12)  # 12 samples at most, whatever the floor
    assert tap_batch_size(model, ["h"], 16) == 12
    assert tap_batch_size(model, ["h"], 4) == 10
    monkeypatch.setattr(cal, "TAP_MAX_BYTES", 10)  # not one sample: still one at a time
    assert tap_batch_size(model, ["h"], 16) == 1
    monkeypatch.setattr(cal, "TAP_MAX_BYTES", 512 << 20)
    monkeypatch.setattr(cal, "TAP_BATCH_BYTES", 256 << 20)
    assert tap_batch_size(model, ["h"], 1) == 256


def test_symbolic_shapes_take_the_batch_from_one_measured_sample(monkeypatch):
    """Other exporters leave dimensions symbolic: the static estimate gives up, one sample's
    outputs are measured instead, and calibration runs in batches that fit the cap (before, the
    floor of 16 ran whatever it held: 5.9 GB on PP-OCRv4's recognizer)."""
    from faaq_onnx.analysis.calibrate import tapped_bytes_per_sample
    from faaq_onnx.runtime.session import make_session

    symbolic = proto(h_shape=("n", "c", 4))
    model = ir.from_proto(symbolic)
    x = np.random.default_rng(0).standard_normal((40, 3, 4)).astype(np.float32)
    session = make_session(tap_model(symbolic, ["h"]))
    assert tapped_bytes_per_sample(session, {"x": x}, ["h"]) == 48  # 12 floats a sample
    monkeypatch.setattr(cal, "TAP_BATCH_BYTES", 48 * 5)
    monkeypatch.setattr(cal, "TAP_MAX_BYTES", 48 * 6)
    assert tap_batch_size(model, ["h"], 16, measure=lambda: 48) == 6  # the floor capped
    assert tap_batch_size(model, ["h"], 2, measure=lambda: 48) == 5
    sizes = []
    real = cal.run_batches

    def spy(session, inputs, batch_size, *a, **kw):
        sizes.append(batch_size)
        return real(session, inputs, batch_size, *a, **kw)

    monkeypatch.setattr(cal, "run_batches", spy)
    c = calibrate(model, qgraph("h"), {"x": x}, batch_size=16)
    assert sizes == [1, 6]  # one sample measured, then batches that fit
    assert c.stats["h"].max == float(np.maximum(x, 0).max())


def test_histograms_do_not_depend_on_the_calibration_batch(monkeypatch):
    """The same samples in batches of 3, 5 or 40 give the same statistics, bin for bin: a
    sample's own elements are subsampled alike in any batch, and a tensor whose axis 0 is not
    the samples (here [4, n, 3] after a Transpose) has every element counted. Without that,
    the stride over its rows (n x 3 elements) changed with the batch."""
    from faaq_onnx.quant import observers

    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"]),
            helper.make_node("Transpose", ["h"], ["t"], perm=[2, 0, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4, "n", 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    monkeypatch.setattr(observers, "SAMPLE_ELEMENTS", 5)  # 12 elements a sample: stride 3
    x = np.random.default_rng(3).standard_normal((40, 3, 4)).astype(np.float32)
    x *= np.linspace(0.5, 30, 40, dtype=np.float32)[:, None, None]  # the range grows batch by batch
    got = []
    for batch in (3, 5, 40):
        monkeypatch.setattr(cal, "TAP_BATCH_BYTES", 96 * batch)  # h and t: 96 bytes a sample
        monkeypatch.setattr(cal, "TAP_MAX_BYTES", 96 * batch)
        got.append(calibrate(ir.from_proto(m), qgraph("h", "t"), {"x": x}, batch_size=1).stats)
    assert got[0]["h"].hist.sum() == 40 * 4  # elements 0, 3, 6, 9 of each sample
    assert got[0]["t"].hist.sum() == x.size  # every element
    for other in got[1:]:
        for t in ("h", "t"):
            a, b = got[0][t], other[t]
            assert (a.min, a.max, a.first, a.exp) == (b.min, b.max, b.first, b.exp)
            np.testing.assert_array_equal(a.hist, b.hist)


def stats(lo, hi):
    s = TensorStats()
    s.observe(np.array([lo, hi], np.float32))
    return s


def test_quantizer_statistics_merge_its_range_tensors():
    c = Calibration({"a": stats(-1.0, 2.0), "b": stats(-3.0, 0.5)})
    merged = c.quantizer_stats(ActivationQuantizer("act:q", ["a", "b"], ["a", "b", "c"]))
    assert (merged.min, merged.max) == (-3.0, 2.0)
    with pytest.raises(FaaqError, match=r"^no calibration statistics for act:z$"):
        c.quantizer_stats(ActivationQuantizer("act:z", ["z"], ["z"]))


def test_activation_params_and_a_learned_step():
    c = Calibration({"a": stats(0.0, 2.55)})
    aq = ActivationQuantizer("act:a", ["a"], ["a"])
    scale, zp, fmt, lo, hi = c.activation_params(aq, 8, False, "minmax")
    assert (zp, fmt.qmin, fmt.qmax) == (0, 0, 255) and scale == pytest.approx(0.01)
    assert (lo, hi) == pytest.approx((0.0, 2.55))
    assert len(c._ranges) == 1
    c.activation_params(aq, 8, False, "minmax")
    assert len(c._ranges) == 1  # each range searched once
    c.learned[("act:a", 8)] = 0.02
    scale, zp, fmt, lo, hi = c.activation_params(aq, 8, False, "minmax")
    assert scale == pytest.approx(0.02) and zp == 0
    assert (lo, hi) == pytest.approx((0.0, 0.02 * 255))
    c.activation_params(aq, 4, False, "minmax")
    assert len(c._ranges) == 2
