"""faaq_onnx.reliability without quantizing: draw sizes at their limits, the exact report text."""

from dataclasses import dataclass

import numpy as np
import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.reliability import CalibrationDraw, run_trials, summarize, to_markdown


def _pool(n=60, classes=3):
    # sample i holds the value i everywhere: a row's value says which sample it is
    x = np.repeat(np.arange(n, dtype=np.float32), 2 * 4 * 4).reshape(n, 2, 4, 4)
    return x, np.arange(n) % classes


def _ids(a):
    return a[:, 0, 0, 0].astype(int)


@dataclass
class _Config:
    """The settings run_trials reads and sets on each draw's copy of the config."""

    seed: int
    scheme: str
    calib_size: int = 0
    verify_samples: int = 0
    progress: bool = True


def test_a_draw_may_use_the_whole_pool_and_no_more():
    x, y = _pool(30)
    calib, held = CalibrationDraw(size=20, held_out=10).draw(x, y, 0)
    assert sorted([*_ids(calib), *_ids(held)]) == list(range(30))
    with pytest.raises(FaaqError) as e:
        CalibrationDraw(size=21, held_out=10).draw(x, y, 0)
    assert str(e.value) == "the pool has 30 samples; a draw needs 21 + 10 held out"


def test_draws_keep_pool_order_and_are_seeded():
    x, y = _pool()
    d = CalibrationDraw(size=12, held_out=7)
    calib, held = d.draw(x, y, 5)
    assert list(_ids(calib)) == sorted(_ids(calib)) and len(set(_ids(calib))) == 12
    assert list(_ids(held)) == sorted(_ids(held)) and len(set(_ids(held))) == 7
    again, held2 = d.draw(x, y, 5)
    np.testing.assert_array_equal(again, calib)
    np.testing.assert_array_equal(held2, held)
    assert calib.base is None or not np.shares_memory(calib, x)  # a copy: noise never hits the pool


@pytest.mark.parametrize("share,want", [(1.0, 12), (0.25, 3), (0.5, 6)])
def test_dominant_share_counts(share, want):
    x, y = _pool(90)
    calib, _ = CalibrationDraw(size=12, dominant_class=1, dominant_share=share, held_out=0).draw(
        x, y, 0
    )
    assert np.sum(y[_ids(calib)] == 1) == want and len(set(_ids(calib))) == 12


def test_a_dominant_class_smaller_than_its_share_gives_all_it_has():
    x, _ = _pool(40)
    y = np.zeros(40, int)
    y[:3] = 7  # only 3 samples of class 7
    calib, _ = CalibrationDraw(size=10, dominant_class=7, dominant_share=0.8, held_out=0).draw(
        x, y, 0
    )
    assert np.sum(y[_ids(calib)] == 7) == 3 and len(calib) == 10


@pytest.mark.parametrize("share,n_noise", [(0.1, 2), (0.5, 10), (1.0, 20), (0.04, 1)])
def test_noise_share_rounds_to_whole_samples(share, n_noise):
    x, y = _pool()
    calib, _ = CalibrationDraw(size=20, noise_share=share, held_out=0).draw(x, y, 1)
    whole = (calib == calib[:, :1, :1, :1]).all(axis=(1, 2, 3)) & (
        calib[:, 0, 0, 0] == np.round(calib[:, 0, 0, 0])
    )
    assert np.sum(~whole) == n_noise


def test_noise_spans_each_channels_own_range():
    x, y = _pool()
    x = x.copy()
    x[:, 1] = x[:, 1] * 10 + 1000  # channel 1: [1000, 1590]; channel 0: [0, 59]
    calib, _ = CalibrationDraw(size=20, noise_share=1.0, held_out=0).draw(x, y, 0)
    assert calib[:, 0].min() >= 0 and calib[:, 0].max() <= 59 and calib[:, 0].max() > 40
    assert calib[:, 1].min() >= 1000 and calib[:, 1].max() <= 1590 and calib[:, 1].min() < 1200
    assert calib.dtype == np.float32


@pytest.mark.parametrize(
    "kw",
    [{"size": 1}, {"noise_share": 0.0}, {"noise_share": 1.0}, {"dominant_share": 1.0}],
)
def test_bounds_are_accepted(kw):
    CalibrationDraw(**kw)


def test_error_messages_name_the_value():
    with pytest.raises(FaaqError) as e:
        CalibrationDraw(size=0)
    assert str(e.value) == "calibration size must be at least 1, got 0"
    with pytest.raises(FaaqError) as e:
        CalibrationDraw(noise_share=2.0)
    assert str(e.value) == "noise share must be in [0, 1], got 2.0"
    with pytest.raises(FaaqError) as e:
        CalibrationDraw(dominant_share=-1.0)
    assert str(e.value) == "dominant share must be in (0, 1], got -1.0"


def test_fewer_than_two_trials_are_refused_before_any_work():
    with pytest.raises(FaaqError, match="at least 2 trials, got 1"):
        run_trials(None, (None, None), (None, None), None, 1, CalibrationDraw(), "x")


def _summary(dominant=None):
    float_rep = {
        "top1": 0.9,
        "per_class": {"a": {"top1": 1.0}, "b": {"top1": 0.8}, "c": {"top1": 0.5}},
    }
    runs = [
        {"seed": 0, "top1": 0.8, "per_class": {"a": 0.9, "b": 0.5, "c": 0.5}},
        {"seed": 1, "top1": 0.7, "per_class": {"a": 0.8, "b": 0.7, "c": 0.6}},
        {"seed": 2, "top1": 0.6, "per_class": {"a": 0.7, "b": 0.7, "c": 0.4}},
    ]
    draw = CalibrationDraw(size=8, noise_share=0.25, dominant_class=dominant, held_out=4)
    return summarize(float_rep, runs, draw, type("C", (), {"scheme": "w8a8"})())


def test_summary_fields():
    s = _summary()
    assert s["scheme"] == "w8a8" and s["trials"] == 3
    assert s["draw"] == {
        "size": 8,
        "noise_share": 0.25,
        "dominant_class": None,
        "dominant_share": 0.5,
        "held_out": 4,
    }
    assert s["float"] == {"top1": 0.9, "per_class": {"a": 1.0, "b": 0.8, "c": 0.5}}
    assert s["top1"]["mean"] == pytest.approx(0.7) and s["top1"]["std"] == pytest.approx(0.1)
    # a: drops 0.1, 0.2, 0.3 (mean 0.2); b: 0.3, 0.1, 0.1 (mean 0.167, worst 0.3); c: 0, -0.1, 0.1
    assert s["per_class"]["c"] == {
        "mean": pytest.approx(0.5),
        "std": pytest.approx(0.1),
        "drop_mean": pytest.approx(0.0),
        "drop_max": pytest.approx(0.1),
    }
    assert s["per_class"]["b"]["drop_max"] == pytest.approx(0.3)
    assert s["worst_class"] == {
        "class": "a",
        "drop_mean": pytest.approx(0.2),
        "drop_max": pytest.approx(0.3),
    }
    assert s["runs"][2]["seed"] == 2


def test_worst_class_is_the_largest_mean_drop():
    float_rep = {"top1": 0.5, "per_class": {"0": {"top1": 0.5}, "1": {"top1": 0.9}}}
    runs = [
        {"top1": 0.4, "per_class": {"0": 0.5, "1": 0.5}},
        {"top1": 0.4, "per_class": {"0": 0.1, "1": 0.7}},
    ]
    s = summarize(float_rep, runs, CalibrationDraw(), type("C", (), {"scheme": "s"})())
    # class 0: drops 0, 0.4 (mean 0.2, max 0.4); class 1: 0.4, 0.2 (mean 0.3, max 0.4)
    assert s["worst_class"] == {
        "class": "1",
        "drop_mean": pytest.approx(0.3),
        "drop_max": pytest.approx(0.4),
    }


def test_markdown_is_exact():
    md = to_markdown(_summary())
    assert md == (
        "w8a8, 3 calibration draws of 8 samples (noise share 0.25)\n"
        "\n"
        "| | float | quantized (mean ± std) | drop (mean / worst trial) |\n"
        "|---|---|---|---|\n"
        "| average | 90.00 | 70.00 ± 10.00 | 20.00 |\n"
        "| class a | 100.00 | 80.00 ± 10.00 | 20.00 / 30.00 |\n"
        "| class b | 80.00 | 63.33 ± 11.55 | 16.67 / 30.00 |\n"
        "| class c | 50.00 | 50.00 ± 10.00 | 0.00 / 10.00 |\n"
        "\n"
        "worst class: a, mean drop 20.00 pt (up to 30.00 pt in one draw)\n"
    )


def test_markdown_names_the_dominant_class():
    first = to_markdown(_summary(dominant=3)).splitlines()[0]
    assert first == "w8a8, 3 calibration draws of 8 samples (noise share 0.25, class 3 at 0.5)"


def test_drop_plot_is_written(tmp_path):
    from faaq_onnx.reliability import plot_drops

    plot_drops(_summary(), tmp_path / "sub" / "drops.png")
    data = (tmp_path / "sub" / "drops.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    import struct

    assert struct.unpack(">II", data[16:24]) == (6 * 110, 4 * 110)  # 3 classes: the 6-inch minimum
    summary = _summary()
    many = {str(c): 0.5 for c in range(12)}
    summary["float"]["per_class"] = many
    summary["per_class"] = {c: {} for c in many}
    for r in summary["runs"]:
        r["per_class"] = dict(many)
    plot_drops(summary, tmp_path / "many.png")
    data = (tmp_path / "many.png").read_bytes()
    assert struct.unpack(">II", data[16:24]) == (round(0.6 * 12 * 110), 4 * 110)


def test_run_trials_quantizes_each_draw_with_its_own_seed(monkeypatch):
    from types import SimpleNamespace

    import faaq_onnx.evaluate as evaluate_mod
    import faaq_onnx.pipeline as pipeline_mod

    quantized = []

    def quantize(model, inputs, config):
        quantized.append((model, inputs["x"], config))
        return SimpleNamespace(model=f"q{config.seed}")

    def evaluate(model, x, y, class_names=None):
        top1 = {"float": 0.9, "q10": 0.8, "q11": 0.6, "q12": 0.7}[model]
        return {"top1": top1, "per_class": {"0": {"top1": top1}, "1": {"top1": 1.0}}}

    monkeypatch.setattr(pipeline_mod, "quantize", quantize)
    monkeypatch.setattr(evaluate_mod, "evaluate", evaluate)
    x, y = _pool(40)
    steps = []
    draw = CalibrationDraw(size=6, held_out=4)
    s = run_trials(
        "float",
        (x, y),
        (x[:5], y[:5]),
        _Config(seed=10, scheme="w4a8"),
        3,
        draw,
        "x",
        progress=lambda *a: steps.append(a),
    )
    assert [c.seed for _, _, c in quantized] == [10, 11, 12]
    assert all((c.calib_size, c.verify_samples, c.progress) == (6, 4, False) for *_, c in quantized)
    for (model, fed, _c), seed in zip(quantized, (10, 11, 12)):
        calib, held = draw.draw(x, y, seed)
        assert model == "float"
        np.testing.assert_array_equal(fed, np.concatenate([calib, held]))
    assert steps == [(1, 3, 0.8), (2, 3, 0.6), (3, 3, 0.7)]
    assert [r["seed"] for r in s["runs"]] == [10, 11, 12]
    assert [r["top1"] for r in s["runs"]] == [0.8, 0.6, 0.7]
    assert s["float"]["top1"] == 0.9 and s["top1"]["mean"] == pytest.approx(0.7)
    assert all(0 <= r["seconds"] < 5 for r in s["runs"])


def test_drop_plot_boxes_each_class_drops_against_a_zero_line(tmp_path, monkeypatch):
    """One box per class over the draws' drops in points (its median line at the median drop),
    and a horizontal reference line across the whole plot at a drop of 0."""
    import faaq_onnx.outputs as outputs
    from faaq_onnx.reliability import plot_drops

    figs = []
    real = outputs.savefig_atomic
    monkeypatch.setattr(
        outputs, "savefig_atomic", lambda fig, *a, **k: (figs.append(fig), real(fig, *a, **k))
    )
    summary = _summary()
    plot_drops(summary, tmp_path / "drops.png")
    (ax,) = figs[0].axes
    full_width = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [0, 1]]
    assert [list(ln.get_ydata()) for ln in full_width] == [[0, 0]]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    for i, c in enumerate(["a", "b", "c"], start=1):
        drops = [
            100 * (summary["float"]["per_class"][c] - r["per_class"][c]) for r in summary["runs"]
        ]
        medians = [
            ln
            for ln in ax.get_lines()
            if len(ln.get_xdata()) == 2 and i - 0.5 < np.mean(ln.get_xdata()) < i + 0.5
        ]
        assert any(np.allclose(ln.get_ydata(), np.median(drops)) for ln in medians), c


def test_two_trials_are_enough_and_each_reports_its_seconds_to_a_tenth(monkeypatch):
    """The minimum of two trials runs; a trial's time is its own wall time, to 0.1 s."""
    from types import SimpleNamespace

    import faaq_onnx.evaluate as evaluate_mod
    import faaq_onnx.pipeline as pipeline_mod
    import faaq_onnx.reliability as rel

    ticks = iter([100.0, 101.23456, 200.0, 202.46])  # start and end of each trial
    monkeypatch.setattr(rel, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    monkeypatch.setattr(
        pipeline_mod, "quantize", lambda model, inputs, config: SimpleNamespace(model="q")
    )
    monkeypatch.setattr(
        evaluate_mod,
        "evaluate",
        lambda model, x, y, class_names=None: {"top1": 0.5, "per_class": {"0": {"top1": 0.5}}},
    )
    x, y = _pool(40)
    s = run_trials(
        "float",
        (x, y),
        (x[:5], y[:5]),
        _Config(seed=0, scheme="w8a8"),
        2,
        CalibrationDraw(size=6, held_out=4),
        "x",
    )
    assert [r["seconds"] for r in s["runs"]] == [1.2, 2.5]
