import numpy as np
import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.observers import TensorStats
from faaq_onnx.quant.range_setters import activation_range, weight_range
from faaq_onnx.quant.weights import quantize_weight


def _stats(x):
    s = TensorStats()
    s.observe_minmax(x)
    s.observe_hist(x)
    return s


@pytest.fixture
def heavy_tailed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:20] = 40.0  # rare outliers
    return x


def test_minmax_is_the_observed_range(heavy_tailed):
    lo, hi = activation_range(_stats(heavy_tailed), IntFormat(8, False), False, "minmax")
    assert lo == pytest.approx(heavy_tailed.min()) and hi == pytest.approx(40.0)


@pytest.mark.parametrize("method,bits", [("percentile", 8), ("entropy", 8), ("mse", 4)])
def test_clipping_setters_cut_outliers(heavy_tailed, method, bits):
    # at 8 bits MSE rightly keeps 20 outliers in 200k (their clipping error would
    # exceed the rounding noise); at 4 bits the rounding noise dominates and it clips
    lo, hi = activation_range(_stats(heavy_tailed), IntFormat(bits, False), False, method)
    assert lo <= 0 <= hi
    assert hi < 40.0 * 0.9, f"{method} kept the outliers: {hi}"
    assert hi > 2.0, f"{method} clipped the bulk of the data: {hi}"


def test_mse_lowers_error_versus_minmax(heavy_tailed):
    from faaq_onnx.quant.affine import affine_params, fake_quantize

    fmt = IntFormat(4, False)
    errs = {}
    for m in ("minmax", "mse"):
        lo, hi = activation_range(_stats(heavy_tailed), fmt, False, m)
        s, z = affine_params(lo, hi, fmt, False)
        errs[m] = float(np.mean((fake_quantize(heavy_tailed, s, z, fmt) - heavy_tailed) ** 2))
    assert errs["mse"] < errs["minmax"] * 0.5


def test_nonnegative_data_keeps_zero_floor():
    x = np.abs(np.random.default_rng(0).standard_normal(10_000)).astype(np.float32)
    for m in ("minmax", "percentile", "mse", "entropy"):
        lo, hi = activation_range(_stats(x), IntFormat(8, False), False, m)
        assert lo == 0.0 and hi > 0


def test_unknown_method():
    with pytest.raises(FaaqError, match="unknown range setter"):
        activation_range(_stats(np.ones(4, np.float32)), IntFormat(8, False), False, "magic")


def test_weight_mse_never_worse_than_minmax():
    w = np.random.default_rng(0).standard_t(3, size=(16, 300))
    fmt = IntFormat(4, True)
    e = {}
    for m in ("minmax", "mse"):
        qw = quantize_weight(w, 4, "per-channel", 0, 1, symmetric=True, method=m)
        e[m] = np.sum((qw.dequantized() - w) ** 2, axis=1)
    assert np.all(e["mse"] <= e["minmax"] + 1e-9)
    assert e["mse"].sum() < e["minmax"].sum()
    lo, hi = weight_range(w, fmt, True, "minmax")
    np.testing.assert_allclose(hi, w.max(1))


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_missing_histogram_is_an_error_not_silent_minmax(method):
    s = TensorStats()
    s.observe_minmax(np.linspace(-1, 3, 100, dtype=np.float32))  # the histogram sweep never ran
    with pytest.raises(RuntimeError, match="needs a histogram"):
        activation_range(s, IntFormat(8, False), False, method)
    assert activation_range(s, IntFormat(8, False), False, "minmax") == (-1.0, 3.0)
