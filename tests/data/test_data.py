"""Data loading: every source gives the same arrays, every user mistake a one-line FaaqError."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faaq_onnx import data
from faaq_onnx.data import (
    apply_preset,
    iter_batches,
    load_inputs,
    load_labeled,
    resolve_data_path,
)
from faaq_onnx.errors import FaaqError

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SHAPE = {"input": ["batch", 3, 4, 4]}


def _rng():
    return np.random.default_rng(0)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


# --- presets --------------------------------------------------------------------------


def test_cifar10_preset_normalizes_and_transposes():
    x = _rng().integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    got = apply_preset(x, "cifar10")
    assert got.shape == (2, 3, 32, 32) and got.dtype == np.float32
    want = ((x.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_imagenet_preset_resizes_shorter_side_and_center_crops():
    # a 300x400 (HxW) image with a bright centre: the crop must keep the centre
    x = np.zeros((1, 300, 400, 3), np.uint8)
    x[0, 100:200, 150:250] = 255
    got = apply_preset(x, "imagenet")
    assert got.shape == (1, 3, 224, 224)
    centre = got[0, :, 112, 112] * STD + MEAN
    corner = got[0, :, 0, 0] * STD + MEAN
    np.testing.assert_allclose(centre, 1.0, atol=1e-5)
    np.testing.assert_allclose(corner, 0.0, atol=1e-5)


def test_imagenet_inception_preset_arithmetic(tmp_path):
    # a tiny 4x6 (HxW) image, one flat colour per channel: resize + crop keep the
    # colour exactly, so every pixel must be (v / 255 - 0.5) / 0.5
    x = np.empty((1, 4, 6, 3), np.uint8)
    x[..., 0], x[..., 1], x[..., 2] = 0, 51, 255
    got = apply_preset(x, "imagenet-inception")
    assert got.shape == (1, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got[0, 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(got[0, 1], 51 / 255 / 0.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(got[0, 2], 1.0, atol=1e-6)
    # same resize and crop as 'imagenet', only the normalization differs
    g = _rng().integers(0, 256, (2, 300, 260, 3), dtype=np.uint8)
    inc, imn = apply_preset(g, "imagenet-inception"), apply_preset(g, "imagenet")
    want = ((imn * STD[:, None, None] + MEAN[:, None, None]) - 0.5) / 0.5
    np.testing.assert_allclose(inc, want, atol=1e-5)
    assert inc.min() >= -1.0 and inc.max() <= 1.0
    # image files go through the same arithmetic
    (tmp_path / "imgs").mkdir()
    Image.fromarray(g[1]).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "labels.txt").write_text("a.png, 3\n")
    fx, fy = load_labeled(
        tmp_path / "imgs", preset="imagenet-inception", labels=tmp_path / "labels.txt"
    )
    np.testing.assert_allclose(fx[0], inc[1], atol=1e-6)
    np.testing.assert_array_equal(fy, [3])


def test_model_preset_reads_metadata():
    import onnx

    m = onnx.ModelProto()
    assert data.model_preset(m) is None
    m.metadata_props.add(key=data.PRESET_METADATA_KEY, value="imagenet-inception")
    assert data.model_preset(m) == "imagenet-inception"
    assert (
        data.model_preset(type("IR", (), {"metadata_props": {data.PRESET_METADATA_KEY: "nope"}})())
        is None
    )


def test_digits_and_none_presets():
    x = np.full((3, 8, 8), 16, np.int64)
    got = apply_preset(x, "digits")
    assert got.shape == (3, 1, 8, 8) and got.dtype == np.float32 and np.all(got == 1.0)
    assert apply_preset(np.ones((2, 5), np.float64), "none").dtype == np.float32
    with pytest.raises(FaaqError, match="8x8"):
        apply_preset(np.zeros((2, 7, 7)), "digits")
    with pytest.raises(FaaqError, match="uint8 RGB"):
        apply_preset(np.zeros((2, 3, 32, 32), np.float32), "cifar10")
    with pytest.raises(FaaqError, match="unknown data preset"):
        apply_preset(x, "mnist")


# --- sources --------------------------------------------------------------------------


def test_npz_named_inputs_keep_integer_dtypes(tmp_path):
    ids = _rng().integers(0, 100, (4, 6)).astype(np.int64)
    mask = np.ones((4, 6), np.int64)
    np.savez(tmp_path / "d.npz", input_ids=ids, attention_mask=mask)
    got = load_inputs(
        tmp_path / "d.npz",
        ["input_ids", "attention_mask"],
        {"input_ids": ["batch", "seq"], "attention_mask": [None, -1]},
    )
    assert got["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(got["input_ids"], ids)


def test_npz_x_with_uint8_images_gets_guessed_preset(tmp_path):
    x = _rng().integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(5))
    got = load_inputs(tmp_path / "c.npz", ["input"], {"input": ["batch", 3, 32, 32]})
    np.testing.assert_allclose(got["input"], apply_preset(x, "cifar10"))


def test_npz_x_float_is_used_as_is_and_float64_becomes_float32(tmp_path):
    x = _rng().standard_normal((6, 3, 4, 4))
    np.savez(tmp_path / "f.npz", x=x)
    got = load_inputs(tmp_path / "f.npz", ["input"], SHAPE)
    assert got["input"].dtype == np.float32
    np.testing.assert_allclose(got["input"], x.astype(np.float32))


def test_uint8_images_matching_an_nhwc_model_are_not_preprocessed(tmp_path):
    x = _rng().integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", x=x)
    got = load_inputs(tmp_path / "u.npz", ["image"], {"image": [None, 32, 32, 3]})
    assert got["image"].dtype == np.uint8
    np.testing.assert_array_equal(got["image"], x)


def test_single_npy_file(tmp_path):
    x = _rng().standard_normal((3, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.npy", ["input"], SHAPE)["input"], x)


def test_npy_folder_samples_and_batches(tmp_path):
    rng = _rng()
    a = rng.standard_normal((3, 4, 4)).astype(np.float32)  # one sample
    b = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)  # a batch of two
    np.save(tmp_path / "000.npy", a)
    np.save(tmp_path / "001.npy", b)
    got = load_inputs(tmp_path, ["input"], SHAPE)["input"]
    assert got.shape == (3, 3, 4, 4)
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[1:], b)


def test_npy_subfolders_per_input(tmp_path):
    rng = _rng()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            np.save(tmp_path / name / f"{i}.npy", rng.standard_normal((1, 2)).astype(np.float32))
    got = load_inputs(tmp_path, ["a", "b"], {"a": ["n", 2], "b": ["n", 2]})
    assert got["a"].shape == got["b"].shape == (3, 2)
    np.testing.assert_array_equal(got["b"][2:], np.load(tmp_path / "b" / "2.npy"))
    sub = load_inputs(tmp_path, ["a", "b"], limit=2, seed=1)
    assert sub["a"].shape == (2, 2)
    (tmp_path / "b" / "2.npy").rename(tmp_path / "b" / "9.npy")
    with pytest.raises(FaaqError, match="same file names"):
        load_inputs(tmp_path, ["a", "b"])


def _write_images(folder, n, size=(40, 30), mode="RGB"):
    folder.mkdir(exist_ok=True)
    rng = _rng()
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i}.png")


def test_image_folder_with_presets(tmp_path):
    _write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    got = load_inputs(tmp_path / "imgs", ["input"], preset="imagenet")["input"]
    assert got.shape == (3, 3, 224, 224) and got.dtype == np.float32
    small = load_inputs(tmp_path / "imgs", ["input"], {"input": [None, 3, 32, 32]})["input"]
    assert small.shape == (3, 3, 32, 32)  # preset guessed from the model's input


def test_image_folder_digits_preset(tmp_path):
    _write_images(tmp_path / "g", 2, size=(8, 8), mode="L")
    got = load_inputs(tmp_path / "g", ["input"])["input"]
    assert got.shape == (2, 1, 8, 8) and got.max() <= 1.0


def test_limit_is_a_seeded_subset_in_order(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(20, 1)
    np.savez(tmp_path / "l.npz", x=x)
    a = load_inputs(tmp_path / "l.npz", ["in"], limit=5, seed=3)["in"][:, 0]
    b = load_inputs(tmp_path / "l.npz", ["in"], limit=5, seed=3)["in"][:, 0]
    c = load_inputs(tmp_path / "l.npz", ["in"], limit=5, seed=4)["in"][:, 0]
    assert len(a) == 5 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(load_inputs(tmp_path / "l.npz", ["in"], limit=100)["in"]) == 20
    with pytest.raises(FaaqError, match="limit"):
        load_inputs(tmp_path / "l.npz", ["in"], limit=0)


def test_iter_batches():
    inputs = {"a": np.arange(5), "b": np.arange(10).reshape(5, 2)}
    batches = list(iter_batches(inputs, 2))
    assert [len(b["a"]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(batches[2]["b"], [[8, 9]])
    with pytest.raises(FaaqError, match="batch size"):
        list(iter_batches(inputs, 0))
    with pytest.raises(FaaqError, match="different sample counts"):
        list(iter_batches({"a": np.arange(5), "b": np.arange(4)}, 2))


# --- labeled data -----------------------------------------------------------------------


def test_load_labeled_npz(tmp_path):
    x = _rng().integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    y = np.arange(7) % 3
    np.savez(tmp_path / "t.npz", x=x, y=y.astype(np.int32))
    gx, gy = load_labeled(tmp_path / "t.npz")
    assert gx.shape == (7, 3, 32, 32) and gx.dtype == np.float32 and gy.dtype == np.int64
    np.testing.assert_array_equal(gy, y)
    sx, sy = load_labeled(tmp_path / "t.npz", limit=3, seed=0)
    idx = [int(np.flatnonzero((gx == row).all(axis=(1, 2, 3)))[0]) for row in sx]
    np.testing.assert_array_equal(sy, y[idx])  # pairs stay together
    digits = np.full((4, 8, 8), 8.0)
    np.savez(tmp_path / "d.npz", x=digits, y=np.zeros(4))
    dx, _ = load_labeled(tmp_path / "d.npz", preset="digits")
    assert dx.shape == (4, 1, 8, 8) and np.all(dx == 0.5)


def test_load_labeled_image_folder_with_labels_file(tmp_path):
    _write_images(tmp_path / "val", 3, size=(32, 32))
    (tmp_path / "val_labels.txt").write_text("img2.png, 7\nimg0.png, 1\n")
    x, y = load_labeled(tmp_path / "val")  # sibling FOLDER_labels.txt found by default
    assert x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(y, [7, 1])
    img2 = np.asarray(Image.open(tmp_path / "val" / "img2.png"))[None]
    np.testing.assert_allclose(x[0], apply_preset(img2, "cifar10")[0], atol=1e-6)
    (tmp_path / "other.txt").write_text("img1.png, 4\n")
    _, y2 = load_labeled(tmp_path / "val", labels=tmp_path / "other.txt", preset="imagenet")
    np.testing.assert_array_equal(y2, [4])


def test_load_labeled_errors(tmp_path):
    np.savez(tmp_path / "nolab.npz", x=np.zeros((2, 3)))
    with pytest.raises(FaaqError, match="'x' and 'y'"):
        load_labeled(tmp_path / "nolab.npz")
    np.savez(tmp_path / "mis.npz", x=np.zeros((2, 3)), y=np.zeros(3, np.int64))
    with pytest.raises(FaaqError, match="2 samples but 'y' has 3"):
        load_labeled(tmp_path / "mis.npz")
    _write_images(tmp_path / "imgs", 1, size=(32, 32))
    with pytest.raises(FaaqError, match="labels file"):
        load_labeled(tmp_path / "imgs")
    (tmp_path / "bad.txt").write_text("img0.png seven\n")
    with pytest.raises(FaaqError, match="line 1"):
        load_labeled(tmp_path / "imgs", labels=tmp_path / "bad.txt")
    (tmp_path / "gone.txt").write_text("img9.png, 1\n")
    with pytest.raises(FaaqError, match=r"img9\.png"):
        load_labeled(tmp_path / "imgs", labels=tmp_path / "gone.txt")


# --- errors -----------------------------------------------------------------------------


def test_missing_file_and_unreadable_npz(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(FaaqError, match="data not found") as e:
        load_inputs(tmp_path / "none.npz", ["input"])
    _one_line(e)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FaaqError, match=r"not a readable \.npz") as e:
        load_inputs(tmp_path / "junk.npz", ["input"])
    _one_line(e)
    np.save(tmp_path / "arr.npy", np.zeros(3))
    (tmp_path / "arr.npy").rename(tmp_path / "arr.npz")
    with pytest.raises(FaaqError, match=r"not a readable \.npz"):
        load_inputs(tmp_path / "arr.npz", ["input"])


def test_missing_input_names_the_input_and_what_was_found(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 2)), c=np.zeros((2, 2)))
    with pytest.raises(FaaqError) as e:
        load_inputs(tmp_path / "d.npz", ["a", "b"])
    msg = _one_line(e)
    assert "'b'" in msg and "a, c" in msg
    (tmp_path / "f" / "a").mkdir(parents=True)
    with pytest.raises(FaaqError, match="missing: b"):
        load_inputs(tmp_path / "f", ["a", "b"])


def test_wrong_rank_and_shape(tmp_path):
    np.savez(tmp_path / "r.npz", x=np.zeros((2, 3, 4), np.float32))
    with pytest.raises(FaaqError, match="rank 3") as e:
        load_inputs(tmp_path / "r.npz", ["input"], SHAPE)
    _one_line(e)
    np.savez(tmp_path / "s.npz", x=np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(FaaqError, match=r"axis 3: 5 vs 4"):
        load_inputs(tmp_path / "s.npz", ["input"], SHAPE)
    # a different batch size is fine: the batch dimension is the loader's to choose
    np.savez(tmp_path / "b.npz", x=np.zeros((7, 3, 4, 4), np.float32))
    assert (
        load_inputs(tmp_path / "b.npz", ["input"], {"input": [1, 3, 4, 4]})["input"].shape[0] == 7
    )


def test_nan_and_inf_are_counted(tmp_path):
    x = np.zeros((4, 3, 4, 4), np.float32)
    x[0, 0, 0, :2] = np.nan
    x[1, 0, 0, 0] = np.inf
    np.savez(tmp_path / "n.npz", input=x)
    with pytest.raises(FaaqError) as e:
        load_inputs(tmp_path / "n.npz", ["input"], SHAPE)
    msg = _one_line(e)
    assert "'input'" in msg and "2 NaN" in msg and "1 Inf" in msg


def test_empty_data(tmp_path):
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3, 4, 4), np.float32))
    with pytest.raises(FaaqError, match="zero samples"):
        load_inputs(tmp_path / "e.npz", ["input"], SHAPE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaaqError, match="empty"):
        load_inputs(tmp_path / "empty", ["input"])


def test_non_numeric_dtype(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.array(["a", "b"]))
    with pytest.raises(FaaqError, match="non-numeric dtype"):
        load_inputs(tmp_path / "s.npz", ["input"])


def test_different_sample_counts(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 2)), b=np.zeros((3, 2)))
    with pytest.raises(FaaqError, match="a=2, b=3"):
        load_inputs(tmp_path / "d.npz", ["a", "b"])


def test_unguessable_uint8_images(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.zeros((2, 20, 20, 1), np.uint8))
    with pytest.raises(FaaqError, match="no preset fits"):
        load_inputs(tmp_path / "g.npz", ["input"])


def test_resolve_data_path_uses_env(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    target = tmp_path / "cifar10" / "t.npz"
    np.savez(target, x=np.ones((2, 3), np.float32))
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_path("cifar10/t.npz") == target
    assert load_inputs("cifar10/t.npz", ["input"])["input"].shape == (2, 3)
    with pytest.raises(FaaqError, match="FAAQ_DATA_DIR"):
        resolve_data_path("cifar10/missing.npz")
    monkeypatch.delenv(data.DATA_DIR_ENV)
    with pytest.raises(FaaqError, match="set FAAQ_DATA_DIR"):
        resolve_data_path("cifar10/t.npz")


def test_preset_array_reads_like_the_preprocessed_array(tmp_path):
    """Raw images stay raw until a batch is read; every read equals eager preprocessing."""
    from faaq_onnx.data.lazy import PresetArray

    raw = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3)).astype(np.uint8)
    idx = np.array([3, 7, 8, 20, 41])
    lazy = PresetArray(raw, idx, "cifar10")
    eager = apply_preset(raw[idx], "cifar10")
    assert len(lazy) == 5 and lazy.shape == eager.shape and lazy.dtype == eager.dtype
    np.testing.assert_array_equal(lazy[1:4], eager[1:4])
    np.testing.assert_array_equal(np.asarray(lazy), eager)
    np.testing.assert_array_equal(lazy[2], eager[2])
    p = tmp_path / "c.npz"
    np.savez(p, x=raw)
    calib, held = load_inputs(
        p, ["input"], {"input": ["N", 3, 32, 32]}, limit=5, seed=1, held_out=4
    )
    assert isinstance(calib["input"], PresetArray) and len(held["input"]) == 4


def test_npz_one_whole_feed_per_sample_for_inputs_without_a_sample_axis(tmp_path):
    """A [2, B, 128] state and a scalar take rank + 1 arrays, each element a whole feed that
    must have the model's shape; a wrong axis is named in one line."""
    shapes = {"x": ["B", 4], "state": [2, "B", 3], "sr": []}
    good = {
        "x": np.zeros((6, 4), np.float32),
        "state": np.zeros((6, 2, 1, 3), np.float32),
        "sr": np.full(6, 16000, np.int64),
    }
    np.savez(tmp_path / "c.npz", **good)
    got = data.load_inputs(tmp_path / "c.npz", list(shapes), shapes)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in good.items()}
    assert data.stacked_inputs(got, shapes) == ["state", "sr"]
    bad = dict(good, state=np.zeros((6, 3, 1, 3), np.float32))
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(FaaqError, match=r"one whole feed per sample.*axis 0: 3 vs 2"):
        data.load_inputs(tmp_path / "bad.npz", list(shapes), shapes)
    with pytest.raises(FaaqError, match="or rank 4 for one whole feed per sample"):
        data.validate_inputs({"state": np.zeros((6, 2, 1, 3, 1), np.float32)}, shapes)
