"""Render the README's compact tables from the JSON the benchmarks wrote to benchmarks/out/.

    python benchmarks/readme_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def uniform() -> str:
    d = json.loads((OUT / "uniform_accuracy.json").read_text())
    rows = d["rows"]
    setters = ["minmax", "percentile", "mse", "entropy"]
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        f = next(r for r in rows if r["model"] == model and r["scheme"] == "float")
        lines.append(f"**{model}** — float: {100 * f['test (JPEG, 10000)']:.2f} % (test, 10,000 JPEG) / "
                     f"{100 * f['lossless (1017)']:.2f} % (lossless 1,017)\n")
        lines.append("| scheme | weight range | " + " | ".join(f"act {s}" for s in setters) + " |")
        lines.append("|---|---|" + "---|" * len(setters))
        for scheme in dict.fromkeys(r["scheme"] for r in rows if r["model"] == model and r["scheme"] != "float"):
            for wr in ("minmax", "mse"):
                cells = []
                for s in setters:
                    r = next((r for r in rows if r["model"] == model and r["scheme"] == scheme
                              and r["weight_range"] == wr and r["act_range"] == s), None)
                    cells.append("-" if r is None else f"{100 * r['test (JPEG, 10000)']:.2f} / {100 * r['lossless (1017)']:.2f}")
                lines.append(f"| {scheme.upper()} | {wr} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if (OUT / "uniform_accuracy.json").exists():
        print(uniform())
