"""data/inputs.py's checks, each by its exact message, and the edges of batching and loading."""

import numpy as np
import pytest
from PIL import Image

from faaq_onnx.data import inputs as di
from faaq_onnx.data.inputs import iter_batches, load_inputs, stacked_inputs, validate_inputs
from faaq_onnx.data.readers import _held_out, _subset
from faaq_onnx.errors import FaaqError


def msg(fn, *a):
    with pytest.raises(FaaqError) as e:
        fn(*a)
    return str(e.value)


def test_dtypes():
    assert msg(validate_inputs, {"x": np.array(["a", "b"])}, None).startswith(
        "input 'x' has non-numeric dtype <U1"
    )
    assert msg(validate_inputs, {"x": np.ones(2, np.complex64)}, None) == (
        "input 'x' has non-numeric dtype complex64"
    )
    validate_inputs({"b": np.ones((2, 1), bool), "i": np.ones((2, 1), np.int8)}, None)


def test_scalars_and_empty_inputs():
    assert msg(validate_inputs, {"x": np.float32(1.0) * np.ones(())}, None) == (
        "input 'x' is a scalar; expected a batch with samples on axis 0"
    )
    assert msg(validate_inputs, {"x": np.zeros((0, 3))}, None) == (
        "input 'x' is empty (shape (0, 3), zero samples)"
    )
    assert msg(validate_inputs, {"x": np.zeros((3, 0))}, None) == (
        "input 'x' is empty (shape (3, 0), zero samples)"
    )
    validate_inputs({"x": np.zeros((1,))}, None)  # one sample is enough


def test_rank_and_shape_against_the_model():
    shape = [None, 3, "h", -1]
    assert msg(validate_inputs, {"x": np.zeros((2, 3, 4))}, {"x": shape}) == (
        "input 'x' has rank 3 (shape (2, 3, 4)); the model expects rank 4 (?, 3, h, -1), "
        "or rank 5 for one whole feed per sample"
    )
    assert msg(validate_inputs, {"x": np.zeros((2, 4, 5, 6))}, {"x": shape}) == (
        "input 'x' has shape (2, 4, 5, 6); the model expects (?, 3, h, -1) (axis 1: 4 vs 3)"
    )
    validate_inputs({"x": np.zeros((2, 3, 5, 6))}, {"x": shape})  # symbolic dims take any size
    # the batch axis is never checked against the model's (a fixed batch is padded later)
    validate_inputs({"x": np.zeros((7, 3))}, {"x": [4, 3]})
    assert msg(validate_inputs, {"x": np.zeros((7, 2))}, {"x": [4, 3]}).endswith("(axis 1: 2 vs 3)")


def test_one_whole_feed_per_sample():
    shape = [4, "n"]
    validate_inputs({"x": np.zeros((5, 4, 9))}, {"x": shape})
    assert msg(validate_inputs, {"x": np.zeros((5, 3, 9))}, {"x": shape}) == (
        "input 'x' has shape (5, 3, 9): read as one whole feed per sample (rank 3 for an input "
        "of rank 2), each must have the model's shape (4, n) (axis 0: 3 vs 4)"
    )
    assert stacked_inputs({"x": np.zeros((5, 4, 9)), "y": np.zeros((5, 2))}, {"x": shape}) == ["x"]
    assert stacked_inputs({"x": np.zeros((5, 4))}, {"x": shape}) == []


def test_nan_and_inf_are_counted():
    x = np.zeros((3, 4), np.float32)
    x[0, 0] = x[1, 1] = np.nan
    x[2, 2] = -np.inf
    assert msg(validate_inputs, {"x": x}, None) == "input 'x' has 2 NaN and 1 Inf values"
    validate_inputs({"i": np.array([[1], [2]])}, None)  # integers hold no NaN to look for


def test_sample_counts_must_agree():
    assert msg(validate_inputs, {"a": np.zeros((3, 1)), "b": np.zeros((4, 1))}, None) == (
        "inputs have different sample counts: a=3, b=4"
    )


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_iter_batches_refuses_a_bad_batch_size(bad):
    assert msg(lambda: list(iter_batches({"x": np.zeros((3, 1))}, bad))) == (
        f"batch size must be a positive integer, got {bad!r}"
    )


def test_iter_batches_slices_in_step():
    a, b = np.arange(7), np.arange(7) * 10
    got = list(iter_batches({"a": a, "b": b}, 3))
    assert [len(g["a"]) for g in got] == [3, 3, 1]
    assert all(np.array_equal(g["b"], g["a"] * 10) for g in got)
    assert list(iter_batches({}, 2)) == []
    assert next(iter(iter_batches({"a": a}, np.int64(7))))["a"].tolist() == a.tolist()
    assert msg(lambda: list(iter_batches({"a": a, "b": b[:5]}, 2))) == (
        "inputs have different sample counts: a=7, b=5"
    )


def test_prepare_casts_floats_to_float32_and_keeps_the_rest():
    assert di._prepare(np.zeros((2, 3)), "x", None, None).dtype == np.float32
    assert di._prepare(np.zeros((2, 3), np.float16), "x", None, None).dtype == np.float32
    assert di._prepare(np.zeros((2, 3), np.int64), "x", None, None).dtype == np.int64
    f32 = np.zeros((2, 3), np.float32)
    assert di._prepare(f32, "x", None, None) is f32


def test_uint8_images_that_fit_the_model_are_fed_as_they_are():
    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    assert di._fits(imgs.shape, [None, 8, 8, 3]) and di._fits(imgs.shape, ["n", -1, 8, 3])
    assert not di._fits(imgs.shape, [None, 3, 8, 8]) and not di._fits(imgs.shape, None)
    assert not di._fits(imgs.shape, [None, 8, 3])
    assert di._prepare(imgs, "x", None, [None, 8, 8, 3]) is imgs
    assert di._is_raw_images(imgs) and di._is_raw_images(np.zeros((1, 4, 4, 1), np.uint8))
    assert not di._is_raw_images(np.zeros((1, 4, 4, 2), np.uint8))
    assert not di._is_raw_images(np.zeros((1, 4, 4, 3), np.int8))
    assert not di._is_raw_images(np.zeros((4, 4, 3), np.uint8))


def test_uint8_images_no_preset_fits_are_refused():
    imgs = np.zeros((2, 5, 7, 1), np.uint8)  # one channel, not 8 x 8: no preset guessed
    text = msg(di._prepare, imgs, "img", None, None)
    assert text.startswith(
        "input 'img' holds uint8 images of shape (5, 7, 1) and no preset fits them; choose one of: "
    )
    assert msg(di._preset_name, imgs, "img", None, None) == text


def test_npz_and_npy_files_by_input_name(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "one.npy", x)
    np.testing.assert_array_equal(load_inputs(tmp_path / "one.npy", ["inp"])["inp"], x)
    assert msg(load_inputs, tmp_path / "one.npy", ["a", "b"]) == (
        "a .npy file feeds one input, but the model has 2: a, b"
    )
    np.savez(tmp_path / "x.npz", x=x, other=x * 2)
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.npz", ["inp"])["inp"], x)
    np.savez(tmp_path / "lone.npz", whatever=x * 3)
    np.testing.assert_array_equal(load_inputs(tmp_path / "lone.npz", ["inp"])["inp"], x * 3)
    np.savez(tmp_path / "two.npz", p=x, q=x)
    assert msg(load_inputs, tmp_path / "two.npz", ["inp"]) == (
        "input 'inp' missing from two.npz; found arrays: p, q"
    )
    assert msg(load_inputs, tmp_path / "two.npz", ["p", "r", "s"]) == (
        "input 'r', 's' missing from two.npz; found arrays: p, q"
    )
    got = load_inputs(tmp_path / "two.npz", ["q", "p"])
    assert list(got) == ["q", "p"]


def test_limit_keeps_a_seeded_subset_in_order(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(20, 1)
    np.save(tmp_path / "x.npy", x)
    a = load_inputs(tmp_path / "x.npy", ["x"], limit=6, seed=1)["x"][:, 0]
    assert len(a) == 6 and list(a) == sorted(a) and len(set(a)) == 6
    np.testing.assert_array_equal(
        load_inputs(tmp_path / "x.npy", ["x"], limit=6, seed=1)["x"][:, 0], a
    )
    assert len(load_inputs(tmp_path / "x.npy", ["x"], limit=50)["x"]) == 20


def test_folders(tmp_path):
    assert msg(load_inputs, tmp_path, []) == "the model has no inputs to load data for"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert msg(load_inputs, empty, ["x"]).startswith(f"folder {empty} is empty: no .npy files")
    two = tmp_path / "two"
    (two / "a").mkdir(parents=True)
    (two / "zz").mkdir()
    assert msg(load_inputs, two, ["a", "b"]) == (
        f"folder {two} needs one subfolder per input; missing: b (found: a, zz)"
    )
    none = tmp_path / "none"
    none.mkdir()
    assert msg(load_inputs, none, ["a", "b"]) == (
        f"folder {none} needs one subfolder per input; missing: a, b (found: none)"
    )
    (two / "b").mkdir()
    np.save(two / "a" / "0.npy", np.zeros(3, np.float32))
    assert msg(load_inputs, two, ["a", "b"]) == f"no .npy files in {two / 'b'} for input 'b'"
    np.save(two / "b" / "1.npy", np.zeros(3, np.float32))
    assert msg(load_inputs, two, ["a", "b"]) == (
        f"input folders 'a' and 'b' in {two} do not hold the same file names"
    )


def test_held_out_samples_are_others_and_none_when_all_are_taken(tmp_path):
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.save(tmp_path / "x.npy", x)
    calib, held = load_inputs(tmp_path / "x.npy", ["x"], limit=6, held_out=3)
    assert len(calib["x"]) == 6 and len(held["x"]) == 3
    assert not set(calib["x"][:, 0]) & set(held["x"][:, 0])
    calib, held = load_inputs(tmp_path / "x.npy", ["x"], held_out=3)
    assert len(calib["x"]) == 10 and held["x"].shape == (0, 1)


def test_npy_folders_stack_samples_and_batches_of_one_kind(tmp_path):
    from faaq_onnx.data.readers import _stack_npy, _subset

    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))  # a batch of 2
    np.save(tmp_path / "b.npy", np.ones(3, np.float32))  # one sample (model rank - 1)
    got = _stack_npy([tmp_path / "a.npy", tmp_path / "b.npy"], [None, 3], "x")
    np.testing.assert_array_equal(got, [[0, 0, 0], [0, 0, 0], [1, 1, 1]])
    np.save(tmp_path / "c.npy", np.ones((1, 4), np.float32))
    assert msg(_stack_npy, [tmp_path / "a.npy", tmp_path / "c.npy"], None, "x") == (
        "input 'x': c.npy has sample shape (4,), but a.npy has (3,)"
    )
    np.save(tmp_path / "d.npy", np.ones((1, 3), np.float64))
    assert msg(_stack_npy, [tmp_path / "a.npy", tmp_path / "d.npy"], None, "x") == (
        "input 'x': d.npy has dtype float64, a.npy float32"
    )
    np.save(tmp_path / "s.npy", np.float32(1.0))
    assert msg(_stack_npy, [tmp_path / "s.npy"], None, "x") == (
        f"{tmp_path / 's.npy'} holds a scalar, not a sample or batch for input 'x'"
    )
    assert len(_subset(20, 1, 0)) == 1  # a limit of one sample is allowed


# --- load_inputs(held_out=N) on every kind of source: a calibration subset and, drawn apart
# from it, up to N held-out samples prepared the same way


def _npy_folder(folder, n=10):
    folder.mkdir()
    for i in range(n):  # float64 files, one sample each: prepared to float32
        np.save(folder / f"s{i:02d}.npy", np.full((1, 2), i, np.float64))
    return folder


@pytest.mark.parametrize("shapes", [None, {"x": ["N", 2]}])
def test_npy_folder_holds_out_other_files(tmp_path, shapes):
    p = _npy_folder(tmp_path / "d")
    calib, held = load_inputs(p, ["x"], shapes, limit=4, seed=3, held_out=3)
    idx = _subset(10, 4, 3)
    hidx = _held_out(10, idx, 3, 3)
    np.testing.assert_array_equal(calib["x"][:, 0], idx)
    np.testing.assert_array_equal(held["x"], np.repeat(hidx[:, None], 2, 1))
    assert held["x"].dtype == np.float32 and calib["x"].dtype == np.float32
    assert not set(idx) & set(hidx)
    # more held-out samples asked for than are left: all the others
    calib, held = load_inputs(p, ["x"], shapes, limit=8, seed=3, held_out=5)
    assert sorted([*calib["x"][:, 0], *held["x"][:, 0]]) == list(range(10))
    # no limit: every file calibrates, none is left
    calib, held = load_inputs(p, ["x"], shapes, held_out=5)
    assert len(calib["x"]) == 10 and held["x"].shape == (0, 2)


def test_npy_folder_held_out_samples_are_checked_against_the_model(tmp_path):
    p = _npy_folder(tmp_path / "d")
    with pytest.raises(FaaqError, match=r"axis 1: 2 vs 3"):
        load_inputs(p, ["x"], {"x": ["N", 3]}, limit=4, held_out=2)


def _images(folder, n, size=(12, 10)):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return folder


def test_image_folder_holds_out_the_other_images_with_the_same_preset(tmp_path):
    p = _images(tmp_path / "imgs", 5)
    shapes = {"input": ["N", 3, 32, 32]}  # the model's input picks the cifar10 preset
    full = load_inputs(p, ["input"], shapes)["input"]
    calib, held = load_inputs(p, ["input"], shapes, limit=2, seed=1, held_out=9)
    idx = _subset(5, 2, 1)
    np.testing.assert_array_equal(calib["input"], full[idx])
    rest = [i for i in range(5) if i not in idx]
    np.testing.assert_array_equal(held["input"], full[rest])
    assert held["input"].shape == (3, 3, 32, 32) and held["input"].dtype == np.float32
    with_preset = load_inputs(p, ["input"], None, "imagenet", limit=2, held_out=1)[1]["input"]
    assert with_preset.shape == (1, 3, 224, 224)


def test_one_image_is_enough_to_guess_the_preset(tmp_path):
    p = _images(tmp_path / "one", 1, size=(8, 8))
    got = load_inputs(p, ["input"])["input"]  # RGB: the ImageNet preset
    assert got.shape == (1, 3, 224, 224) and got.dtype == np.float32


def test_subfolders_per_input_have_no_held_out_set(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            np.save(tmp_path / name / f"{i}.npy", np.full((1, 3), i, np.float32))
    calib, held = load_inputs(tmp_path, ["a", "b"], limit=2, held_out=2)
    assert set(calib) == {"a", "b"} and len(calib["a"]) == 2
    assert held["a"].shape == (0, 3) and held["b"].shape == (0, 3)


def test_npz_held_out_when_all_are_taken_and_empty_arrays(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / "c.npz", x=raw)
    calib, held = load_inputs(
        tmp_path / "c.npz", ["input"], {"input": ["N", 3, 32, 32]}, held_out=2
    )
    assert len(calib["input"]) == 4 and held["input"].shape == (0, 3, 32, 32)
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3), np.float32))
    with pytest.raises(FaaqError, match=r"input 'input' is empty \(shape \(0, 3\)"):
        load_inputs(tmp_path / "e.npz", ["input"], held_out=2)
    np.savez(tmp_path / "s.npz", x=np.float32(2.0))
    with pytest.raises(FaaqError, match="input 'input' is a scalar"):
        load_inputs(tmp_path / "s.npz", ["input"], held_out=2)


def test_one_whole_feed_per_sample_checks_unit_axes_too():
    """A model dimension of 1 is a fixed size like any other; only 0, -1 and symbols are free."""
    with pytest.raises(FaaqError, match=r"\(axis 0: 2 vs 1\)$"):
        validate_inputs({"x": np.zeros((5, 2, 3))}, {"x": [1, 3]})
    validate_inputs({"x": np.zeros((5, 1, 3))}, {"x": [1, 3]})
    validate_inputs({"x": np.zeros((5, 2, 3))}, {"x": [0, 3]})
    validate_inputs({"x": np.zeros((5, 2, 3))}, {"x": [-1, "n"]})


def test_npz_held_out_names_an_empty_input_beside_a_full_one(tmp_path):
    """With held_out, an .npz whose second input has no samples is refused by name before any
    subset is drawn (the first input's sample count must not index the empty one)."""
    np.savez(tmp_path / "two.npz", a=np.ones((5, 3), np.float32), b=np.zeros((0, 3), np.float32))
    with pytest.raises(FaaqError, match=r"^input 'b' is empty \(shape \(0, 3\), zero samples\)$"):
        load_inputs(tmp_path / "two.npz", ["a", "b"], limit=2, held_out=2)


def test_npz_held_out_of_one_dimensional_inputs(tmp_path):
    """Rank-1 inputs (one scalar per sample) split into a subset and held-out samples like any
    other: disjoint, and together drawn from the source's values."""
    x = np.arange(10, dtype=np.float32)
    np.savez(tmp_path / "v.npz", x=x)
    calib, held = load_inputs(tmp_path / "v.npz", ["x"], {"x": ["N"]}, limit=4, seed=3, held_out=3)
    c, h = np.asarray(calib["x"]), np.asarray(held["x"])
    assert c.shape == (4,) and h.shape == (3,)
    assert not set(c.tolist()) & set(h.tolist()) and set(c.tolist()) | set(h.tolist()) <= set(
        x.tolist()
    )


def test_an_undecodable_first_image_is_named_when_guessing_the_preset(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    with pytest.raises(FaaqError, match=r"^cannot decode image .*a\.png: "):
        load_inputs(folder, ["input"])


def test_grey_images_guess_a_one_channel_preset(tmp_path):
    """The preset is guessed from the first image's size and channels: 8x8 greyscale ('L') is
    the digits preset (one channel), where the same size in RGB is ImageNet's."""
    from faaq_onnx.data.presets import guess_preset

    folder = tmp_path / "grey"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 16 * i, np.uint8), mode="L").save(folder / f"{i}.png")
    got = load_inputs(folder, ["input"])["input"]
    assert guess_preset(8, 8, 1) != guess_preset(8, 8, 3)
    assert got.shape[:2] == (2, 1) and got.dtype == np.float32


def test_images_with_no_preset_to_guess_name_the_first_and_the_choices(tmp_path):
    """Greyscale at a size no preset has: the message names the first image and the presets."""
    from faaq_onnx.data.presets import PRESETS

    folder = tmp_path / "grey"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(folder / f"{name}.png")
    with pytest.raises(FaaqError) as e:
        load_inputs(folder, ["input"])
    assert str(e.value) == (
        f"cannot guess a preset for images like a.png; choose one of: {', '.join(PRESETS)}"
    )


def test_the_models_input_size_picks_the_preset_before_the_images_own_size():
    """Raw uint8 RGB images of 40x40 would guess ImageNet on their own; a model that takes
    3x32x32 makes them CIFAR-10 (resized to the model's input), in both code paths."""
    from faaq_onnx.data.presets import guess_preset

    imgs = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    model = [None, 3, 32, 32]
    assert guess_preset(40, 40, 3) == "imagenet"
    assert di._prepare(imgs, "x", None, model).shape == (2, 3, 32, 32)
    assert di._preset_name(imgs, "x", None, model) == "cifar10"
    assert di._prepare(imgs, "x", None, None).shape == (2, 3, 224, 224)
    assert di._preset_name(imgs, "x", None, None) == "imagenet"


def test_iter_batches_of_one_sample():
    got = list(iter_batches({"a": np.arange(3)}, 1))
    assert [g["a"].tolist() for g in got] == [[0], [1], [2]]


def test_a_file_holding_a_scalar_says_so(tmp_path):
    np.save(tmp_path / "x.npy", np.float32(1.0))
    assert msg(load_inputs, tmp_path / "x.npy", ["x"]) == (
        "input 'x' is a scalar; expected a batch with samples on axis 0"
    )


def test_the_default_seed_is_zero(tmp_path):
    """A limit without a seed draws the subset of seed 0."""
    np.save(tmp_path / "x.npy", np.arange(20, dtype=np.float32).reshape(20, 1))
    got = load_inputs(tmp_path / "x.npy", ["x"], limit=5)["x"]
    np.testing.assert_array_equal(got[:, 0], np.sort(_subset(20, 5, 0)))
    assert not np.array_equal(_subset(20, 5, 0), _subset(20, 5, 1))


def test_a_limit_checks_only_the_samples_it_draws(tmp_path):
    """NaN in a sample the seeded subset leaves out spoils nothing: the samples used are the
    ones checked (all of them without a limit)."""
    x = np.arange(20, dtype=np.float32).reshape(20, 1)
    left_out = sorted(set(range(20)) - set(_subset(20, 5, 0).tolist()))
    x[left_out[0], 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    got = load_inputs(tmp_path / "x.npy", ["x"], limit=5, seed=0)["x"]
    assert got.shape == (5, 1) and not np.isnan(got).any()
    assert msg(load_inputs, tmp_path / "x.npy", ["x"]) == "input 'x' has 1 NaN and 0 Inf values"
    one_d = np.arange(6, dtype=np.float32)  # one value per sample: a rank-1 input
    np.save(tmp_path / "v.npy", one_d)
    np.testing.assert_array_equal(load_inputs(tmp_path / "v.npy", ["v"])["v"], one_d)
