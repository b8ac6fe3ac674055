"""runtime/spill.py: kept tensors in a file read back bit for bit, and a layer-by-layer pass that
spills every kept tensor gives the same model as one that keeps them in memory."""

from __future__ import annotations

import glob
import os
import tempfile

import numpy as np
import onnx
import pytest

from faaq_onnx.runtime import segments, spill
from faaq_onnx.runtime.runner import channel_sums
from faaq_onnx.runtime.segments import SegmentedRun
from faaq_onnx.runtime.spill import SpilledArray
from tests.runtime.test_segments import residual_model


def _x(n=9, seed=2):
    return np.random.default_rng(seed).normal(size=(n, 3, 6, 6)).astype(np.float32)


def test_a_spilled_array_reads_back_what_was_written_by_rows(monkeypatch):
    x = _x(11)
    a = SpilledArray(11, x.shape[1:], np.float32)
    for s in range(0, 11, 4):  # as a segment's batches arrive: 4 + 4 + 3
        a.write(s, x[s : s + 4])
    assert a.shape == x.shape and a.ndim == 4 and len(a) == 11 and a.nbytes == x.nbytes
    assert os.path.getsize(a.path) == x.nbytes
    np.testing.assert_array_equal(np.asarray(a), x)
    np.testing.assert_array_equal(a[3:7], x[3:7])
    np.testing.assert_array_equal(a[9:20], x[9:])  # past the end: what is there
    np.testing.assert_array_equal(a[[0, 5]], x[[0, 5]])  # anything else: through a full read
    np.testing.assert_array_equal(a[4], x[4])  # a row: that row alone
    np.testing.assert_array_equal(a[np.int64(-1)], x[-1])
    with pytest.raises(IndexError):
        a[11]
    rows = np.array([7, 2, 7, 0, 10])  # a reconstruction batch: any order, repeats
    np.testing.assert_array_equal(a[rows], x[rows])
    np.testing.assert_array_equal(a.take(rows.astype(np.int32)), x[rows])
    monkeypatch.setattr(spill, "CHUNK_BYTES", 3 * x[0].nbytes)  # chunks of 3 samples
    assert [s for s, _ in a.chunks()] == [0, 3, 6, 9]
    got, n = channel_sums(a, 1)
    want, m = channel_sums(x, 1)
    np.testing.assert_allclose(got, want, rtol=1e-12) and None
    assert n == m
    delta = np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1)
    a.add_(delta)
    np.testing.assert_array_equal(np.asarray(a), x + delta)
    path = a.path
    a.close()
    assert not os.path.exists(path)


def test_a_run_that_spills_every_kept_tensor_gives_the_same_values(monkeypatch):
    x = _x()
    in_memory = SegmentedRun(residual_model(), {"x": x}, batch_size=4)
    want = {t: in_memory.get(t).copy() for t in ("a2", "b")}
    in_memory.shift("a", np.ones(4, np.float32))
    want["c"] = in_memory.get("c")
    monkeypatch.setattr(segments, "SPILL_BYTES", 0)
    run = SegmentedRun(residual_model(), {"x": x}, batch_size=4)
    lazy = run.get("a2", lazy=True)
    assert isinstance(lazy, SpilledArray) and isinstance(run.kept["a"], SpilledArray)
    np.testing.assert_array_equal(np.asarray(lazy), want["a2"])
    got_b = run.get("b")
    assert isinstance(got_b, np.ndarray)  # not lazy: read whole
    np.testing.assert_array_equal(got_b, want["b"])
    run.shift("a", np.ones(4, np.float32))  # in the file
    np.testing.assert_array_equal(run.get("c"), want["c"])
    path = run.kept["a"].path if "a" in run.kept else None
    run.get("y")
    assert "a" not in run.kept and (path is None or not os.path.exists(path))  # file removed


def test_quantizing_with_every_kept_tensor_in_a_file_writes_the_same_model(
    monkeypatch, tiny_cnn, cnn_calib, tmp_path
):
    """GPTQ on the quantized model's inputs, then bias correction, layer by layer (the default
    below 8 bits): the same bytes whether the pass keeps its tensors in memory or in files."""
    pytest.importorskip("torch")
    from faaq_onnx import quantize
    from faaq_onnx.config import QuantConfig

    def run(out):
        config = QuantConfig(scheme="w4a8", optimize=("auto",), progress=False)
        quantize(tiny_cnn, cnn_calib, str(out), config, cache_dir=False)
        return onnx.load(out)

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "faaq-kept-*")))
    memory = run(tmp_path / "memory.onnx")
    monkeypatch.setattr(segments, "SPILL_BYTES", 0)
    files = run(tmp_path / "files.onnx")
    assert [t.raw_data for t in memory.graph.initializer] == [
        t.raw_data for t in files.graph.initializer
    ]
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "faaq-kept-*"))) == before


@pytest.mark.parametrize(("optimize", "extra"), [("adaround", {}), ("brecq", {"qdrop": 0.5})])
def test_learned_rounding_reads_its_kept_tensors_from_files_to_the_same_result(
    monkeypatch, tiny_cnn, cnn_calib, tmp_path, optimize, extra
):
    """AdaRound (with each Conv's loss on sampled positions, and on whole tensors) and BRECQ
    + QDrop take every sample: with every tensor in a file they read each batch's rows from
    it, and learn the same codes as from memory."""
    pytest.importorskip("torch")
    from faaq_onnx import quantize
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.optimize import reconstruct

    def run(out, positions="all"):
        config = QuantConfig(
            scheme="w4a8",
            optimize=(optimize,),
            optimize_iters=30,
            optimize_positions=positions,
            optimize_inputs="mixed",
            progress=False,
            **extra,
        )
        result = quantize(tiny_cnn, cnn_calib, str(out), config, cache_dir=False)
        return onnx.load(out), result.report["optimization"]["rounding"]

    for positions in ("all", "sampled") if optimize == "adaround" else ("all",):
        monkeypatch.setattr(segments, "SPILL_BYTES", 1 << 40)
        memory, report = run(tmp_path / f"memory_{positions}.onnx", positions)
        monkeypatch.setattr(segments, "SPILL_BYTES", 0)
        files, _ = run(tmp_path / f"files_{positions}.onnx", positions)
        assert [t.raw_data for t in memory.graph.initializer] == [
            t.raw_data for t in files.graph.initializer
        ]
        monkeypatch.setattr(segments, "SPILL_BYTES", 1 << 40)  # in memory, gathered per batch
        monkeypatch.setattr(reconstruct, "RESIDENT_BYTES", 0)
        gathered, _ = run(tmp_path / f"gathered_{positions}.onnx", positions)
        monkeypatch.setattr(reconstruct, "RESIDENT_BYTES", 256 << 20)
        assert [t.raw_data for t in memory.graph.initializer] == [
            t.raw_data for t in gathered.graph.initializer
        ]
        assert next(iter(report.values()))["samples"] == len(cnn_calib["input"])


def test_no_room_for_a_kept_tensor_is_one_line(monkeypatch):
    from faaq_onnx.errors import FaaqError

    a = SpilledArray(4, (2, 3), np.float32)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spill, "open", full, raising=False)  # shadows the builtin in spill.py
    with pytest.raises(FaaqError, match=r"cannot keep a 0 MB tensor in .*No space left.*TMPDIR"):
        a.write(0, np.zeros((4, 2, 3), np.float32))


def test_a_file_still_referenced_at_exit_is_removed_then():
    a = SpilledArray(2, (3,), np.float32)
    assert a._remove.alive and a._remove.atexit  # weakref.finalize runs at interpreter exit
    path = a.path
    del a
    assert not os.path.exists(path)


def test_an_unwritable_temporary_folder_is_one_line(tmp_path):
    from faaq_onnx.errors import FaaqError

    with pytest.raises(FaaqError, match=r"cannot keep a 0 MB tensor in a file in .*TMPDIR"):
        SpilledArray(4, (2, 3), np.float32, folder=str(tmp_path / "missing"))
