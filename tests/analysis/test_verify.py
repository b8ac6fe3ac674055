"""analysis/verify.py on a one-MatMul model and a perturbed copy: the SQNR and its bootstrap
bound computed here, what the reference is called, failures in one line, and the byte counts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faaq_onnx.analysis import verify as vf
from faaq_onnx.errors import FaaqError
from tests.conftest import one_weight_model

W = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)


def model(w=W, op="MatMul"):
    return one_weight_model(op, w, ["n", 6], ["n", 4])


X = np.random.default_rng(1).standard_normal((12, 6)).astype(np.float32)


def test_bootstrap_bounds():
    v = np.arange(10.0)
    means = vf.bootstrap_means(v, draws=500, seed=3)
    assert means.shape == (500,) and abs(means.mean() - 4.5) < 0.2
    np.testing.assert_array_equal(means, vf.bootstrap_means(v, draws=500, seed=3))
    assert not np.array_equal(means, vf.bootstrap_means(v, draws=500, seed=4))
    assert vf.upper_bound([1.0]) == np.inf and vf.sqnr_lower_bound_db([5.0]) == -np.inf
    assert vf.upper_bound([2.0, 2.0, 2.0]) == 2.0
    assert vf.sqnr_lower_bound_db([100.0, 100.0]) == pytest.approx(20.0)
    ratios = np.linspace(10, 1000, 40)
    want = 10 * np.log10(np.quantile(vf.bootstrap_means(ratios), 0.05))
    assert vf.sqnr_lower_bound_db(ratios) == pytest.approx(want)
    assert vf.sqnr_lower_bound_db(ratios, 0.5) > want  # a lower confidence, a higher bound
    assert vf.upper_bound(ratios) == pytest.approx(np.quantile(vf.bootstrap_means(ratios), 0.95))
    assert (vf.DEFAULT_CONFIDENCE, vf.BOOTSTRAP_DRAWS) == (0.95, 2000)


def test_verify_measures_sqnr_against_the_float_model():
    noisy = W + 0.01 * np.random.default_rng(2).standard_normal(W.shape).astype(np.float32)
    rep = vf.verify(model(), model(noisy), {"x": X}, {}, batch_size=5)
    ref, got = X.astype(np.float64) @ W, X.astype(np.float64) @ noisy
    per = np.mean(ref**2, 1) / np.mean((ref - got) ** 2, 1)
    out = rep["outputs"]["y"]
    assert out["sqnr_db"] == pytest.approx(10 * np.log10(per.mean()), abs=0.01)
    assert out["sqnr_db_pooled"] == pytest.approx(
        10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)), abs=0.01
    )
    assert out["top1_agreement"] == np.mean(ref.argmax(1) == got.argmax(1))
    assert out["sqnr_db_lower"] < out["sqnr_db"]
    assert rep["samples"] == 12 and rep["confidence"] == 0.95
    assert rep["reference"] == "the float model as optimized"
    assert rep["kernels"]["quantized"] == 0 and rep["kernels"]["integer"] == 0


def test_the_reference_is_the_file_given_or_says_why_not(tmp_path):
    onnx.save(model(), str(tmp_path / "given.onnx"))
    rep = vf.verify(model(), model(), {"x": X}, {}, reference=str(tmp_path / "given.onnx"))
    assert rep["reference"] == f"the model given ({tmp_path / 'given.onnx'})"
    assert rep["outputs"]["y"]["sqnr_db"] > 200  # identical outputs
    assert rep["size"]["float_model_bytes"] == (tmp_path / "given.onnx").stat().st_size
    broken = model(op="NoSuchOp")
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    rep = vf.verify(model(), model(), {"x": X}, {}, reference=str(tmp_path / "broken.onnx"))
    assert rep["reference"].startswith(
        f"the float model as optimized (the model given ({tmp_path / 'broken.onnx'}) does not "
        "load in ONNX Runtime: onnxruntime could not load the model: "
    )


def test_verify_failures_are_one_line():
    bad = model(W)
    bad.graph.node[0].input[1] = "missing"
    with pytest.raises(
        FaaqError, match=r"^internal error: the emitted model fails onnx\.checker: "
    ):
        vf.verify(model(), bad, {"x": X}, {})
    inf = W.copy()
    inf[0, 0] = np.inf
    with pytest.raises(FaaqError) as e:
        vf.verify(model(), model(inf), {"x": X}, {})
    assert str(e.value) == "the quantized model produces non-finite values in output 'y'"


def test_size_report_sums_the_emitted_weights():
    emitted = {
        "weights": {
            "a": {"elements": 100, "bits": 4, "stored_bytes": 60},
            "b": {"elements": 300, "bits": 8, "stored_bytes": 310},
        }
    }
    rep = vf.size_report(model(), model(), emitted)
    assert rep["quantized_weight_elements"] == 400 and rep["weight_float_bytes"] == 1600
    assert rep["weight_stored_bytes"] == 370
    assert rep["effective_weight_bits"] == pytest.approx((4 * 100 + 8 * 300) / 400)
    assert rep["stored_weight_bits"] == pytest.approx(8 * 370 / 400)
    assert (
        rep["float_model_bytes"] == model().ByteSize() and rep["per_weight"] is emitted["weights"]
    )
    empty = vf.size_report(model(), model(), {})
    assert empty["effective_weight_bits"] == 0.0 and empty["stored_weight_bits"] == 0.0


def test_model_bytes_count_external_data(tmp_path):
    onnx.save_model(
        model(),
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        location="m.data",
        size_threshold=0,
    )
    want = (tmp_path / "m.onnx").stat().st_size + (tmp_path / "m.data").stat().st_size
    assert vf.model_bytes(str(tmp_path / "m.onnx")) == want
    assert vf.model_bytes(tmp_path / "m.onnx") == want
    header = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert vf.model_bytes(header) == header.ByteSize() + W.nbytes
    onnx.save(model(), str(tmp_path / "plain.onnx"))
    assert vf.written_bytes(model()) == (tmp_path / "plain.onnx").stat().st_size


def test_bootstrap_of_many_samples_draws_in_chunks_the_same_resamples():
    """5000 samples: 838 resamples a chunk, so 1000 draws take two chunks, the last one short;
    together they are the resamples one seeded draw of 1000 x 5000 indices gives."""
    v = np.random.default_rng(1).random(5000)
    got = vf.bootstrap_means(v, draws=1000, seed=2)
    idx = np.random.default_rng(2).integers(0, 5000, size=(1000, 5000))
    np.testing.assert_array_equal(got, v[idx].mean(axis=1))


def test_bootstrap_of_many_samples_keeps_its_memory_bounded():
    """Resamples are drawn in chunks of at most 2^22 indices (int64 indices plus the float64
    values they pick: 64 MiB), whatever the sample count: 8192 samples x 2000 draws would be
    256 MiB in one piece. Peak traced allocation stays within 1.5 x that chunk."""
    import tracemalloc

    v = np.random.default_rng(0).random(8192)
    tracemalloc.start()
    try:
        vf.bootstrap_means(v)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    chunk = (1 << 22) * (8 + 8)
    assert chunk / 2 < peak < 1.5 * chunk
