import numpy as np
import pytest

from faaq_onnx.analysis.probe import build_probe, disabled_params, root_tensors
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.pipeline import Compilation
from tests.conftest import run_model


@pytest.fixture
def comp(tiny_cnn, cnn_calib):
    return Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)


def test_probe_with_everything_off_is_the_float_model(comp, cnn_calib):
    probe = build_probe(comp.float_proto, comp.qgraph)
    from faaq_onnx.analysis.probe import param_name

    feeds = {"input": cnn_calib["input"][:8]}
    feeds.update({param_name(a): disabled_params() for a in comp.qgraph.activations})
    # equal up to float reassociation: ORT fuses the probe graph differently
    np.testing.assert_allclose(
        run_model(probe, feeds)[0],
        run_model(comp.float_proto, {"input": feeds["input"]})[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_probe_matches_the_emitted_qdq_model(comp):
    """What phase 1 measures is what ships: probe and real QDQ agree on W4A8."""
    plan = comp.uniform("w4a8")
    probe_sqnr = comp.measure(plan)["sqnr_db"]
    emitted = comp.emit(plan).report["verify"]["outputs"]["logits"]["sqnr_db"]
    assert probe_sqnr == pytest.approx(emitted, abs=0.5)


def _run_unoptimized(proto, feeds):
    """ORT with every graph optimization off: QDQ runs as QuantizeLinear / DequantizeLinear and
    float kernels, never as integer kernels with their own rounding."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs() + sess.get_overridable_initializers()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


@pytest.mark.parametrize("scheme", ["w4a8", "w8a8"])
def test_probe_fake_quant_is_the_emitted_qdq_bit_for_bit(comp, scheme):
    """The probe's fake-quant, fed the plan's parameters by the prober, computes what ORT's QDQ
    computes: the same numbers on the calibration inputs (where activations reach the clipping
    range), not SQNRs 0.5 dB apart. A scale 3 % off or a qmax two codes short shows here.

    The emitted model's biases are int32 (scale s_x * s_w): the prober feeds the same values,
    dequantized, bit for bit (until 2026-12-07 it ran the float biases, and this test fed it the
    emitted ones to compare the rest)."""
    from onnx import numpy_helper

    from faaq_onnx.analysis.probe import param_name

    plan = comp.uniform(scheme)
    model = comp.build(plan)[0]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    float_bias = {
        n.name: n.input[2] for n in comp.float_proto.graph.node if n.op_type in ("Conv", "Gemm")
    }
    biases = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2:
            dq = producer[node.input[2]]
            assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int32
            zp = inits[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else 0
            biases[float_bias[node.name]] = (
                (inits[dq.input[0]].astype(np.int64) - zp).astype(np.float32) * inits[dq.input[1]]
            ).astype(np.float32)
    assert len(biases) == 3
    weights, acts = comp.prober.feeds(plan.choices)  # the parameters the sensitivity sweep feeds
    assert acts and weights
    x = {k: v for k, v in comp.inputs.items()}
    feeds = {
        **x,
        **{param_name(a): disabled_params() for a in comp.qgraph.activations},
        **{param_name(a): p for a, p in acts.items()},
        **weights,
    }
    for name, value in biases.items():  # the int32 biases, as the prober feeds them
        np.testing.assert_array_equal(weights[name], value)
    probe = build_probe(comp.float_proto, comp.qgraph)
    probed = _run_unoptimized(probe, feeds)
    emitted = _run_unoptimized(model, x)
    tol = 1e-5 * float(np.abs(emitted).max())
    np.testing.assert_allclose(probed, emitted, rtol=0, atol=tol)
    # the test's probe graph is the sweep's: same outputs as the prober's own session
    np.testing.assert_allclose(comp.prober.outputs(plan.choices)[0], probed, rtol=0, atol=tol)


def test_roots_skip_pass_through_members(comp):
    shared = next(a for a in comp.qgraph.activations.values() if "p1" in a.tensors)
    assert root_tensors(comp.float_proto, shared.tensors) == [shared.tensors[0]]


def test_sensitivity_table_orders_bits(comp):
    table = comp.sensitivity("w2a8,w4a8,w8a8", metrics=("sqnr", "kl", "fit"), cache_dir=False)
    for g in comp.qgraph.groups.values():
        row = table.table[g.name]
        if g.weights:
            assert row["w8a8"]["sqnr_db"] > row["w4a8"]["sqnr_db"] > row["w2a8"]["sqnr_db"]
            assert row["w8a8"]["fit"] < row["w4a8"]["fit"] < row["w2a8"]["fit"]
            assert row["w2a8"]["kl"] > row["w8a8"]["kl"] >= 0
        else:
            assert set(row) == {"w8a8"}  # weightless groups only choose activation bits
    assert table.meta["configs"] == sum(3 if g.weights else 1 for g in comp.qgraph.groups.values())
    md = table.to_markdown()
    assert "w4a8 sqnr_db" in md and md.count("\n") == len(table.table) + 2


def test_sensitivity_is_cached(comp, tmp_path):
    first = comp.sensitivity("w4a8,w8a8", cache_dir=tmp_path)
    files = list(tmp_path.glob("sensitivity-*.json"))
    assert len(files) == 1 and "cached" not in first.meta
    again = comp.sensitivity("w4a8,w8a8", cache_dir=tmp_path)
    assert again.meta["cached"] == str(files[0]) and again.table == first.table


def test_fit_only_skips_the_sweep(comp):
    table = comp.sensitivity("w4a8,w8a8", metrics=("fit",), cache_dir=False)
    assert table.has("fit") and not table.has("sqnr")
    assert all("sqnr_db" not in e for row in table.table.values() for e in row.values())


def test_attention_candidates_allow_16_bit(tmp_path):
    from faaq_onnx.analysis.candidates import group_candidates
    from faaq_onnx.groups import QuantizerGroup

    g = QuantizerGroup("g:scores", "attention", ["mm"], [], ["act:q", "act:k"], 100, 0)
    assert [c.a for c in group_candidates(g, [Candidate(4, 8), Candidate(8, 8)])] == [16, 8]


def test_cache_key_follows_fisher_samples_and_learned_rounding(comp):
    """A table measured with 8 Fisher samples is not the one asked with 32 (the old key ignored it)."""
    from faaq_onnx.analysis.sensitivity import sweep_key
    from faaq_onnx.config import Candidate

    cands = [Candidate(4, 8), Candidate(8, 8)]
    args = (comp.float_proto, comp.inputs, comp.config, cands)
    assert sweep_key(*args, ("sqnr", "fit"), 8) != sweep_key(*args, ("sqnr", "fit"), 32)
    assert sweep_key(*args, ("sqnr",), 8) == sweep_key(
        *args, ("sqnr",), 32
    )  # FIT not measured: no matter
    assert sweep_key(*args, ("sqnr",), None, "w@4:adaround") != sweep_key(
        *args, ("sqnr",), None, ""
    )


@pytest.mark.parametrize("saturates", [True, False])
def test_cache_key_follows_what_reduce_range_auto_resolved_to(comp, monkeypatch, saturates):
    """--reduce-range auto keeps 8-bit weights at 7 bits on a CPU without VNNI: a table measured
    there must not be read back on a machine that keeps 8 (the setting says "auto" on both)."""
    from faaq_onnx.analysis.sensitivity import sweep_key
    from faaq_onnx.config import Candidate
    from faaq_onnx.runtime import capabilities

    args = (comp.float_proto, comp.inputs, comp.config, [Candidate(8, 8)], ("sqnr",))
    comp.config.reduce_range = "auto"
    monkeypatch.setattr(capabilities, "int8_products_saturate", lambda: saturates)
    here = sweep_key(*args)
    monkeypatch.setattr(capabilities, "int8_products_saturate", lambda: not saturates)
    assert sweep_key(*args) != here


def test_damage_ranking_and_markdown_of_a_known_table():
    """A table written by hand: SQNR turns into noise power, KL and FIT pass through,
    the ranking puts the most damaged group first, and the markdown has one column per
    candidate × metric."""
    from faaq_onnx.analysis.sensitivity import SensitivityTable
    from faaq_onnx.config import Candidate

    t = SensitivityTable(
        {
            "a": {
                "w4a8": {"sqnr_db": 20.0, "kl": 0.3, "fit": 5.0},
                "w8a8": {"sqnr_db": 40.0, "kl": 0.01, "fit": 0.1},
            },
            "b": {
                "w4a8": {"sqnr_db": 10.0, "kl": 0.1, "fit": 9.0},
                "w8a8": {"sqnr_db": 35.0, "kl": 0.02, "fit": 0.2},
            },
        }
    )
    w4 = Candidate.parse("w4a8")
    assert t.damage("a", w4, "sqnr") == pytest.approx(0.01)
    assert t.damage("b", w4, "sqnr") == pytest.approx(0.1)
    assert t.damage("a", w4, "kl") == 0.3 and t.damage("a", w4, "fit") == 5.0
    with pytest.raises(KeyError):
        t.damage("a", w4, "accuracy")
    assert t.ranking(w4, "sqnr") == ["b", "a"]
    assert t.ranking(w4, "kl") == ["a", "b"]
    assert t.ranking(None, "fit") == ["b", "a"]  # each group's lowest candidate
    assert t.ranking(Candidate.parse("w8a8"), "fit") == ["b", "a"]
    assert t.ranking(Candidate.parse("w2a8"), "kl") == [
        "a",
        "b",
    ]  # absent: falls back to the lowest
    lines = t.to_markdown().splitlines()
    assert lines[0].count("|") == 2 + 6 and lines[1] == "|---|" + "---|" * 6
    assert len(lines) == 4


def test_markdown_orders_candidates_by_weight_then_activation_bits():
    from faaq_onnx.analysis.sensitivity import SensitivityTable

    t = SensitivityTable(
        {"a": {"w8a8": {"sqnr_db": 40.0, "kl": 0.01}, "w4a16": {"sqnr_db": 20.0, "kl": 0.3}}}
    )
    assert t.to_markdown().splitlines() == [
        "| group | w4a16 sqnr_db | w4a16 kl | w8a8 sqnr_db | w8a8 kl |",
        "|---|---|---|---|---|",
        "| a | 20.00 | 0.3 | 40.00 | 0.01 |",
    ]


def test_sensitivity_samples_limit_what_the_probe_runs(tiny_cnn, cnn_calib):
    comp = Compilation(
        tiny_cnn, cnn_calib, QuantConfig(progress=False, sensitivity_samples=5), target_opset=21
    )
    assert all(len(r) == 5 for r in comp.prober.reference)
    full = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)
    assert all(len(r) > 5 for r in full.prober.reference)


def test_auto_samples_double_from_8_to_what_there_is():
    from faaq_onnx.analysis.sensitivity import auto_chunks

    assert auto_chunks(64) == [8, 16, 32, 64]
    assert auto_chunks(100) == [8, 16, 32, 64, 100]
    assert auto_chunks(8) == [8]
    assert auto_chunks(10) == [8, 10]
    assert auto_chunks(5) == [5]


def _auto_and_fixed(tiny_cnn, n_fixed):
    """An automatic sweep over 64 samples and a fixed one over its first n_fixed."""
    calib = {"input": np.random.default_rng(3).standard_normal((64, 3, 16, 16)).astype(np.float32)}
    auto = Compilation(tiny_cnn, calib, QuantConfig(progress=False), target_opset=21)
    got = auto.sensitivity("w2a8,w4a8,w8a8", ("sqnr", "kl"), cache_dir=False)
    fixed = Compilation(
        tiny_cnn, calib, QuantConfig(progress=False, sensitivity_samples=n_fixed), target_opset=21
    )
    want = fixed.sensitivity("w2a8,w4a8,w8a8", ("sqnr", "kl"), cache_dir=False)
    return auto, got, want


def _same_tables(got, want):
    assert got.table.keys() == want.table.keys()
    for g, row in want.table.items():
        for c, entry in row.items():
            assert got.table[g][c]["sqnr_db"] == pytest.approx(entry["sqnr_db"], abs=1e-3), (g, c)
            assert got.table[g][c]["kl"] == pytest.approx(entry["kl"], rel=1e-4, abs=1e-9), (g, c)


def test_auto_sweep_stops_at_8_samples_when_their_ranking_holds(tiny_cnn):
    """2, 4 and 8 bits rank apart on any 4 samples: the sweep stops at its first chunk, measures
    what an 8-sample sweep measures, says so, and later joint measurements use those 8."""
    auto, got, want = _auto_and_fixed(tiny_cnn, 8)
    assert got.meta["samples"] == 8
    assert got.meta["samples_auto"] == {"available": 64, "first": 8, "tau": 0.9}
    assert got.meta["ranking_tau_halves"] >= 0.9
    _same_tables(got, want)
    assert all(len(r) == 8 for r in auto.prober.reference)


def test_auto_sweep_adds_samples_while_the_ranking_moves(tiny_cnn, monkeypatch):
    """Where no chunk's ranking holds, every sample is swept, chunk by chunk (8 + 8 + 16 + 32), and
    the merged chunks measure what one sweep over all 64 measures."""
    import faaq_onnx.analysis.sensitivity as sens

    monkeypatch.setattr(sens, "AUTO_TAU", 1.01)
    auto, got, want = _auto_and_fixed(tiny_cnn, 64)
    assert got.meta["samples"] == 64
    assert got.meta["ranking_tau_halves"] == want.meta["ranking_tau_halves"]
    _same_tables(got, want)
    assert all(len(r) == 64 for r in auto.prober.reference)


@pytest.mark.parametrize(
    "plain, weighted, stops_at, plateau",
    [
        ([0.78, 0.75, 0.80, 0.76], [0.89, 0.91, 0.92, 0.91], 16, 0.91),  # PP-OCRv4 rec's values
        ([0.78, 0.80, 0.79, 0.85], [0.93, 0.93, 0.95, 0.95], 32, 0.95),  # rose once, then not
        ([0.78, 0.75, 0.74, 0.73], [0.85, 0.86, 0.88, 0.89], 64, None),  # the top moves too
        ([0.80, 0.85, 0.92, 0.95], [0.95, 0.95, 0.95, 0.95], 32, None),  # tau reached
    ],
)
def test_auto_sweep_stops_when_more_samples_no_longer_steady_the_ranking(
    monkeypatch, plain, weighted, stops_at, plateau
):
    """Doubling without tau rising stops the sweep only where the weighted tau holds; the last
    chunk is all the samples anyway."""
    import faaq_onnx.analysis.suffix_sweep as ss
    from faaq_onnx.analysis.sensitivity import sweep_chunks

    def fake_tau(per_sample, weighted_tau=False):
        n = len(next(iter(per_sample.values()))[0])
        return (weighted if weighted_tau else plain)[[8, 16, 32, 64].index(n)]

    monkeypatch.setattr(ss, "split_half_tau", lambda p, weighted=False: fake_tau(p, weighted))

    def measure(chunk):
        n = len(chunk["x"])
        return {("g", "w4a8"): (np.ones(n), np.zeros(n)), ("h", "w4a8"): (np.ones(n), np.zeros(n))}

    _, tau, samples, stopped = sweep_chunks(measure, {"x": np.arange(64)}, [8, 16, 32, 64])
    assert samples == stops_at and stopped == plateau
    assert tau == plain[[8, 16, 32, 64].index(stops_at)]
