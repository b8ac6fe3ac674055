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


def test_kl_per_sample_and_stable_for_large_logits():
    """Several samples of several classes, each its own softmax; huge logits do not overflow."""
    rng = np.random.default_rng(0)
    ref, got = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))

    def kl_row(r, q):
        p, pq = np.exp(r) / np.exp(r).sum(), np.exp(q) / np.exp(q).sum()
        return float(np.sum(p * np.log(p / pq)))

    expected = np.mean([kl_row(r, q) for r, q in zip(ref, got)])
    assert output_kl(ref, got) == pytest.approx(expected, rel=1e-9)
    assert output_kl(ref + 1000.0, got - 1000.0) == pytest.approx(
        expected, rel=1e-9
    )  # softmax is shift-free
    assert output_kl(ref * 1000.0, ref * 1000.0) == pytest.approx(0.0, abs=1e-9)


def test_sqnr_per_sample_over_all_output_elements():
    ref = np.arange(1, 25, dtype=np.float64).reshape(2, 3, 4)
    noise = np.full_like(ref, 0.5)
    expected = 10 * np.log10(np.mean([np.mean(ref[i] ** 2) / 0.25 for i in range(2)]))
    assert sqnr_db(ref, ref + noise) == pytest.approx(expected)


def test_sqnr_goes_negative_when_noise_exceeds_signal():
    ref = np.ones((2, 4))
    assert sqnr_db(ref, ref - 3 * ref) == pytest.approx(10 * np.log10(1 / 9))


def test_pooled_sqnr_is_not_inflated_by_one_near_exact_sample():
    """Seed 003's mean of per-sample ratios is dominated by a sample the model reproduces almost
    exactly (a saturated softmax); the pooled SQNR beside it is the signal over all the noise."""
    import numpy as np

    from faaq_onnx.analysis.output_store import RunningComparison
    from faaq_onnx.cli.summary import _pooled

    ref = np.array([[1.0, 0.0], [0.6, 0.4]])
    got = np.array([[1.0, 1e-9], [0.5, 0.5]])
    c = RunningComparison()
    c.update(ref[:1], got[:1])
    c.update(ref[1:], got[1:])
    out = c.result()
    assert out["sqnr_db"] > 150
    expected = 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))
    assert abs(out["sqnr_db_pooled"] - expected) < 1e-9
    assert "pooled" in _pooled(out) and _pooled({"sqnr_db": 30.0, "sqnr_db_pooled": 29.0}) == ""


def test_kendall_tau_counts_concordant_pairs():
    """tau-b: one swapped pair of 6 gives (5 - 1) / 6; ties leave their pairs out of both the
    count and the normalisation; a constant scoring has no order."""
    from faaq_onnx.analysis.metrics import kendall_tau

    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # a = [1, 1, 2]: pairs (0,1) tied in a; (0,2), (1,2) concordant with b = [1, 2, 3]
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(2 * 3))
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_weighted_kendall_tau_counts_the_top_of_the_ranking_most():
    """One swapped pair costs plain tau the same anywhere; weighted tau loses more for a swap of
    the two highest items than for a swap of the two lowest, and is 1 / -1 for the same / the
    reversed order."""
    from faaq_onnx.analysis.metrics import kendall_tau, weighted_kendall_tau

    a = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    top = [5.0, 6.0, 4.0, 3.0, 2.0, 1.0]
    bottom = [6.0, 5.0, 4.0, 3.0, 1.0, 2.0]
    assert kendall_tau(a, top) == pytest.approx(kendall_tau(a, bottom))
    assert weighted_kendall_tau(a, a) == pytest.approx(1.0)
    assert weighted_kendall_tau(a, a[::-1]) == pytest.approx(-1.0)
    assert weighted_kendall_tau(a, top) < weighted_kendall_tau(a, bottom) < 1.0
    assert weighted_kendall_tau(a, bottom) > kendall_tau(a, bottom)
    assert np.isnan(weighted_kendall_tau(a, [1.0] * 6))
