import numpy as np
import pytest

from faaq_onnx.analysis.metrics import output_kl, sqnr_db


def test_kl_is_float_model_relative():
    """KL(P_float || P_quant): with p = softmax(ref) = (0.9, 0.1), q = (0.5, 0.5)."""
    ref = np.log(np.array([[0.9, 0.1]]))
    got = np.log(np.array([[0.5, 0.5]]))
    expected = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert output_kl(ref, got) == pytest.approx(expected, rel=1e-9)
    assert output_kl(got, ref) != pytest.approx(expected, rel=1e-3)  # the other direction differs
    assert output_kl(ref, ref) == pytest.approx(0.0, abs=1e-12)


def test_sqnr_is_mean_of_per_sample_ratios():
    ref = np.array([[1.0, 1.0], [2.0, 2.0]])
    got = ref + np.array([[0.1, 0.1], [0.1, 0.1]])
    expected = 10 * np.log10(np.mean([1 / 0.01, 4 / 0.01]))
    assert sqnr_db(ref, got) == pytest.approx(expected)
