"""data/lazy.PresetArray behaves like the preprocessed array it stands for."""

import numpy as np

from faaq_onnx.data.lazy import PresetArray
from faaq_onnx.data.presets import apply_preset


def raw():
    return np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def test_shape_size_indexing_and_conversion():
    r = raw()
    idx = np.array([4, 1, 3])
    lazy = PresetArray(r, idx, "cifar10")
    eager = apply_preset(r[idx], "cifar10")
    assert (len(lazy), lazy.shape, lazy.ndim, lazy.size) == (3, eager.shape, 4, eager.size)
    assert lazy.dtype == eager.dtype == np.float32
    np.testing.assert_array_equal(lazy[1], eager[1])  # one sample: no sample axis
    np.testing.assert_array_equal(lazy[np.int64(2)], eager[2])
    np.testing.assert_array_equal(lazy[[2, 0]], eager[[2, 0]])
    assert lazy.astype(np.float32, copy=False) is lazy
    as64 = lazy.astype(np.float64)
    assert as64.dtype == np.float64 and as64.shape == eager.shape
    assert isinstance(lazy.astype(np.float32), np.ndarray)
    assert np.asarray(lazy, dtype=np.float64).dtype == np.float64
    whole = PresetArray(r, None, "cifar10")
    assert len(whole) == 6
    np.testing.assert_array_equal(np.asarray(whole), apply_preset(r, "cifar10"))


def test_fingerprint_names_the_samples_and_the_preset():
    r = raw()
    a = PresetArray(r, np.array([0, 1]), "cifar10").fingerprint()
    assert a == PresetArray(r.copy(), np.array([0, 1]), "cifar10").fingerprint()
    assert a != PresetArray(r, np.array([1, 0]), "cifar10").fingerprint()
    assert a != PresetArray(r, np.array([0, 1]), "imagenet").fingerprint()
    assert len(a) == 32
