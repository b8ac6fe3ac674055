"""The sweep from cuts of one float pass measures what a whole-model probe run measures."""

from __future__ import annotations

import numpy as np
import pytest

from faaq_onnx.analysis.candidates import group_candidates, parse_candidates
from faaq_onnx.analysis.suffix_sweep import SuffixSweep
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation


@pytest.mark.parametrize("model", ["tiny_cnn", "foreign_cnn"])
def test_every_configuration_measures_as_the_whole_probe_does(request, model):
    """Every group x candidate of `wide` (weights and activations at 4-16 bits), on a plain
    CNN and on one with branches (SAME Pad, HardSwish, a Gemm head): the suffix run's SQNR
    and KL equal the whole probe's on the same samples, to float reassociation."""
    rng = np.random.default_rng(1)
    calib = {"input": rng.standard_normal((24, 3, 16, 16)).astype(np.float32)}
    comp = Compilation(
        request.getfixturevalue(model), calib, QuantConfig(progress=False), target_opset=21
    )
    cands = parse_candidates("wide")
    jobs = [(g, c) for g in comp.qgraph.groups.values() for c in group_candidates(g, cands)]
    assert len(comp.qgraph.groups) >= 4
    got = SuffixSweep(comp.prober, comp.float_proto).measure(jobs)
    assert len(got) == len(jobs)
    for g, c in jobs:
        want = comp.prober.measure({g.name: c})
        entry = got[(g.name, str(c))]
        # the noise powers within 1 %: ORT's full optimizations reassociate float sums, which
        # shows at 16-bit activations (96 dB)
        assert entry["sqnr_db"] == pytest.approx(want["sqnr_db"], abs=0.05), (g.name, str(c))
        assert entry["kl"] == pytest.approx(want["kl"], rel=1e-3, abs=1e-9), (g.name, str(c))


def test_the_sweep_states_how_stable_its_ranking_is(tiny_cnn):
    """The table's meta carries Kendall tau between the SQNR ranking on the first and on the
    second half of the samples, recomputed here from the per-sample ratios the sweep kept."""
    from faaq_onnx.analysis.metrics import kendall_tau, ratio_db

    rng = np.random.default_rng(2)
    calib = {"input": rng.standard_normal((16, 3, 16, 16)).astype(np.float32)}
    comp = Compilation(tiny_cnn, calib, QuantConfig(progress=False), target_opset=21)
    cands = parse_candidates("w2a8,w4a8,w8a8")
    jobs = [(g, c) for g in comp.qgraph.groups.values() for c in group_candidates(g, cands)]
    sweep = SuffixSweep(comp.prober, comp.float_proto)
    sweep.measure(jobs)
    halves = [
        [ratio_db(float(np.mean(sweep.per_sample[(g.name, str(c))][0][part]))) for g, c in jobs]
        for part in (slice(0, 8), slice(8, 16))
    ]
    assert sweep.split_half_tau() == pytest.approx(kendall_tau(*halves), abs=1e-3)
    table = comp.sensitivity("w2a8,w4a8,w8a8", ("sqnr", "kl"), cache_dir=False)
    assert table.meta["ranking_tau_halves"] == sweep.split_half_tau()
    assert 0.5 < table.meta["ranking_tau_halves"] <= 1.0  # 2, 4 and 8 bits rank apart


def test_split_half_tau_ranks_the_jobs_on_each_half_of_the_samples():
    """Three jobs over four samples: by the first two samples a > b > c, by the last two a > c > b
    (one discordant pair of three: tau 1/3); fewer than three jobs or four samples: None."""
    from faaq_onnx.analysis.suffix_sweep import split_half_tau

    kl = np.zeros(4)
    per_sample = {
        "a": (np.array([100.0, 100.0, 90.0, 90.0]), kl),
        "b": (np.array([50.0, 30.0, 1.0, 3.0]), kl),
        "c": (np.array([10.0, 10.0, 20.0, 20.0]), kl),
    }
    assert split_half_tau(per_sample) == pytest.approx(0.333, abs=1e-9)
    # samples whose order changes with any other split: (0, 1) | (2, 3) gives -1/3
    mixed = {
        "a": (np.array([62.0, 94.0, 37.0, 20.0]), kl),
        "b": (np.array([29.0, 51.0, 56.0, 3.0]), kl),
        "c": (np.array([64.0, 17.0, 63.0, 88.0]), kl),
    }
    assert split_half_tau(mixed) == pytest.approx(-0.333, abs=1e-9)
    # five samples: the first two, then the last three (a > b > c, then b > a > c)
    five = {
        "a": (np.array([100.0, 100.0, 1.0, 90.0, 90.0]), np.zeros(5)),
        "b": (np.array([50.0, 30.0, 200.0, 1.0, 3.0]), np.zeros(5)),
        "c": (np.array([10.0, 10.0, 20.0, 20.0, 20.0]), np.zeros(5)),
    }
    assert split_half_tau(five) == pytest.approx(0.333, abs=1e-9)  # 1 at a cut after sample 1
    assert split_half_tau(dict(list(per_sample.items())[:2])) is None
    short = {k: (r[:3], kl[:3]) for k, (r, _) in per_sample.items()}
    assert split_half_tau(short) is None
    four = {**per_sample, "d": (np.array([5.0, 5.0, 5.0, 5.0]), kl)}  # below b, then above it
    assert split_half_tau(four) == pytest.approx(0.333, abs=1e-9)  # 4 of 6 pairs agree


def test_weighted_split_half_tau_weighs_the_lowest_sqnr_most():
    """Two near-lossless jobs swap between halves while the damaging ones keep their order:
    plain tau pays for the swap as for any, the weighted one (lowest SQNR first) hardly."""
    from faaq_onnx.analysis.suffix_sweep import split_half_tau

    kl = np.zeros(4)
    per_sample = {
        "worst": (np.array([1.0, 1.0, 1.0, 1.0]), kl),
        "bad": (np.array([10.0, 10.0, 10.0, 10.0]), kl),
        "fair": (np.array([100.0, 100.0, 100.0, 100.0]), kl),
        "fine": (np.array([1e6, 1e6, 3e6, 3e6]), kl),
        "finer": (np.array([2e6, 2e6, 1e6, 1e6]), kl),
    }
    plain, weighted = split_half_tau(per_sample), split_half_tau(per_sample, weighted=True)
    assert plain == pytest.approx(0.8, abs=1e-9)  # 9 of 10 pairs agree
    assert plain < weighted < 1.0
    swapped_top = dict(per_sample, worst=(np.array([1.0, 1.0, 20.0, 20.0]), kl))
    assert split_half_tau(swapped_top, weighted=True) < weighted


def _batch_one_state_model():
    """x [1, 8] (a fixed batch of one) and a recurrent state [2, 1, 8] fed whole per sample: its
    first row hs [1, 8] is added to x and, summed, to the second MatMul's output, which a
    Squeeze on axis 0 then reads. The cut in front of the second MatMul holds hs, a [1, 8]
    tensor whose axis 0 only looks like a sample axis."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W1"),
        nh.from_array(rng.standard_normal((4, 4)).astype(np.float32), "W2"),
        nh.from_array(np.array([0], np.int64), "axis0"),
        nh.from_array(np.array([1], np.int64), "axis1"),
        nh.from_array(np.array(0, np.int64), "first"),
    ]
    nodes = [
        h.make_node("Gather", ["state", "first"], ["hs"], axis=0),  # [1, 8]
        h.make_node("Add", ["x", "hs"], ["x2"]),
        h.make_node("MatMul", ["x2", "W1"], ["a"]),
        h.make_node("MatMul", ["a", "W2"], ["c"]),
        h.make_node("ReduceSum", ["hs", "axis1"], ["hsum"], keepdims=1),  # [1, 1]
        h.make_node("Add", ["c", "hsum"], ["d"]),
        h.make_node("Squeeze", ["d", "axis0"], ["e"]),  # [4]: fails unless axis 0 is 1
        h.make_node("Unsqueeze", ["e", "axis0"], ["y"]),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("x", T.FLOAT, [1, 8]),
            h.make_tensor_value_info("state", T.FLOAT, [2, 1, 8]),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 4])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_cut_computed_at_a_fixed_batch_of_one_goes_back_one_sample_at_a_time(tmp_path):
    """silero-vad's 16 kHz model (batch 1, a recurrent state fed whole per sample): the suffix
    runs from the cut at a later group must use the batch the float pass used, not the probe's
    usual 8 (a Squeeze on axis 0 failed at [8, 1, 128]); measured as the whole probe does."""
    import onnx

    src = tmp_path / "m.onnx"
    onnx.save(_batch_one_state_model(), src)
    rng = np.random.default_rng(3)
    calib = {
        "x": rng.standard_normal((12, 8)).astype(np.float32),
        "state": rng.standard_normal((12, 2, 1, 8)).astype(np.float32),
    }
    comp = Compilation(str(src), calib, QuantConfig(progress=False), target_opset=21)
    cands = parse_candidates("w4a8,w8a8")
    jobs = [(g, c) for g in comp.qgraph.groups.values() for c in group_candidates(g, cands)]
    assert any("W2" in g.weights for g, _ in jobs)
    got = SuffixSweep(comp.prober, comp.float_proto).measure(jobs)
    for g, c in jobs:
        want = comp.prober.measure({g.name: c})
        assert got[(g.name, str(c))]["sqnr_db"] == pytest.approx(want["sqnr_db"], abs=0.05)
