"""data/presets.py by the numbers: each preset's arithmetic computed here, the shapes it accepts,
its messages, and the guesses from image and model shapes."""

from __future__ import annotations

import numpy as np
import pytest

from faaq_onnx.data import presets as pr
from faaq_onnx.errors import FaaqError

PIL = pytest.importorskip("PIL.Image")

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def rgb(n=2, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_cifar10_arithmetic_and_its_pil_path_agree():
    x = rgb()
    got = pr.apply_preset(x, "cifar10")
    want = ((x.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    # an image of another size goes through PIL, resized to 32 x 32
    big = pr.apply_preset(rgb(1, 40, 36), "cifar10")
    assert big.shape == (1, 3, 32, 32) and big.dtype == np.float32
    one = pr._cifar10_image(PIL.fromarray(x[0]))
    np.testing.assert_allclose(one, want[0], rtol=1e-6)


def test_imagenet_presets_resize_crop_and_normalize():
    flat = np.full((1, 300, 260, 3), 128, np.uint8)
    net = pr.apply_preset(flat, "imagenet")
    inc = pr.apply_preset(flat, "imagenet-inception")
    assert net.shape == inc.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(net[0, :, 100, 100], (128 / 255 - MEAN) / STD, rtol=1e-5)
    np.testing.assert_allclose(inc[0, :, 100, 100], (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_digits_from_arrays_and_files(tmp_path):
    x = np.arange(2 * 64).reshape(2, 8, 8) % 17
    got = pr.apply_preset(x, "digits")
    assert got.shape == (2, 1, 8, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], x / 16.0)
    for shape in ((2, 64), (2, 8, 8, 1), (2, 1, 8, 8)):
        np.testing.assert_allclose(pr.apply_preset(x.reshape(shape), "digits"), got)
    with pytest.raises(FaaqError) as e:
        pr.apply_preset(np.zeros((2, 7, 7)), "digits")
    assert str(e.value) == (
        "preset 'digits' expects 8x8 images (N x 8 x 8, N x 64, N x 8 x 8 x 1 or "
        "N x 1 x 8 x 8), got shape (2, 7, 7)"
    )
    with pytest.raises(FaaqError, match=r"got shape \(1, 1, 1, 8, 8\)"):
        pr.apply_preset(np.zeros((1, 1, 1, 8, 8)), "digits")
    with pytest.raises(FaaqError, match="preset 'digits' expects numeric images, got dtype"):
        pr.apply_preset(np.array([["a"] * 64]), "digits")
    img = np.full((8, 8), 51, np.uint8)
    PIL.fromarray(img, "L").save(tmp_path / "d.png")
    np.testing.assert_allclose(pr.load_image(tmp_path / "d.png", "digits"), np.full((1, 8, 8), 0.2))
    PIL.fromarray(np.full((16, 16), 255, np.uint8), "L").save(tmp_path / "big.png")
    assert pr.load_image(tmp_path / "big.png", "digits").shape == (1, 8, 8)


def test_none_keeps_values_and_moves_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    PIL.fromarray(gray, "L").save(tmp_path / "g.png")
    got = pr.load_image(tmp_path / "g.png", "none")
    assert got.shape == (1, 3, 4) and got.dtype == np.float32
    np.testing.assert_array_equal(got[0], gray)
    color = rgb(1, 3, 4)[0]
    PIL.fromarray(color).save(tmp_path / "c.png")
    np.testing.assert_array_equal(
        pr.load_image(tmp_path / "c.png", "none"), color.transpose(2, 0, 1)
    )
    rgba = np.dstack([color, np.full((3, 4), 255, np.uint8)])
    PIL.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert pr.load_image(tmp_path / "a.png", "none").shape == (3, 3, 4)
    np.testing.assert_array_equal(
        pr.apply_preset(np.ones((2, 5), np.int32), "none"), np.ones((2, 5))
    )
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(FaaqError, match=r"^cannot decode image "):
        pr.load_image(tmp_path / "bad.png", "none")


def test_rgb_presets_refuse_other_arrays():
    for bad in (
        np.zeros((2, 32, 32, 1), np.uint8),
        np.zeros((2, 32, 32, 3), np.float32),
        np.zeros((32, 32, 3), np.uint8),
    ):
        with pytest.raises(FaaqError) as e:
            pr.apply_preset(bad, "imagenet")
        assert str(e.value) == (
            f"preset 'imagenet' expects uint8 RGB images N x H x W x 3, got shape "
            f"{tuple(bad.shape)} dtype {bad.dtype}; use preset 'none' for preprocessed data"
        )
    with pytest.raises(FaaqError) as e:
        pr.apply_preset(rgb(), "vgg")
    assert str(e.value).startswith("unknown data preset 'vgg'; choose one of: cifar10, imagenet")


@pytest.mark.parametrize(
    "hwc,want",
    [
        ((8, 8, 1), "digits"),
        ((8, 8, 3), "imagenet"),
        ((32, 32, 3), "cifar10"),
        ((224, 224, 3), "imagenet"),
        ((32, 32, 1), None),
        ((8, 9, 1), None),
    ],
)
def test_guess_from_images(hwc, want):
    assert pr.guess_preset(*hwc) == want


@pytest.mark.parametrize(
    "shape,want",
    [
        ([None, 1, 8, 8], "digits"),
        ([None, 3, 32, 32], "cifar10"),
        ([1, 3, 224, 224], "imagenet"),
        ([1, 3, 64, 64], "imagenet"),
        ([1, 3, 63, 63], None),
        ([1, 3, "h", "w"], None),
        ([1, 1, 28, 28], None),
        ([1, 3, 32], None),
        (None, None),
    ],
)
def test_guess_from_the_model(shape, want):
    assert pr._preset_for_model(shape) == want


def test_model_preset_metadata():
    class M:
        def __init__(self, props):
            self.metadata_props = props

    assert pr.model_preset(M({pr.PRESET_METADATA_KEY: "cifar10"})) == "cifar10"
    assert pr.model_preset(M({pr.PRESET_METADATA_KEY: "unknown"})) is None
    assert pr.model_preset(M({"other": "cifar10"})) is None
    assert pr.model_preset(object()) is None
    import onnx

    m = onnx.ModelProto()
    onnx.helper.set_model_props(m, {pr.PRESET_METADATA_KEY: "digits"})
    assert pr.model_preset(m) == "digits"


def test_an_image_one_pixel_wide_keeps_its_colour():
    """A width of 1 is not a grey channel: a constant-colour H x 1 x 3 image goes through the
    PIL path (resized) and comes out that same colour everywhere, normalized."""
    colour = np.array([200, 50, 10], np.uint8)
    x = np.broadcast_to(colour, (1, 6, 1, 3)).copy()
    got = pr.apply_preset(x, "cifar10")
    want = (colour / 255.0 - MEAN) / STD
    assert got.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(got[0], np.broadcast_to(want[:, None, None], (3, 32, 32)), rtol=1e-5)


def test_to_pil_reads_h_w_1_as_grey_and_h_w_3_as_rgb():
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5, 1)
    img = pr._to_pil(grey)
    assert img.mode == "L" and img.size == (5, 4)
    np.testing.assert_array_equal(np.asarray(img), grey[..., 0])
    colour = rgb(1, 4, 5)[0]
    img = pr._to_pil(colour)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), colour)
