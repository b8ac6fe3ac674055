"""data/labeled.py: labels files line by line, x/y checks by their exact messages, and the
seeded subset a limit takes (seed 0 unless given)."""

import numpy as np
import pytest

from faaq_onnx.data.labeled import load_labeled, read_labels_file
from faaq_onnx.data.readers import _subset
from faaq_onnx.errors import FaaqError


def msg(fn, *a, **k):
    with pytest.raises(FaaqError) as e:
        fn(*a, **k)
    return str(e.value)


def test_labels_file_formats(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("# comment\n\na.png, 3\nb.png\t4\n  c.png 5  \nd.png,6,\n")
    assert read_labels_file(p) == [("a.png", 3), ("b.png", 4), ("c.png", 5), ("d.png", 6)]
    p.write_text("a.png, 1\nb.png, x\n")
    assert msg(read_labels_file, p) == (
        f"labels file {p} line 2: expected 'FILENAME, LABEL', got 'b.png, x'"
    )
    p.write_text("a.png 1 2\n")
    assert msg(read_labels_file, p) == (
        f"labels file {p} line 1: expected 'FILENAME, LABEL', got 'a.png 1 2'"
    )
    p.write_text("# only a comment\n\n")
    assert msg(read_labels_file, p) == f"labels file {p} is empty"
    p.write_bytes(b"\xff\xfe\x00bad")
    assert msg(read_labels_file, p).startswith(f"cannot read labels file {p}: ")


def test_xy_checks(tmp_path):
    x = np.zeros((4, 2), np.float32)
    np.savez(tmp_path / "nox.npz", y=np.zeros(4))
    assert msg(load_labeled, tmp_path / "nox.npz") == (
        "labeled data nox.npz needs arrays 'x' and 'y'; found: y"
    )
    np.savez(tmp_path / "y2.npz", x=x, y=np.zeros((4, 1), np.int64))
    assert msg(load_labeled, tmp_path / "y2.npz") == (
        "labels 'y' in y2.npz must be a 1-D integer array, got shape (4, 1) dtype int64"
    )
    np.savez(tmp_path / "yf.npz", x=x, y=np.array([0, 0.5, 1, 1]))
    assert msg(load_labeled, tmp_path / "yf.npz") == "labels 'y' in yf.npz are not whole numbers"
    np.savez(tmp_path / "n.npz", x=x[:3], y=np.zeros(4, np.int64))
    assert msg(load_labeled, tmp_path / "n.npz") == "n.npz: 'x' has 3 samples but 'y' has 4"
    np.savez(tmp_path / "ok.npz", x=np.arange(8).reshape(4, 2), y=np.array([0.0, 1.0, 2.0, 1.0]))
    xx, yy = load_labeled(tmp_path / "ok.npz")
    assert xx.dtype == np.float32 and yy.dtype == np.int64 and yy.tolist() == [0, 1, 2, 1]


def test_a_limit_takes_the_seeded_subset(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20))
    xs, ys = load_labeled(tmp_path / "d.npz", limit=5)
    np.testing.assert_array_equal(ys, _subset(20, 5, 0))  # seed 0 by default
    np.testing.assert_array_equal(xs, x[ys])
    _, y7 = load_labeled(tmp_path / "d.npz", limit=5, seed=7)
    np.testing.assert_array_equal(y7, _subset(20, 5, 7))
    assert _subset(20, 20, 0) is None and _subset(20, None, 0) is None
    assert msg(_subset, 20, 0, 0) == "limit must be a positive integer, got 0"
    assert msg(_subset, 20, True, 0) == "limit must be a positive integer, got True"


def test_image_folders_need_their_labels(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    assert msg(load_labeled, folder) == (
        f"image folder {folder} needs a labels file (FILENAME, LABEL lines); pass labels="
    )
    (folder / "labels.txt").write_text("missing.png, 1\n")
    assert msg(load_labeled, folder) == (
        f"labels file labels.txt names missing.png, which is not in {folder}"
    )
    (folder / "labels.txt").unlink()
    (tmp_path / "imgs_labels.txt").write_text("gone.png, 2\n")
    assert msg(load_labeled, folder) == (
        f"labels file imgs_labels.txt names gone.png, which is not in {folder}"
    )
