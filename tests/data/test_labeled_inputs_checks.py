"""data/labeled_inputs.py's checks by their exact messages, float handling, and named feeds."""

from types import SimpleNamespace

import numpy as np
import pytest

from faaq_onnx.data.labeled_inputs import (
    is_multi_input_labeled,
    load_labeled_data,
    load_labeled_inputs,
    named_feeds,
)
from faaq_onnx.errors import FaaqError


def msg(fn, *a, **k):
    with pytest.raises(FaaqError) as e:
        fn(*a, **k)
    return str(e.value)


def test_which_files_are_multi_input_labeled(tmp_path):
    np.savez(tmp_path / "m.npz", ids=np.zeros((2, 3)), y=np.zeros(2))
    np.savez(tmp_path / "only_y.npz", y=np.zeros(2))
    np.savez(tmp_path / "no_y.npz", ids=np.zeros((2, 3)))
    np.save(tmp_path / "a.npy", np.zeros(2))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert is_multi_input_labeled(tmp_path / "m.npz")
    assert not is_multi_input_labeled(tmp_path / "only_y.npz")
    assert not is_multi_input_labeled(tmp_path / "no_y.npz")
    assert not is_multi_input_labeled(tmp_path / "a.npy")
    assert not is_multi_input_labeled(tmp_path / "bad.npz")
    assert not is_multi_input_labeled(tmp_path)


def test_label_checks(tmp_path):
    ids = np.arange(12).reshape(4, 3)
    cases = {
        "only_y": (
            {"y": np.zeros(4, np.int64)},
            "labeled data only_y.npz holds labels 'y' but no input arrays",
        ),
        "y2d": (
            {"ids": ids, "y": np.zeros((4, 1), np.int64)},
            "labels 'y' in y2d.npz must be a 1-D integer array, got shape (4, 1) dtype int64",
        ),
        "ystr": (
            {"ids": ids, "y": np.array(["a", "b", "c", "d"])},
            "labels 'y' in ystr.npz must be a 1-D integer array, got shape (4,) dtype <U1",
        ),
        "yfrac": (
            {"ids": ids, "y": np.array([0, 1.5, 2, 3])},
            "labels 'y' in yfrac.npz are not whole numbers",
        ),
        "ynan": (
            {"ids": ids, "y": np.array([0, np.nan, 2, 3])},
            "labels 'y' in ynan.npz are not whole numbers",
        ),
        "scalar": (
            {"ids": np.float32(1.0), "y": np.zeros(4, np.int64)},
            "scalar.npz: input 'ids' has 0 samples but 'y' has 4",
        ),
    }
    for name, (arrays, want) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        assert msg(load_labeled_inputs, tmp_path / f"{name}.npz") == want, name


def test_float_labels_and_arrays(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        ids=np.arange(12).reshape(4, 3).astype(np.int32),
        emb=np.ones((4, 2), np.float64),
        y=np.array([0.0, 1.0, 2.0, 1.0]),
    )
    x, y = load_labeled_inputs(tmp_path / "d.npz")
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 1]
    assert x["ids"].dtype == np.int32 and x["emb"].dtype == np.float32
    x3, y3 = load_labeled_inputs(tmp_path / "d.npz", limit=3, seed=1)
    assert len(y3) == 3 and all(len(a) == 3 for a in x3.values())
    # x rows stay with their labels
    rows = {tuple(r) for r in x["ids"]}
    assert all(tuple(r) in rows for r in x3["ids"])
    xd, yd = load_labeled_data(tmp_path / "d.npz")
    assert isinstance(xd, dict) and yd.tolist() == [0, 1, 2, 1]


def test_named_feeds_check_names_rank_and_fixed_dims():
    inputs = [
        SimpleNamespace(name="ids", shape=["n", 3]),
        SimpleNamespace(name="m", shape=["n", "s"]),
    ]
    x = {"ids": np.zeros((2, 3)), "m": np.zeros((2, 7))}
    out = named_feeds(inputs, x)
    assert out == x and out is not x
    assert msg(named_feeds, inputs, {"ids": x["ids"]}) == (
        "labeled data holds inputs ['ids']; the model takes ['ids', 'm']"
    )
    assert msg(named_feeds, inputs, {"ids": np.zeros((2, 4)), "m": x["m"]}) == (
        "data shape (2, 4) does not fit model input 'ids' ['n', 3]"
    )
    assert msg(named_feeds, inputs, {"ids": np.zeros((2, 3, 1)), "m": x["m"]}) == (
        "data shape (2, 3, 1) does not fit model input 'ids' ['n', 3]"
    )
