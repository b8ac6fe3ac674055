"""Render the README's compact tables from the JSON the benchmarks wrote to benchmarks/out/.

python benchmarks/readme_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from common import paired_stats, seed_key

OUT = Path(__file__).resolve().parent / "out"


def uniform() -> str:
    d = json.loads((OUT / "uniform_accuracy.json").read_text())
    rows = d["rows"]
    setters = ["minmax", "percentile", "mse", "entropy"]
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        f = next(r for r in rows if r["model"] == model and r["scheme"] == "float")
        lines.append(
            f"**{model}** — float: {100 * f['test (JPEG, 10000)']:.2f} % (test, 10,000 JPEG) / "
            f"{100 * f['lossless (1017)']:.2f} % (lossless 1,017)\n"
        )
        lines.append("| scheme | weight range | " + " | ".join(f"act {s}" for s in setters) + " |")
        lines.append("|---|---|" + "---|" * len(setters))
        for scheme in dict.fromkeys(
            r["scheme"] for r in rows if r["model"] == model and r["scheme"] != "float"
        ):
            for wr in ("minmax", "mse"):
                cells = []
                for s in setters:
                    r = next(
                        (
                            r
                            for r in rows
                            if r["model"] == model
                            and r["scheme"] == scheme
                            and r["weight_range"] == wr
                            and r["act_range"] == s
                        ),
                        None,
                    )
                    cells.append(
                        "-"
                        if r is None
                        else f"{100 * r['test (JPEG, 10000)']:.2f} / {100 * r['lossless (1017)']:.2f}"
                    )
                lines.append(f"| {scheme.upper()} | {wr} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(r: dict | None, wall: bool = True) -> str:
    """top-1 test / lossless of one run, and its wall time (faaq's wall_s or AIMET's aimet_wall_s)."""
    if r is None:
        return "-"
    t = f"{100 * r['test']:.2f} / {100 * r['lossless']:.2f}"
    secs = r.get("wall_s", r.get("aimet_wall_s"))
    return t + (f" ({secs:.0f} s)" if wall and secs is not None else "")


def rounding() -> str:
    """Issue 8: --optimize modes x bit widths, and the other parts of bench_rounding_accuracy."""
    d = json.loads((OUT / "rounding_accuracy.json").read_text())
    modes = ["none", "bias-correction", "adaround", "brecq"]
    lines = []
    for model in ("resnet20-cifar10", "resnet56-cifar10"):
        if f"{model}|float" not in d:
            continue
        lines += [
            f"**{model}** — float {_cell(d[f'{model}|float'], wall=False)}; cells: top-1 test / lossless "
            "(wall time of the whole quantize run)",
            "",
            "| scheme | " + " | ".join(modes) + " |",
            "|---|" + "---|" * len(modes),
        ]
        for scheme in ("w4a8", "w4a4", "w3a8", "w2a8"):
            cells = [_cell(d.get(f"{model}|{scheme}|{m}")) for m in modes]
            if any(c != "-" for c in cells):
                lines.append(f"| {scheme.upper()} | " + " | ".join(cells) + " |")
        table = {f"{model}|{sc}|{m}" for sc in ("w4a8", "w4a4", "w3a8", "w2a8") for m in modes}
        # other calibration draws and range-setter rows have their own tables (draws(), ranges())
        extra = [
            (k.split("|", 1)[1], v)
            for k, v in d.items()
            if k.startswith(model + "|")
            and k not in table
            and k != f"{model}|float"
            and "|seed=" not in k
            and "|act=" not in k
        ]
        if extra:
            lines += [
                "",
                "| other runs | top-1 test / lossless (wall) | stored bits |",
                "|---|---|---|",
            ]
            lines += [
                f"| {name.replace('|', ', ')} | {_cell(v)} | {v.get('stored_bits', 0):.2f} |"
                for name, v in extra
            ]
        lines.append("")
    return "\n".join(lines)


def _means(rows: list[dict]) -> str:
    """Mean top-1 (test / lossless) of several runs."""
    return f"{100 * np.mean([r['test'] for r in rows]):.2f} / {100 * np.mean([r['lossless'] for r in rows]):.2f}"


def draws(model: str = "resnet56-cifar10", seeds: int = 10) -> str:
    """Issue 8: faaq vs AIMET AdaRound at W4A8 over calibration draws (seed N = faaq's --seed N,
    the same 256 images for both tools); AIMET rows from benchmarks/out/aimet_cifar[_seedN].json.
    One row per draw (ten columns would not read); a second table pairs each faaq setting with
    AIMET draw by draw: mean ± sample sd, paired t and how many draws faaq is ahead/tied/behind."""
    d = json.loads((OUT / "rounding_accuracy.json").read_text())
    stem = model.split("-")[0]

    def aimet(seed):
        f = OUT / ("aimet_cifar.json" if seed == 0 else f"aimet_cifar_seed{seed}.json")
        rows = json.loads(f.read_text())["rows"] if f.exists() else []
        return next(
            (r for r in rows if r["model"] == stem and r["variant"] == "w4a8_adaround"), None
        )

    def faaq(label, seed):
        return d.get(seed_key(f"{model}|w4a8|{label}", seed))

    tools = {
        "faaq AdaRound 2000 it": lambda s: faaq("adaround-2x-iters", s),
        "faaq AdaRound 2000 it, learned scales": lambda s: faaq("adaround-2x-iters+scales", s),
        "faaq AdaRound 2000 it, AIMET's grid": lambda s: faaq("adaround-2x-iters+aimet-grid", s),
        "faaq AdaRound 2000 it, inputs=weights": lambda s: faaq(
            "adaround-2x-iters+weights-inputs", s
        ),
        "faaq AdaRound 2000 it, inputs=mixed": lambda s: faaq("adaround-2x-iters+mixed-inputs", s),
        "faaq AdaRound 1000 it": lambda s: faaq("adaround", s),
        "AIMET AdaRound 1000 it": aimet,
    }
    got = {name: [get(s) for s in range(seeds)] for name, get in tools.items()}
    lines = ["| draw | " + " | ".join(got) + " |", "|---|" + "---|" * len(got)]
    for s in range(seeds):
        lines.append(f"| {s} | " + " | ".join(_cell(rows[s]) for rows in got.values()) + " |")
    means = []
    for rows in got.values():
        done = [r for r in rows if r is not None]
        means.append(f"{_means(done)} ({len(done)} draws)" if done else "-")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    ref = got.pop("AIMET AdaRound 1000 it")
    lines += [
        "",
        "| faaq − AIMET, draw by draw | test (pt) | lossless (images of 1,017) | test (pt): mean ± sd, t, "
        "ahead/tied/behind | lossless (images): mean ± sd, t, ahead/tied/behind |",
        "|---|---|---|---|---|",
    ]
    for name, rows in got.items():
        pairs = [(r, a) for r, a in zip(rows, ref) if r is not None and a is not None]
        if len(pairs) < 2:
            continue
        dt = [100 * (r["test"] - a["test"]) for r, a in pairs]
        dl = [round(1017 * (r["lossless"] - a["lossless"])) for r, a in pairs]
        lines.append(
            f"| {name} ({len(pairs)} draws) | "
            + ", ".join(f"{x:+.2f}" for x in dt)
            + " | "
            + ", ".join(f"{x:+d}" for x in dl)
            + f" | {_paired(dt, '.2f')} | {_paired(dl, '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def _paired(diffs: list[float], fmt: str) -> str:
    """Mean ± sample sd of paired differences, the paired t and the sign counts (ahead/tied/behind)."""
    p = paired_stats(diffs)
    return f"{p['mean']:+{fmt}} ± {p['sd']:{fmt}}, t = {p['t']:+.2f}, {p['pos']}/{p['zero']}/{p['neg']}"


def ranges(model: str = "resnet56-cifar10", iters: int = 2000, seeds: int = 3) -> str:
    """Issue 8, --part ranges: the same rounded weights emitted with each activation range setting."""
    d = json.loads((OUT / "rounding_accuracy.json").read_text())
    variants = ["act=mse", "act=minmax", "act=mse+reobserved", "act=minmax+reobserved"]
    names = ["MSE (default)", "min-max", "MSE, re-observed", "min-max, re-observed"]
    lines = ["| draw | " + " | ".join(names) + " |", "|---|" + "---|" * len(variants)]
    cols = {v: [] for v in variants}
    for seed in range(seeds):
        rows = [d.get(seed_key(f"{model}|w4a8|adaround-{iters}-it|{v}", seed)) for v in variants]
        if all(r is None for r in rows):
            continue
        for v, r in zip(variants, rows):
            if r is not None:
                cols[v].append(r)
        lines.append(f"| {seed} | " + " | ".join(_cell(r, wall=False) for r in rows) + " |")
    if len({len(c) for c in cols.values()}) == 1 and len(cols[variants[0]]) > 1:
        lines.append("| mean | " + " | ".join(_means(cols[v]) for v in variants) + " |")
    return "\n".join(lines) + "\n"


def fidelity(name: str = "fidelity_r56_w4a8") -> str:
    """Issue 8: how close each tool's models stay to the float model, means over draws and paired."""
    d = json.loads((OUT / f"{name}.json").read_text())
    sets = list(d["float"])
    head = " | ".join(f"{s}: top-1 / agree / KL / SQNR" for s in sets)
    lines = [f"| group (draws) | {head} |", "|---|" + "---|" * len(sets)]

    from fidelity_vs_float import METRICS, paired_cell

    def means(draws: dict, s: str) -> str:
        v = {m: np.mean([r[s][m] for r in draws.values()]) for m in METRICS}
        return f"{100 * v['top1']:.2f} / {100 * v['agreement']:.2f} / {v['kl']:.4f} / {v['logit_sqnr_db']:.2f} dB"

    lines.append(
        "| float | "
        + " | ".join(f"{100 * d['float'][s]['top1']:.2f} / 100 / 0 / -" for s in sets)
        + " |"
    )
    for label, g in d["groups"].items():
        lines.append(
            f"| {label} ({', '.join(g['draws'])}) | "
            + " | ".join(means(g["draws"], s) for s in sets)
            + " |"
        )
    lines += [
        "",
        "| paired, per draw | set | top-1 (pt) | agreement (pt) | KL | SQNR (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for pair, by_set in d["paired"].items():
        for s, by_m in by_set.items():
            cells = [paired_cell(by_m[m], m, "better in ") for m in METRICS]
            lines.append(f"| {pair} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def int8_kernels() -> str:
    """Issue 7: one compact latency table (ms, speed-up over float) and one of bytes / ops left float."""
    d = json.loads((OUT / "int8_kernels.json").read_text())
    cols = [
        "float",
        "ort_w8a8",
        "ort_qint4",
        "faaq_w8a8",
        "faaq_w4a8",
        "faaq_w4a8_dequant",
        "faaq_avg4",
        "faaq_avg3",
    ]
    names = [
        "float",
        "ORT W8A8",
        "ORT QInt4",
        "faaq W8A8",
        "faaq W4A8",
        "faaq W4A8 DQ(int4)",
        "faaq avg-bits=4",
        "faaq avg-bits=3",
    ]
    lines = [
        "| model | batch | " + " | ".join(names) + " | load |",
        "|---|---|" + "---|" * (len(cols) + 1),
    ]
    for m, i in d["models"].items():
        for b in ("1", "8"):
            lat = i["latency_ms"][b]
            cells = [
                f"{lat[c]:.2f}" + ("" if c == "float" else f" ({lat['float'] / lat[c]:.2f}×)")
                for c in cols
            ]
            lines.append(
                f"| {m} | {b} | " + " | ".join(cells) + f" | {i['loadavg_timing'][0]:.1f} |"
            )
    lines += ["", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(cols)]
    for m, i in d["models"].items():
        cells = [
            f"{i['bytes'][c] / 1e6:.2f} MB"
            + ("" if c == "float" else f", {i['ops_left_float'][c]} float")
            for c in cols
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Plans chosen (groups per candidate): "
        + "; ".join(
            f"{m}: avg-bits=4 {i['faaq_avg4']['plan']}, avg-bits=3 {i['faaq_avg3']['plan']}"
            for m, i in d["models"].items()
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if (OUT / "uniform_accuracy.json").exists():
        print(uniform())
    if (OUT / "rounding_accuracy.json").exists():
        print(rounding())
        print(draws())
        print(ranges())
    if (OUT / "fidelity_r56_w4a8.json").exists():
        print(fidelity())
    if (OUT / "int8_kernels.json").exists():
        print(int8_kernels())
