"""analysis/tradeoff.py on a stand-in compilation with a known cost per bit: each point's numbers,
the sweep of BOPs budgets, and the figures' pixel sizes (figsize x dpi)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from faaq_onnx.analysis import tradeoff as tr
from faaq_onnx.config import Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup
from faaq_onnx.plan import BitPlan

W4A8, W8A8, W8A16 = Candidate(4, 8), Candidate(8, 8), Candidate(8, 16)
GROUPS = {
    "g:a": QuantizerGroup("g:a", "conv", ["a"], ["wa"], ["act:a"], 100, 10),
    "g:b": QuantizerGroup("g:b", "conv", ["b"], ["wb"], ["act:b"], 300, 30),
}


class Costs:
    """BOPs = Σ macs · w · a; bytes = Σ params · w / 8; other_bytes fixed."""

    def __init__(self, kind):
        self.kind, self.other_bytes = kind, 1000

    def plan_cost(self, choices):
        if self.kind == "bops":
            return sum(GROUPS[g].macs * c.w * c.a for g, c in choices.items())
        return sum(GROUPS[g].weight_params * c.w / 8 for g, c in choices.items())


class Comp:
    def __init__(self, latency=None, table="table"):
        self.qgraph = QuantizerGraph({}, {}, GROUPS)
        self.candidates = [W4A8, W8A8, W8A16]
        self.table, self.latency = table, latency
        self.allocated = []

    def cost_model(self, budget):
        return Costs(budget.kind)

    def uniform(self, cand):
        return BitPlan.uniform(self.qgraph, cand)

    def measure(self, plan):
        bits = sum(c.w for c in plan.choices.values())
        return {"sqnr_db": 2.5 * bits, "kl": 1.0 / bits}

    def allocate(self, budget, metric, method, uniform_check=True):
        # the curves are the allocator's own plans: uniform ones are points of their own
        assert uniform_check is False
        self.allocated.append((budget.kind, budget.value, metric, method))
        return SimpleNamespace(plan=BitPlan({"g:a": W4A8, "g:b": W8A8}))


def test_plan_point_numbers():
    comp = Comp()
    plan = BitPlan({"g:a": W4A8, "g:b": W8A8})
    p = tr.plan_point(comp, plan, "mixed", accuracy=lambda ch: 0.5 if ch is plan.choices else 0)
    ref = 100 * 64 + 300 * 64
    cost = 100 * 32 + 300 * 64
    assert p["label"] == "mixed"
    assert p["model_bytes"] == 10 * 4 / 8 + 30 * 8 / 8 + 1000
    assert p["relative_bops"] == pytest.approx(cost / ref)
    assert p["relative_bops_w8a16"] == pytest.approx(cost / (2 * ref))
    assert p["top1"] == 0.5
    assert p["avg_weight_bits"] == pytest.approx((4 * 10 + 8 * 30) / 40)
    assert (p["sqnr_db"], p["kl"]) == (30.0, 1 / 12)
    assert p["plan"] == {"g:a": "w4a8", "g:b": "w8a8"}
    assert "latency_ms" not in p
    lat = SimpleNamespace(plan_ms=lambda choices, ref: 1.5 if ref == W8A8 else -1)
    q = tr.plan_point(Comp(latency=lat), plan, "x")
    assert q["latency_ms"] == 1.5 and "top1" not in q


def test_tradeoff_sweeps_bops_budgets_between_the_cheapest_and_dearest_plans():
    comp = Comp()
    seen = []

    def accuracy(choices):
        seen.append(choices)
        return 0.9 if choices is None else 0.8

    out = tr.tradeoff(comp, metric="kl", points=3, accuracy=accuracy)
    assert out["metric"] == "kl" and out["float_top1"] == 0.9 and seen[0] is None
    assert [p["label"] for p in out["uniform"]] == ["w4a8", "w8a8", "w8a16"]
    ref = 400 * 64
    lo, hi = (400 * 32) / ref, (400 * 128) / ref  # all w4a8 .. all w8a16
    budgets = [v for kind, v, _, m in comp.allocated if m == "greedy"]
    assert all(kind == "bops" for kind, *_ in comp.allocated)
    assert budgets == pytest.approx([r * 1.0000001 for r in (lo, (lo + hi) / 2, hi)], rel=1e-12)
    assert [m for *_, m in comp.allocated] == ["greedy", "knapsack"] * 3
    assert {metric for _, _, metric, _ in comp.allocated} == {"kl"}
    assert [p["label"] for p in out["knapsack"]] == [
        "knapsack bops<=0.500",
        "knapsack bops<=1.250",
        "knapsack bops<=2.000",
    ]
    assert len(out["greedy"]) == 3 and all(p["top1"] == 0.8 for p in out["greedy"])
    assert "float_top1" not in tr.tradeoff(Comp(), points=2)


def test_tradeoff_needs_the_sensitivity_table():
    with pytest.raises(FaaqError, match="run the sensitivity stage first"):
        tr.tradeoff(Comp(table=None))


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_tradeoff_figure_size_follows_its_panels(tmp_path):
    pytest.importorskip("matplotlib")
    comp = Comp()
    curve = tr.tradeoff(comp, points=2)
    tr.plot_tradeoff(curve, tmp_path / "a.png")
    assert png_size(tmp_path / "a.png") == (round(5.5 * 2 * 110), round(4.2 * 110))
    lat = SimpleNamespace(plan_ms=lambda choices, ref: 1.0)
    curve = tr.tradeoff(Comp(latency=lat), points=2, accuracy=lambda ch: 0.5)
    tr.plot_tradeoff(curve, tmp_path / "b.png")
    assert png_size(tmp_path / "b.png") == (round(5.5 * 3 * 110), round(4.2 * 2 * 110))


def test_sensitivity_figure_size_follows_the_groups(tmp_path):
    pytest.importorskip("matplotlib")
    few = SimpleNamespace(table={"g:a": {"w4a8": {"sqnr_db": 20.0}, "w8a8": {"sqnr_db": 40.0}}})
    tr.plot_sensitivity(few, tmp_path / "few.png")
    assert png_size(tmp_path / "few.png") == (8 * 110, 3 * 110)  # at least 3 inches high
    many = SimpleNamespace(
        table={f"g:{i}": {"w4a8": {"kl": 0.1 * i}} for i in range(20)}
    )  # 0.28 * 20 + 1 = 6.6 inches
    tr.plot_sensitivity(many, tmp_path / "many.png", metric_key="kl")
    assert png_size(tmp_path / "many.png") == (8 * 110, round(6.6 * 110))


def test_measured_latency_times_each_points_model_against_the_users_file(monkeypatch):
    """One interleaved pass: the user's file first, then the model of every uniform and
    knapsack point (built from that point's plan, without bias correction); ratios map back."""
    from faaq_onnx.runtime import timing

    comp = Comp()
    curve = tr.tradeoff(comp, points=2)
    built = []

    def build(plan, bias_corrected=True):
        built.append((dict(plan.choices), bias_corrected))
        return f"model{len(built)}", None

    comp.build, comp.model_path, comp.float_proto = build, "/user/model.onnx", "FLOAT"
    comp.verify_inputs = {"x": __import__("numpy").zeros((3, 2), "float32")}
    seen = {}

    def fake_timing(models, feeds, ep="cpu", pairs=30):
        seen.update(models=models, batch=len(feeds["x"]), ep=ep, pairs=pairs)
        return [10.0] + [float(i + 1) for i in range(len(models) - 1)]

    monkeypatch.setattr(timing, "interleaved_median_ms", fake_timing)
    tr.measure_latency(comp, curve, ep="cpu", batch=2)
    points = curve["uniform"] + curve["knapsack"]
    assert seen["models"] == ["/user/model.onnx"] + [f"model{i + 1}" for i in range(len(points))]
    assert seen["batch"] == 2
    assert [c for c, _ in built] == [
        {g: Candidate.parse(c) for g, c in p["plan"].items()} for p in points
    ]
    assert not any(corrected for _, corrected in built)
    assert [p["measured_latency_ratio"] for p in points] == [
        pytest.approx((i + 1) / 10) for i in range(len(points))
    ]
    assert curve["float_latency_ms"] == 10.0
    assert all("measured_latency_ratio" not in p for p in curve["greedy"])


def captured_figure(monkeypatch):
    """Replace the atomic save with one that keeps the figure and the save's keywords."""
    from faaq_onnx import outputs

    seen = {}

    def keep(fig, path, **kwargs):
        seen.update(fig=fig, path=path, kwargs=kwargs)
        return path

    monkeypatch.setattr(outputs, "savefig_atomic", keep)
    return seen


def hand_curve():
    """A curve with every optional key: uniform and knapsack points timed, greedy ones not."""

    def point(label, mb, bops, sqnr, top1, lat, ratio=None):
        p = {
            "label": label,
            "model_bytes": mb * 1e6,
            "relative_bops": bops,
            "sqnr_db": sqnr,
            "top1": top1,
            "latency_ms": lat,
        }
        if ratio is not None:
            p["measured_latency_ratio"] = ratio
        return p

    return {
        "metric": "kl",
        "float_top1": 0.75,
        "uniform": [
            point("w4a8", 2.0, 0.5, 20.0, 0.60, 3.0, 0.7),
            point("w8a8", 4.0, 1.0, 30.0, 0.70, 4.0, 0.9),
        ],
        # out of order on purpose: the curves are drawn sorted by their x key
        "greedy": [point("g2", 3.5, 0.9, 28.0, 0.68, 3.8), point("g1", 2.5, 0.6, 22.0, 0.62, 3.2)],
        "knapsack": [
            point("k2", 3.0, 0.8, 27.0, 0.67, 3.6, 0.8),
            point("k1", 2.2, 0.55, 21.0, 0.61, 3.1, 0.75),
        ],
    }


def test_tradeoff_figure_draws_each_metric_against_each_cost(monkeypatch, tmp_path):
    """Every panel: greedy (o-) and knapsack (s--) curves sorted by cost, sizes in MB, top-1 in
    %, uniform schemes as black stars labelled beside them, the float top-1 as a dotted line on
    the top-1 row only, a light grid; one legend per row (first panel, lower right); dpi 110."""
    pytest.importorskip("matplotlib")
    seen = captured_figure(monkeypatch)
    curve = hand_curve()
    tr.plot_tradeoff(curve, tmp_path / "t.png")
    fig = seen["fig"]
    assert seen["kwargs"] == {"dpi": 110} and seen["path"] == tmp_path / "t.png"
    assert fig._suptitle is not None and "uniform schemes (stars)" in fig._suptitle.get_text()
    keys = ["model_bytes", "relative_bops", "latency_ms", "measured_latency_ratio"]
    rows = [("sqnr_db", 1.0, "output SQNR"), ("top1", 100.0, "top-1 %")]
    axes = fig.axes
    assert len(axes) == len(keys) * len(rows)
    for r, (ykey, yscale, ytext) in enumerate(rows):
        for c, key in enumerate(keys):
            ax = axes[r * len(keys) + c]
            assert ytext in ax.get_ylabel()
            xscale = 1e-6 if key == "model_bytes" else 1.0
            lines = {ln.get_label(): ln for ln in ax.get_lines()}
            for method, marker, style in (("greedy", "o", "-"), ("knapsack", "s", "--")):
                pts = sorted((p for p in curve[method] if key in p), key=lambda p: p[key])
                name = f"{method} (kl)"
                if not pts:
                    assert name not in lines  # greedy plans are not timed
                    continue
                ln = lines[name]
                assert (ln.get_marker(), ln.get_linestyle()) == (marker, style)
                assert list(ln.get_xdata()) == pytest.approx([p[key] * xscale for p in pts])
                assert list(ln.get_ydata()) == pytest.approx([p[ykey] * yscale for p in pts])
            stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
            assert len(stars) == len(curve["uniform"])
            for ln, p in zip(stars, curve["uniform"]):
                assert ln.get_color() == "k" and ln.get_markersize() == 10
                assert ln.get_xdata()[0] == pytest.approx(p[key] * xscale)
                assert ln.get_ydata()[0] == pytest.approx(p[ykey] * yscale)
            notes = [t for t in ax.texts if t.get_text() in ("w4a8", "w8a8")]
            assert [t.get_text() for t in notes] == ["w4a8", "w8a8"]
            for t, p in zip(notes, curve["uniform"]):
                assert t.xy == pytest.approx((p[key] * xscale, p[ykey] * yscale))
                assert tuple(t.xyann) == (4, -10) and t.get_fontsize() == 8
            floats = [ln for ln in ax.get_lines() if ln.get_label() == "float"]
            if ykey == "top1":
                assert len(floats) == 1 and floats[0].get_linestyle() == ":"
                assert floats[0].get_ydata()[0] == pytest.approx(75.0)
            else:
                assert not floats
            grid = ax.xaxis.get_gridlines()[0]
            assert grid.get_visible() and grid.get_alpha() == pytest.approx(0.3)
            legend = ax.get_legend()
            assert (legend is not None) == (c == 0)
            if legend is not None:
                assert legend._loc == 4  # 'lower right'
    assert [axes[c].get_xlabel().split(" (")[0] for c in range(len(keys))] == [
        "model size",
        "BOPs relative to W8A8",
        "latency",
        "latency x float",
    ]


def test_tradeoff_figure_without_labels_or_timings_has_one_row_of_two_panels(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    seen = captured_figure(monkeypatch)
    curve = hand_curve()
    del curve["float_top1"]
    for p in curve["uniform"] + curve["greedy"] + curve["knapsack"]:
        p.pop("latency_ms")
        p.pop("measured_latency_ratio", None)
    tr.plot_tradeoff(curve, tmp_path / "t.png")
    axes = seen["fig"].axes
    assert len(axes) == 2
    assert all(ln.get_label() != "float" for ax in axes for ln in ax.get_lines())
    assert list(axes[1].get_lines()[0].get_ydata()) == [22.0, 28.0]  # greedy SQNR, unscaled


def test_sensitivity_figure_bars_one_row_per_group_one_bar_per_candidate(monkeypatch, tmp_path):
    """Candidates sorted by (w, a); each group's bars stacked inside 0.8 of a row, the tick at
    the middle of its bars, labelled by the group's last 40 characters without 'g:'."""
    pytest.importorskip("matplotlib")
    seen = captured_figure(monkeypatch)
    long = "g:" + "x" * 30 + "/conv_with_a_long_name"
    table = SimpleNamespace(
        table={
            "g:a": {"w8a8": {"sqnr_db": 40.0}, "w4a16": {"sqnr_db": 25.0}, "w4a8": {"sqnr_db": 20}},
            long: {"w4a8": {"sqnr_db": 10.0}},  # the other candidates missing: NaN bars
        }
    )
    tr.plot_sensitivity(table, tmp_path / "s.png")
    assert seen["kwargs"] == {"dpi": 110}
    (ax,) = seen["fig"].axes
    cands = ["w4a8", "w4a16", "w8a8"]
    height = 0.8 / len(cands)
    bars = ax.patches
    assert len(bars) == 2 * len(cands)
    _, labels = ax.get_legend_handles_labels()
    assert labels == cands
    for i, c in enumerate(cands):
        for j, g in enumerate(table.table):
            bar = bars[i * 2 + j]
            assert bar.get_height() == pytest.approx(height)
            assert bar.get_y() + height / 2 == pytest.approx(j + i * height)
            want = table.table[g].get(c, {}).get("sqnr_db", float("nan"))
            assert bar.get_width() == pytest.approx(want, nan_ok=True)
    middle = [j + (len(cands) - 1) * height / 2 for j in range(2)]
    assert list(ax.get_yticks()) == pytest.approx(middle)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["a", long[2:][-40:]] and len(ticks[1]) == 40
    assert all(t.get_fontsize() == 7 for t in ax.get_yticklabels())
    assert ax.yaxis_inverted()
    assert ax.get_xlabel().startswith("output SQNR (dB)")
    assert ax.get_legend() is not None
    assert all(t.get_fontsize() == 8 for t in ax.get_legend().get_texts())
    xgrid, ygrid = ax.xaxis.get_gridlines()[0], ax.yaxis.get_gridlines()[0]
    assert xgrid.get_visible() and xgrid.get_alpha() == pytest.approx(0.3)
    assert not ygrid.get_visible()


@pytest.mark.parametrize(
    "key,start", [("kl", "output KL divergence"), ("fit", "Fisher-weighted error")]
)
def test_sensitivity_figure_one_candidate_fills_the_row(monkeypatch, tmp_path, key, start):
    pytest.importorskip("matplotlib")
    seen = captured_figure(monkeypatch)
    tr.plot_sensitivity(
        SimpleNamespace(table={"g:a": {"w4a8": {key: 1.0}}, "g:b": {"w4a8": {key: 2.0}}}),
        tmp_path / "s.png",
        metric_key=key,
    )
    (ax,) = seen["fig"].axes
    assert [b.get_height() for b in ax.patches] == pytest.approx([0.8, 0.8])
    assert [b.get_y() + 0.4 for b in ax.patches] == pytest.approx([0.0, 1.0])
    assert list(ax.get_yticks()) == pytest.approx([0.0, 1.0])
    assert ax.get_xlabel().startswith(start)


def test_tradeoff_sweeps_eight_budgets_by_default():
    comp = Comp()
    out = tr.tradeoff(comp)
    assert len(out["greedy"]) == len(out["knapsack"]) == 8
    assert len(comp.allocated) == 2 * 8


def test_measured_latency_defaults_to_one_sample_and_thirty_rounds(monkeypatch):
    from faaq_onnx.runtime import timing

    comp = Comp()
    curve = tr.tradeoff(comp, points=2)
    comp.build = lambda plan, bias_corrected=True: ("m", None)
    comp.model_path, comp.float_proto = "/user/model.onnx", "FLOAT"
    comp.verify_inputs = {"x": __import__("numpy").zeros((3, 2), "float32")}
    seen = {}

    def fake_timing(models, feeds, ep="cpu", pairs=None):
        seen.update(batch=len(feeds["x"]), ep=ep, pairs=pairs)
        return [2.0] * len(models)

    monkeypatch.setattr(timing, "interleaved_median_ms", fake_timing)
    tr.measure_latency(comp, curve)
    assert seen == {"batch": 1, "ep": "cpu", "pairs": 30}
    assert curve["latency_how"].startswith("cpu, batch 1: median of 30 interleaved rounds")


def test_tradeoff_figure_of_one_uniform_scheme_takes_its_panels_from_it(monkeypatch, tmp_path):
    """The timing panels are there when the uniform points carry the timings (one is enough);
    with no uniform point at all, only size and BOPs."""
    pytest.importorskip("matplotlib")
    seen = captured_figure(monkeypatch)
    curve = hand_curve()
    curve["uniform"] = curve["uniform"][:1]
    tr.plot_tradeoff(curve, tmp_path / "t.png")
    assert len(seen["fig"].axes) == 2 * 4
    curve["uniform"] = []
    tr.plot_tradeoff(curve, tmp_path / "t.png")
    assert len(seen["fig"].axes) == 2 * 2
