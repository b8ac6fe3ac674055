"""runtime/runner.py on a stand-in session that records every feed: batch sizes, padding of a
ragged last batch, what is cut off again, and the per-channel means."""

from types import SimpleNamespace

import numpy as np
import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime.runner import channel_means, run_all, run_batches, session_batch_size


class Session:
    """Inputs `shapes` (name -> shape); run() returns [x * 2, the constant [7, 7, 7]]."""

    def __init__(self, shapes):
        self.shapes, self.feeds, self.names = shapes, [], []

    def get_inputs(self):
        return [SimpleNamespace(name=k, shape=s) for k, s in self.shapes.items()]

    def run(self, names, feed):
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        self.names.append(names)
        outs = {"y": feed["x"] * 2, "c": np.full(3, 7.0)}
        return [outs[n] for n in (names or ["y", "c"])]


def test_batch_size_from_the_first_fixed_data_input():
    assert session_batch_size(Session({"x": ["N", 3]}), 16) == 16
    assert session_batch_size(Session({"x": [4, 3]}), 16) == 4
    assert session_batch_size(Session({"x": [0, 3]}), 16) == 16  # 0: unknown, not fixed
    assert session_batch_size(Session({"x": [None, 3]}), 16) == 16
    assert session_batch_size(Session({"s": [], "x": ["N"]}), 16) == 16  # a scalar says nothing
    two = Session({"w": [4], "x": [2, 3], "y": [5, 3]})
    assert session_batch_size(two, 16) == 4
    assert session_batch_size(two, 16, data=["x", "y"]) == 2  # weights fed whole are skipped
    assert session_batch_size(two, 16, data=["y"]) == 5
    assert session_batch_size(two, 16, data=[]) == 16


def test_free_batch_runs_consecutive_slices():
    s = Session({"x": ["N", 2]})
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    got = list(run_batches(s, {"x": x}, 4, output_names=["y", "c"]))
    assert [start for start, _ in got] == [0, 4, 8]
    assert [len(f["x"]) for f in s.feeds] == [4, 4, 2] and s.names == [["y", "c"]] * 3
    np.testing.assert_array_equal(np.concatenate([o[0] for _, o in got]), x * 2)
    np.testing.assert_array_equal(got[2][1][1], [7, 7, 7])


def test_fixed_batch_pads_the_last_batch_with_its_own_samples_and_cuts_the_outputs():
    s = Session({"x": [4, 2]})
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    outs = run_all(s, {"x": x}, batch_size=32)
    assert [len(f["x"]) for f in s.feeds] == [4, 4, 4]  # exactly 4 each run, whatever was asked
    np.testing.assert_array_equal(s.feeds[-1]["x"], x[[8, 9, 8, 9]])
    np.testing.assert_array_equal(outs[0], x * 2)  # every sample once
    # an output without the batch axis is not cut
    np.testing.assert_array_equal(outs[1], np.full(9, 7.0))


def test_fixed_batch_with_too_few_samples_is_refused():
    with pytest.raises(FaaqError) as e:
        list(run_batches(Session({"x": [4, 2]}), {"x": np.zeros((3, 2))}, 8))
    assert str(e.value) == (
        "the model takes batches of exactly 4 samples, but only 3 were given: give at least 4"
    )
    assert len(list(run_batches(Session({"x": [4, 2]}), {"x": np.zeros((4, 2))}, 8))) == 1


def test_extra_feeds_go_with_every_batch():
    s = Session({"x": ["N", 2], "w": [3]})
    w = np.array([1.0, 2.0, 3.0])
    list(run_batches(s, {"x": np.zeros((5, 2))}, 2, extra_feeds={"w": w}))
    assert len(s.feeds) == 3 and all(np.array_equal(f["w"], w) for f in s.feeds)


def test_stacked_inputs_run_one_sample_at_a_time():
    s = Session({"x": [3, 2]})  # the model takes one (3, 2) feed; 5 samples stacked on top
    x = np.arange(30, dtype=np.float32).reshape(5, 3, 2)
    outs = run_all(s, {"x": x}, batch_size=4)
    assert len(s.feeds) == 5 and all(f["x"].shape == (3, 2) for f in s.feeds)
    np.testing.assert_array_equal(outs[0], x * 2)
    assert outs[1].shape == (5, 3)  # each sample's whole output gets a sample axis


def test_channel_means_on_any_axis():
    s = Session({"x": ["N", 3, 2]})
    x = np.random.default_rng(0).standard_normal((7, 3, 2)).astype(np.float32)
    (m1,) = channel_means(s, {"x": x}, 3, ["y"])[:1]
    np.testing.assert_allclose(m1, (x * 2).mean(axis=(0, 2)), rtol=1e-6)
    m2 = channel_means(Session({"x": ["N", 3, 2]}), {"x": x}, 3, ["y"], axis=2)[0]
    np.testing.assert_allclose(m2, (x * 2).mean(axis=(0, 1)), rtol=1e-6)


def test_channel_means_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="at least one sample"):
        channel_means(Session({"x": ["N", 2]}), {"x": np.zeros((0, 2))}, 4, ["y"])
