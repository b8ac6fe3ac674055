"""optimize/gptq_layers.py on stand-ins for the compilation: which weights are rounded and from
which tensor, how Hessians are grouped into waves, and what each layer's report says."""

from types import SimpleNamespace

import numpy as np
import pytest
from onnx import helper

from faaq_onnx.optimize import gptq_layers as gl
from faaq_onnx.optimize.gptq_layers import LayerJob, LayerWeight, gptq_layers
from faaq_onnx.optimize.hessian import LinearForm, linear_form
from faaq_onnx.optimize.units import Unit
from faaq_onnx.quant.weights import weight_grid

pytest.importorskip("torch")


class Weights:
    def __init__(self, arrays, axes):
        self.arrays, self.axes, self.stored = arrays, axes, {}

    def float_weight(self, name):
        return self.arrays[name]

    def get(self, name, bits):
        w = self.arrays[name]
        return weight_grid(w, bits, "per-channel", self.axes[name], None).round_to_nearest(
            w.astype(np.float32)
        )

    def put(self, name, bits, q):
        self.stored[name] = (bits, q)


def make_comp(nodes, arrays, axes):
    return SimpleNamespace(
        float_proto=SimpleNamespace(graph=SimpleNamespace(node=nodes)),
        weights=Weights(arrays, axes),
        config=SimpleNamespace(
            weight_symmetric=True, weight_range="minmax", gptq_asymmetric=False, gptq_clip=True
        ),
    )


def test_job_picks_the_data_input_and_skips_what_it_cannot_round():
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["wl", "x"], ["y"], name="left"),
        helper.make_node("MatMul", ["x", "wr"], ["y2"], name="right"),
        helper.make_node("Conv", ["img", "cw", "cb"], ["c"], name="conv"),
        helper.make_node("MatMul", ["x3", "w3"], ["y3"], name="rank3"),
    ]
    arrays = {
        "wl": rng.standard_normal((4, 6)),
        "wr": rng.standard_normal((6, 4)),
        "cw": rng.standard_normal((4, 3, 3, 3)),
        "w3": rng.standard_normal((2, 6, 4)),
    }
    comp = make_comp(nodes, arrays, {})
    left = gl._job(comp, Unit("u", ["left"], ["x"], "y", ["wl"]), {"wl": 4})
    assert left.node_op == "MatMul" and left.weights[0].x_name == "x"
    assert left.weights[0].form.trans_w and left.weights[0].form.trans_x
    right = gl._job(comp, Unit("u", ["right"], ["x"], "y2", ["wr"]), {"wr": 4})
    assert right.weights[0].x_name == "x" and not right.weights[0].form.trans_w
    conv = gl._job(comp, Unit("u", ["conv"], ["img"], "c", ["cw"]), {"cw": 7})
    assert [w.name for w in conv.weights] == ["cw"] and conv.weights[0].x_name == "img"
    assert conv.skipped == {}
    eight = gl._job(comp, Unit("u", ["conv"], ["img"], "c", ["cw"]), {"cw": 8})
    assert eight.weights == [] and eight.skipped == {}  # 8 bits and more: not GPTQ's
    rank3 = gl._job(comp, Unit("u", ["rank3"], ["x3"], "y3", ["w3"]), {"w3": 4})
    assert rank3.weights == [] and "rank 3" in rank3.skipped["w3"]


def test_hessian_bytes_and_waves(monkeypatch):
    def job(k, g=1):
        form = LinearForm("Conv", (2 * g, k, 1), groups=g, kernel=(1,))  # N = 2 per group
        assert form.gkn == (g, k, 2)
        return LayerJob(Unit("u", ["n"], [], "o"), "Conv", [LayerWeight("w", form, "x")])

    a = job(10)
    # (G, K, K) float64 sums and up to K rows of float32 patches held before they are summed
    assert a.hessian_bytes == 12 * 10 * 10
    assert job(10, g=3).hessian_bytes == 12 * 3 * 10 * 10
    assert LayerJob(Unit("u", [], [], "o"), "Conv").hessian_bytes == 0
    jobs = [job(10), job(10), job(10), job(20)]  # 1200, 1200, 1200, 4800 bytes
    monkeypatch.setattr(gl, "WAVE_BYTES", 2400)
    waves = gl._waves(jobs)
    assert [len(w) for w in waves] == [2, 1, 1]  # 1200 + 1200 fits exactly; 4800 alone
    monkeypatch.setattr(gl, "WAVE_BYTES", 2399)
    assert [len(w) for w in gl._waves(jobs)] == [1, 1, 1, 1]
    monkeypatch.setattr(gl, "WAVE_BYTES", 10**9)
    assert [len(w) for w in gl._waves(jobs)] == [4]
    assert gl._waves([]) == []


def _mlp_comp(k=12, n=5, bits=3, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    comp = make_comp(nodes, {"w": w}, {"w": 1})
    unit = Unit("unit0", ["mm"], ["x"], "y", ["w"])
    # correlated inputs: GPTQ has something to gain over rounding to nearest
    x = (rng.standard_normal((96, 3)) @ rng.standard_normal((3, k))).astype(np.float32)
    x += 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    return comp, unit, w, x, {"w": bits}


class FloatData:
    def __init__(self, x, batch=32):
        self.x, self.batch, self.asked = x, batch, []

    def float_batches(self, names):
        self.asked.append(names)
        for s in range(0, len(self.x), self.batch):
            yield {n: self.x[s : s + self.batch] for n in names}


def test_float_inputs_sum_every_batch_and_round(monkeypatch):
    comp, unit, w, x, wbits = _mlp_comp()
    data = FloatData(x)
    reports, shared_s, biases = gptq_layers(comp, [unit], data, None, wbits, "float")
    assert data.asked == [["x"]] and biases is None
    assert 0.0 <= shared_s < 0.5  # a stand-in's batches cost nothing
    (rep,) = reports
    assert rep["unit"] == "unit0" and rep["op"] == "MatMul" and rep["weights"] == ["w"]
    assert "skipped" not in rep and rep["act_order"] == gl.gptq_mod.ACT_ORDER
    assert 0 < rep["mse"] < rep["mse_nearest"]
    # the errors are the mean squared output error over every input row
    bits, q = comp.weights.stored["w"]
    assert bits == 3
    rtn = comp.weights.get("w", 3)
    mse = lambda d: float(np.mean((x.astype(np.float64) @ d) ** 2))  # noqa: E731
    assert rep["mse"] == pytest.approx(mse(q.dequantized() - w), rel=1e-5)
    assert rep["mse_nearest"] == pytest.approx(mse(rtn.dequantized() - w), rel=1e-5)
    assert rep["seconds"] == pytest.approx(rep["hessian_s"] + rep["rounding_s"], abs=0.011)
    assert rep["seconds"] < 5


def test_float_pass_without_weights_runs_nothing():
    comp, unit, _w, x, _ = _mlp_comp()
    data = FloatData(x)
    reports, shared_s, _ = gptq_layers(comp, [unit], data, None, {"w": 8}, "float")
    assert data.asked == [] and shared_s == 0.0
    assert reports[0]["weights"] == [] and reports[0]["mse"] == 0.0
    assert reports[0]["mse_nearest"] == 0.0


class SeqData:
    def __init__(self, x):
        self.x, self.modes = x, []

    def sequential_inputs(self, choices, mode):
        self.modes.append(mode)
        x = self.x

        def layer_input(name, lazy=False):
            return x

        layer_input.run = None
        return layer_input


def test_sequential_inputs_give_the_same_rounding_as_one_float_pass():
    comp, unit, w, x, wbits = _mlp_comp()
    reports, shared_s, biases = gptq_layers(
        comp, [unit], SeqData(x), SimpleNamespace(choices={}), wbits, "quantized"
    )
    assert shared_s == 0.0 and biases is None
    seq_q = comp.weights.stored["w"][1].q
    rep = reports[0]
    assert set(rep) >= {"inputs_s", "hessian_s", "rounding_s", "seconds", "mse", "mse_nearest"}
    assert rep["seconds"] == pytest.approx(
        rep["inputs_s"] + rep["hessian_s"] + rep["rounding_s"], abs=0.011
    )
    comp2, unit2, *_ = _mlp_comp()
    gptq_layers(comp2, [unit2], FloatData(x, batch=7), None, wbits, "float")
    np.testing.assert_array_equal(seq_q, comp2.weights.stored["w"][1].q)
    assert reports[0]["mse"] == pytest.approx(
        float(
            np.mean((x.astype(np.float64) @ (comp.weights.stored["w"][1].dequantized() - w)) ** 2)
        ),
        rel=1e-5,
    )


class EveryWidth(Weights):
    """Keeps what is put at every width (Weights keeps the last put per weight)."""

    def put(self, name, bits, q):
        self.stored[(name, bits)] = q


@pytest.mark.parametrize("inputs", ["quantized", "float"])
def test_other_widths_are_rounded_from_the_same_hessians(inputs):
    """One pass, several widths: each extra width gets GPTQ's rounding under the pass's Hessian
    (the one a pass at that width alone computes from the same inputs), not nearest; 8 bits
    and the pass's own width are not rounded twice."""
    comp, unit, w, x, wbits = _mlp_comp(bits=4)
    comp.weights = EveryWidth({"w": w}, {"w": 1})
    data = SeqData(x) if inputs == "quantized" else FloatData(x)
    plan = SimpleNamespace(choices={})
    reports, _, _ = gptq_layers(comp, [unit], data, plan, wbits, inputs, also_bits=(2, 3, 4, 8))
    assert sorted(comp.weights.stored) == [("w", 2), ("w", 3), ("w", 4)]
    assert reports[0]["also_bits"] == [2, 3, 4]  # as asked below 8 (4, its own, not rounded twice)
    for bits in (2, 3):
        alone = _mlp_comp(bits=bits)[0]
        alone.weights = EveryWidth({"w": w}, {"w": 1})
        gptq_layers(alone, [unit], SeqData(x), plan, {"w": bits}, "quantized")
        got = comp.weights.stored[("w", bits)]
        np.testing.assert_array_equal(got.q, alone.weights.stored[("w", bits)].q)
        assert got.method == "gptq"
        assert not np.array_equal(got.q, comp.weights.get("w", bits).q)  # not nearest


def test_sequential_gemm_read_transposed_is_one_batch():
    """Gemm transA=1: the input is (K, M), its axis 0 is not samples: summed whole."""
    rng = np.random.default_rng(1)
    k, n = 6, 4
    w = rng.standard_normal((k, n))
    nodes = [helper.make_node("Gemm", ["a", "w"], ["y"], name="g", transA=1)]
    comp = make_comp(nodes, {"w": w}, {"w": 1})
    a = rng.standard_normal((k, 70)).astype(np.float32)  # 70 rows of K = 6
    job = gl._job(comp, Unit("g", ["g"], ["a"], "y", ["w"]), {"w": 4})
    seen = []
    orig = gl.HessianSum.add

    def spy(self, x, x_float=None):
        seen.append(np.shape(x))
        if x_float is not None:  # the float model's tensor goes in the same batches
            assert np.shape(x_float) == np.shape(x)
        orig(self, x, x_float)

    gl.HessianSum.add = spy
    try:
        gl._sequential(comp, job, lambda name, lazy=False: a, {"w": 4}, batch=32)
    finally:
        gl.HessianSum.add = orig
    assert seen == [(6, 70)]
    b = rng.standard_normal((70, k)).astype(np.float32)
    job = gl._job(comp, Unit("g", ["g"], ["a"], "y", ["w"]), {"w": 4})
    job.weights[0].form = linear_form(helper.make_node("Gemm", ["a", "w"], ["y"]), 1, w.shape)
    seen.clear()
    gl.HessianSum.add = spy
    try:
        gl._sequential(comp, job, lambda name, lazy=False: b, {"w": 4}, batch=32)
    finally:
        gl.HessianSum.add = orig
    assert seen == [(32, 6), (32, 6), (6, 6)]
    seen.clear()  # with the float model's tensor beside it: the same batches of both
    job = gl._job(comp, Unit("g", ["g"], ["a"], "y", ["w"]), {"w": 4})
    gl.HessianSum.add = spy
    try:
        gl._sequential(
            comp, job, lambda name, lazy=False: a, {"w": 4}, lambda name, lazy=False: 2 * a, 32
        )
    finally:
        gl.HessianSum.add = orig
    assert seen == [(6, 70)]


def test_sequential_reports_the_seconds_spent_getting_inputs(monkeypatch):
    import time

    comp, unit, _w, x, wbits = _mlp_comp()

    class Slow(SeqData):
        def sequential_inputs(self, choices, mode):
            def layer_input(name, lazy=False):
                time.sleep(0.013)
                return x

            layer_input.run = None
            return layer_input

    (rep,), _, _ = gptq_layers(comp, [unit], Slow(x), SimpleNamespace(choices={}), wbits, "weights")
    assert 0.01 <= rep["inputs_s"] < 0.5  # the sleep, and nothing added to it
    assert rep["inputs_s"] == round(rep["inputs_s"], 2)  # reported to the hundredth


def test_bias_correction_follows_each_layer_in_the_sequential_pass(monkeypatch):
    comp, unit, _w, x, wbits = _mlp_comp()
    second = Unit("unit1", ["mm", "other"], ["x"], "y", [])
    calls = []

    class FakeCorrection:
        def __init__(self, comp_, inputs, choices, float_run=None):
            calls.append(("init", comp_ is comp, inputs, float_run))
            self.targets: dict = {}  # no layer the pass does not round

        def correct(self, node, run):
            calls.append(("correct", node, run))

        def result(self):
            return {"b": "corrected"}

    monkeypatch.setattr(gl, "LayerBiasCorrection", FakeCorrection)
    data = SeqData(x)
    data.inputs = {"x": "the calibration inputs"}
    reports, shared_s, biases = gptq_layers(
        comp,
        [unit, second],
        data,
        SimpleNamespace(choices={}),
        wbits,
        "quantized",
        correct_biases=True,
    )
    assert biases == {"b": "corrected"} and shared_s == 0.0
    assert calls == [
        ("init", True, {"x": "the calibration inputs"}, None),  # no float run to share
        ("correct", "mm", None),
        ("correct", "mm", None),
    ]
    assert all(0 <= r["bias_correction_s"] < 0.5 for r in reports)
    assert data.modes == ["quantized"]


@pytest.mark.parametrize(
    "clip, weight_range, narrowed",
    [(True, "minmax", True), (False, "minmax", False), (True, "mse", False)],
)
def test_gptq_rounds_on_the_output_clipped_grid_unless_the_range_was_chosen(
    clip, weight_range, narrowed
):
    """--gptq-clip (the default) narrows the min-max grid before GPTQ rounds; --no-gptq-clip and
    a range the user chose (--weight-range mse: here the stand-in's grid) keep the cache's grid."""
    comp, unit, w, x, _ = _mlp_comp(bits=2)
    w[0] *= 6.0  # one large input row: its weights set every channel's min-max range
    comp.config.gptq_clip, comp.config.weight_range = clip, weight_range
    (rep,) = gptq_layers(comp, [unit], FloatData(x), None, {"w": 2}, "float")[0]
    stored = comp.weights.stored["w"][1]
    rtn = comp.weights.get("w", 2)
    if narrowed:
        assert np.all(stored.scale <= rtn.scale) and np.any(stored.scale < rtn.scale)
        assert rep["clip"] == [pytest.approx(float(np.mean(stored.scale / rtn.scale)), abs=1e-3)]
    else:
        np.testing.assert_array_equal(stored.scale, rtn.scale)
        assert "clip" not in rep


@pytest.mark.parametrize("inputs", ["quantized", "float"])
def test_a_weight_with_fewer_input_vectors_than_inputs_stays_rounded_to_nearest(inputs):
    """K = 12 inputs seen through 11 rows: GPTQ's Hessian is singular where no row reaches, and
    its rounding would fit these rows only; the weight keeps its nearest rounding, said why.
    With 12 rows it is rounded by GPTQ."""
    comp, unit, _w, x, wbits = _mlp_comp()
    data = SeqData(x[:11]) if inputs == "quantized" else FloatData(x[:11])
    (rep,) = gptq_layers(comp, [unit], data, SimpleNamespace(choices={}), wbits, inputs)[0]
    assert comp.weights.stored == {}  # the cache's nearest rounding is what ships
    assert rep["weights"] == [] and "11 input vectors for 12 inputs" in rep["skipped"]["w"]
    comp, unit, _w, x, wbits = _mlp_comp()
    data = SeqData(x[:12]) if inputs == "quantized" else FloatData(x[:12])
    (rep,) = gptq_layers(comp, [unit], data, SimpleNamespace(choices={}), wbits, inputs)[0]
    assert rep["weights"] == ["w"] and "skipped" not in rep
    assert comp.weights.stored["w"][1].method == "gptq"
