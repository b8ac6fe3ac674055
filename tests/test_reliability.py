"""Seed 004's protocol: calibration draws, noise, class imbalance, and the statistics reported."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from faaq_onnx.cli import main
from faaq_onnx.errors import FaaqError
from faaq_onnx.reliability import CalibrationDraw, summarize


def _pool(n=200, classes=4):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, 16, 16)).astype(np.float32), np.arange(n) % classes


def test_draws_differ_by_seed_and_hold_out_other_samples():
    x, y = _pool()
    d = CalibrationDraw(size=40, held_out=10)
    a, ha = d.draw(x, y, 0)
    b, _ = d.draw(x, y, 1)
    assert a.shape == (40, 3, 16, 16) and ha.shape == (10, 3, 16, 16)
    assert not np.array_equal(a, b)
    flat = lambda arr: {r.tobytes() for r in arr}  # noqa: E731
    assert not flat(a) & flat(ha)


def test_noise_share_replaces_that_many_samples():
    x, y = _pool()
    calib, _ = CalibrationDraw(size=40, noise_share=0.25, held_out=0).draw(x, y, 3)
    pool_rows = {r.tobytes() for r in x}
    noise = np.stack([r for r in calib if r.tobytes() not in pool_rows])
    assert len(noise) == 10
    # uniform over each channel's observed range: inside it, and spread across it
    lo, hi = x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3))
    per_ch = noise.transpose(1, 0, 2, 3).reshape(3, -1)
    assert np.all(per_ch.min(1) >= lo) and np.all(per_ch.max(1) <= hi)
    np.testing.assert_allclose(per_ch.mean(1), (lo + hi) / 2, atol=0.05 * (hi - lo).max())


def test_dominant_class_makes_up_its_share():
    x, y = _pool()
    d = CalibrationDraw(size=40, dominant_class=2, dominant_share=0.5, held_out=0)
    calib, _ = d.draw(x, y, 0)
    idx = [np.flatnonzero((x == row).all(axis=(1, 2, 3)))[0] for row in calib]
    assert len(calib) == 40 and len(set(idx)) == 40  # the asked size, no sample twice
    assert np.sum(y[idx] == 2) == 20
    with pytest.raises(FaaqError, match="does not occur"):
        CalibrationDraw(size=10, dominant_class=9, held_out=0).draw(x, y, 0)


def test_markdown_states_the_numbers_in_percent():
    from faaq_onnx.reliability import to_markdown

    float_rep = {"top1": 0.9, "per_class": {"0": {"top1": 1.0}, "1": {"top1": 0.8}}}
    runs = [
        {"top1": 0.85, "per_class": {"0": 0.9, "1": 0.8}},
        {"top1": 0.75, "per_class": {"0": 0.7, "1": 0.8}},
    ]
    md = to_markdown(
        summarize(float_rep, runs, CalibrationDraw(size=8), type("C", (), {"scheme": "w4a4"})())
    )
    assert "| average | 90.00 | 80.00 ± 7.07 | 10.00 |" in md  # sample std (ddof 1)
    assert "| class 0 | 100.00 | 80.00 ± 14.14 | 20.00 / 30.00 |" in md


def test_summary_statistics():
    float_rep = {"top1": 0.9, "per_class": {"0": {"top1": 1.0}, "1": {"top1": 0.8}}}
    runs = [
        {"top1": 0.85, "per_class": {"0": 0.9, "1": 0.8}},
        {"top1": 0.75, "per_class": {"0": 0.7, "1": 0.8}},
    ]
    s = summarize(float_rep, runs, CalibrationDraw(size=10), type("C", (), {"scheme": "w4a4"})())
    assert s["top1"]["mean"] == pytest.approx(0.8) and s["top1"]["std"] == pytest.approx(
        np.std([0.85, 0.75], ddof=1)
    )
    assert s["per_class"]["0"]["drop_mean"] == pytest.approx(0.2) and s["per_class"]["0"][
        "drop_max"
    ] == pytest.approx(0.3)
    assert s["worst_class"] == {
        "class": "0",
        "drop_mean": pytest.approx(0.2),
        "drop_max": pytest.approx(0.3),
    }


def test_reliability_command_end_to_end(tiny_cnn, tmp_path):
    from tests.conftest import run_model

    x, _ = _pool(160, 10)
    y = run_model(tiny_cnn, {"input": x})[0].argmax(1)  # a pool the float model labels
    np.savez(tmp_path / "pool.npz", x=x[:120], y=y[:120])
    np.savez(tmp_path / "test.npz", x=x[120:], y=y[120:])
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        main,
        [
            "reliability",
            tiny_cnn,
            "--calib",
            str(tmp_path / "pool.npz"),
            "--data",
            str(tmp_path / "test.npz"),
            "--scheme",
            "w4a4",
            "--trials",
            "3",
            "--calib-size",
            "32",
            "--report",
            str(out),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "reliability.json").read_text())
    assert rep["trials"] == 3 and len({run["seed"] for run in rep["runs"]}) == 3
    assert (out / "per_class_drops.png").stat().st_size > 1000 and "worst class" in (
        out / "reliability.md"
    ).read_text()


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"size": 0}, "calibration size"),
        ({"noise_share": 1.5}, "noise share"),
        ({"noise_share": -0.1}, "noise share"),
        ({"dominant_share": 0.0}, "dominant"),
        ({"dominant_share": 1.2}, "dominant"),
    ],
)
def test_draw_settings_out_of_range_are_refused(kw, match):
    with pytest.raises(FaaqError, match=match):
        CalibrationDraw(**kw)
    CalibrationDraw(noise_share=1.0, dominant_share=1.0)  # the bounds themselves are allowed


def test_a_single_sample_draw_is_allowed():
    x, y = _pool()
    calib, held = CalibrationDraw(size=1, held_out=1).draw(x, y, 0)
    assert len(calib) == 1 and len(held) == 1


def test_a_draw_defaults_to_the_quantizers_own_calibration_and_verification_sizes():
    """256 calibration samples and 64 held out, as a plain `faaq quantize` run uses."""
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.reliability import CalibrationDraw

    d, c = CalibrationDraw(), QuantConfig()
    assert (d.size, d.held_out) == (c.calib_size, c.verify_samples)
    assert (d.noise_share, d.dominant_class, d.dominant_share) == (0.0, None, 0.5)
