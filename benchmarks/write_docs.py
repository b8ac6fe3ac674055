"""Regenerate the measured tables of docs/results/*.md from what the benchmarks wrote to
benchmarks/out/ (JSON, and the Markdown each benchmark renders from its JSON).

    python benchmarks/write_docs.py           # rewrite the generated blocks in place
    python benchmarks/write_docs.py --check   # exit 1 if a page is out of date (writes nothing)
    python benchmarks/write_docs.py --list    # which block comes from which file

A results page keeps its prose by hand; only the text between

    <!-- BEGIN generated: NAME (benchmarks/write_docs.py) -->
    <!-- END generated: NAME -->

is replaced, by the block NAME below. Each block starts with where its numbers come from:
the file, the machine, the versions, the load and the command, as far as the JSON records
them (what the JSON does not record is said, not guessed). A page without such a block says
that it is hand-written and why (no JSON was kept for that run).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
DOCS = ROOT / "docs" / "results"

# readme_tables (and fidelity_vs_float, which it imports) live beside this script and
# import faaq_onnx: both directories go on the path.
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

BEGIN = re.compile(r"<!-- BEGIN generated: ([\w-]+) \(benchmarks/write_docs\.py\) -->\n")


def _load(name: str) -> dict:
    return json.loads((OUT / name).read_text())


def _machine_line(m: dict | None) -> str:
    if not m:
        return "machine: not recorded in the JSON"
    return (
        f"machine: {m.get('machine', '?')}, {m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}, "
        f"onnxruntime {m.get('onnxruntime', '?')}; file last written {m.get('date', '?')}"
    )


def _load_text(before=None, after=None) -> str:
    def f(v):
        return "/".join(f"{x:.2f}" for x in v) if isinstance(v, list) else f"{v:.2f}"

    parts = []
    if before is not None:
        parts.append(f"before {f(before)}")
    if after is not None:
        parts.append(f"after {f(after)}")
    return "load average (1/5/15 min) " + ", ".join(parts) if parts else ""


def provenance(
    source: str, *, machine=None, load: str = "", command: str = "", extra: str = ""
) -> str:
    """The lines that say where a block's numbers come from."""
    lines = [f"*Generated from `benchmarks/out/{source}`.* {_machine_line(machine)}."]
    if load:
        lines.append(f"Load: {load}.")
    if command:
        cmd, _, note = command.partition(" (")
        lines.append(f"Command: `{cmd}`" + (f" ({note}" if note else "") + ".")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n\n"


def md_section(name: str, stop: str | None = None, start: str | None = None) -> str:
    """The benchmark's own Markdown rendering of its JSON (from `start`, up to `stop`), headings
    demoted so they sit under the page's own."""
    text = (OUT / name).read_text()
    if start is not None and start in text:
        text = text[text.index(start) :]
    if stop is not None and stop in text:
        text = text[: text.index(stop)]
    out = []
    for line in text.rstrip().splitlines():
        if line.startswith("#"):
            line = "####" + line.lstrip("#")
        out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# blocks


def foreign_graphs() -> str:
    d = _load("foreign_graphs.json")
    head = provenance(
        "foreign_graphs.json",
        machine=d.get("machine"),
        load=_load_text(d.get("loadavg_before"), d.get("loadavg_after")),
        command=d.get("command", ""),
        extra=f"faaq as committed at {d.get('snapshot', '?')}; W4A8 "
        + (f"with `{d['w4a8_args']}`; " if d.get("w4a8_args") else "with its defaults; ")
        + f"{d.get('calib', '?')} calibration samples, {d.get('eval', '?')} held out, "
        f"{d.get('rounds', '?')} latency rounds. Per-model details: `benchmarks/out/foreign_graphs.md`.",
    )
    body = md_section("foreign_graphs.md", start="| model |", stop="## Per model")
    return head + body


def gptq_conv() -> str:
    # gptq_conv.md already lists every run with its machine, load, git commit and command.
    return (
        "*Generated from `benchmarks/out/gptq_conv.md` (rendered from `gptq_conv.json`).*\n\n"
        + md_section("gptq_conv.md")
    )


def int8_kernels() -> str:
    import readme_tables

    d = _load("int8_kernels.json")
    head = provenance(
        "int8_kernels.json",
        machine=d.get("machine"),
        load=_load_text(d.get("loadavg_before"), d.get("loadavg_after"))
        + "; per model in the last column",
        command="python benchmarks/bench_int8_kernels.py --data-dir ../shared/data --work /tmp/k --phase time --rounds 40 "
        "(ResNet-56: `--rounds 100 --keep-others --models resnet56-cifar10`; as stated with the run, the JSON records "
        f"rounds = {d.get('rounds')})",
    )
    return head + readme_tables.int8_kernels()


def latency_budget() -> str:
    d = _load("latency_budget.json")
    head = provenance(
        "latency_budget.json",
        machine=d.get("machine"),
        load=_load_text(d.get("loadavg_before"), d.get("loadavg_after")),
        command="python benchmarks/bench_latency_budget.py --data-dir ../shared/data (as stated with the run)",
    )
    return head + md_section("latency_budget.md", start="| model |")


def _rounding_head() -> str:
    d = _load("rounding_accuracy.json")
    loads = [v["loadavg"] for k, v in d.items() if isinstance(v, dict) and "loadavg" in v]
    load = f"1-minute load average at the end of each run, {min(loads):.1f}–{max(loads):.1f} (per row in the JSON)"
    return provenance(
        "rounding_accuracy.json",
        machine=d.get("_machine"),
        load=load,
        command="python benchmarks/bench_rounding_accuracy.py --data-dir ../shared/data (and `--part mixed|datafree|tune|inputs|ranges` "
        "for the other rows; rendered by `benchmarks/readme_tables.py`)",
    )


def rounding() -> str:
    import readme_tables

    return _rounding_head() + readme_tables.rounding()


def draws() -> str:
    import readme_tables

    a = _load("aimet_cifar_seed1.json")
    return (
        _rounding_head()
        + f"AIMET columns: `benchmarks/out/aimet_cifar*.json` (aimet-onnx {a['aimet']['versions'].get('aimet-onnx')}, "
        f"torch {a['aimet']['versions'].get('torch')}).\n\n" + readme_tables.draws()
    )


def ranges() -> str:
    import readme_tables

    return _rounding_head() + readme_tables.ranges()


def fidelity() -> str:
    import readme_tables

    d = _load("fidelity_r56_w4a8.json")
    head = provenance(
        "fidelity_r56_w4a8.json",
        machine=d.get("machine"),
        command="python benchmarks/fidelity_vs_float.py --data-dir ../shared/data --group NAME=MODELS… (groups as listed on this page)",
        extra="Per draw: `benchmarks/out/fidelity_r56_w4a8.md`.",
    )
    return head + readme_tables.fidelity()


def aimet() -> str:
    d = _load("aimet_cifar.json")
    a = d["aimet"]
    v = a.get("versions", {})
    head = provenance(
        "aimet_cifar.json",
        machine=d.get("machine"),
        load=_load_text(a.get("load_at_start")) + " at AIMET's start",
        command="bash benchmarks/peers/run_aimet.sh",
        extra=f"AIMET run {a.get('date')}: aimet-onnx {v.get('aimet-onnx')}, torch {v.get('torch')}, "
        f"onnxruntime {v.get('onnxruntime')}, onnx {v.get('onnx')}; {a.get('adaround_iters')} AdaRound iterations.",
    )
    return head + md_section("aimet_cifar.md")


def screen_fisher() -> str:
    d = _load("screen_fisher_adaround.json")
    lines = [
        "| run | seconds | test: top-1 / agree / KL / SQNR | lossless: top-1 / agree / KL / SQNR |",
        "|---|---|---|---|",
    ]
    for k, r in d.items():
        cells = []
        for s in ("test", "lossless"):
            m = r[s]
            cells.append(
                f"{100 * m['top1']:.2f} / {100 * m['agreement']:.2f} / {m['kl']:.4f} / {m['logit_sqnr_db']:.2f} dB"
            )
        lines.append(f"| {k} | {r['seconds']:.0f} | " + " | ".join(cells) + " |")
    head = provenance(
        "screen_fisher_adaround.json",
        command="python benchmarks/screen_fisher_adaround.py --seed N",
        extra="The JSON records no machine or load: the runs were made on the 2-core machine, two side by side.",
    )
    return head + "\n".join(lines) + "\n"


def efficientnet() -> str:
    d = _load("efficientnet_quant.json")
    head = provenance(
        "efficientnet_quant.json",
        machine=d.get("machine"),
        load="per row in the JSON (`loadavg`)",
        command="python benchmarks/bench_efficientnet_quant.py --data-dir ../shared/data --iters 200 --optimize-samples 64 "
        "(and `--iters 1000 --optimize-samples 256 --skip …` for the 1000-iteration row)",
    )
    return (
        head
        + md_section("efficientnet_quant.md")
        + "\nFloat model check (`benchmarks/out/efficientnet_float.md`):\n\n"
        + md_section("efficientnet_float.md")
    )


def big_model() -> str:
    d = _load("big_model.json")
    cmds = "\n".join(f"    {d[s]['cmd']}" for s in ("w8a8", "w4") if s in d)
    head = provenance(
        "big_model.json",
        machine=d.get("machine"),
        command="python benchmarks/bench_big_model.py --work /tmp/faaq-big",
        extra="Each `faaq quantize` ran as its own process under `/usr/bin/time -v`:\n\n"
        + cmds
        + "\n",
    )
    return head + md_section("big_model.md")


def compile_time() -> str:
    d = _load("compile_time.json")
    head = provenance(
        "compile_time.json",
        machine=d.get("machine"),
        load=_load_text(d.get("loadavg_before"), d.get("loadavg_after")),
        command="python benchmarks/bench_compile_time.py --data-dir ../shared/data --repeats 3 --parts ratios "
        "(and `--parts minilm6,rss,ray`; `--parts adaround18 --adaround-iters 200`)",
    )
    return head + md_section("compile_time.md", start="| job |")


def minilm_weight_only() -> str:
    d = _load("minilm_weight_only.json")
    head = provenance(
        "minilm_weight_only.json",
        machine=d.get("machine"),
        command="python benchmarks/bench_minilm_weight_only.py --data-dir ../shared/data",
        extra="The JSON records no load average.",
    )
    return head + md_section("minilm_weight_only.md")


def _reliability(scheme: str) -> str:
    d = _load(f"reliability_r20_{scheme}/reliability.json")
    secs = sum(r.get("seconds", 0) for r in d.get("runs", []))
    head = provenance(
        f"reliability_r20_{scheme}/reliability.json",
        command=f"faaq reliability r20.onnx --calib cifar10/cifar10_train5000.npz --data cifar10/cifar10_test.npz "
        f"--scheme {scheme} --trials {d.get('trials')} --report benchmarks/out/reliability_r20_{scheme}",
        extra=f"The report records no machine or load; its {len(d.get('runs', []))} trials took {secs:.0f} s in all. "
        f"Box plot: `benchmarks/out/reliability_r20_{scheme}/per_class_drops.png`.",
    )
    return head + md_section(f"reliability_r20_{scheme}/reliability.md")


def reliability_w6a6() -> str:
    return _reliability("w6a6")


def reliability_w4a4() -> str:
    return _reliability("w4a4")


def mutation() -> str:
    d = _load("mutation.json")
    head = provenance(
        "mutation.json",
        machine=d.get("machine"),
        command="python benchmarks/mutation_score.py --per-module 8 (then `--rerun-survivors`)",
    )
    return head + md_section("mutation.md")


def mutation_score() -> str:
    d = _load("mutation_score.json")
    head = provenance(
        "mutation_score.json",
        machine=d.get("machine"),
        command=d.get("command", ""),
        extra=f"Commit {str(d.get('commit', '?'))[:12]}; replay: `{d.get('replay_command', '')}`. "
        "Per module and the surviving mutants: `benchmarks/out/mutation_score.md`.",
    )
    return head + md_section("mutation_score.md", start="**", stop="## Per module")


BLOCKS = {
    "foreign-graphs": (foreign_graphs, "foreign_graphs.json, foreign_graphs.md"),
    "gptq-conv": (gptq_conv, "gptq_conv.md"),
    "int8-kernels": (int8_kernels, "int8_kernels.json"),
    "latency-budget": (latency_budget, "latency_budget.json, latency_budget.md"),
    "rounding": (rounding, "rounding_accuracy.json"),
    "draws": (draws, "rounding_accuracy.json, aimet_cifar*.json"),
    "ranges": (ranges, "rounding_accuracy.json"),
    "fidelity": (fidelity, "fidelity_r56_w4a8.json"),
    "aimet": (aimet, "aimet_cifar.json, aimet_cifar.md"),
    "screen-fisher": (screen_fisher, "screen_fisher_adaround.json"),
    "efficientnet": (
        efficientnet,
        "efficientnet_quant.json, efficientnet_quant.md, efficientnet_float.md",
    ),
    "big-model": (big_model, "big_model.json, big_model.md"),
    "compile-time": (compile_time, "compile_time.json, compile_time.md"),
    "minilm-weight-only": (minilm_weight_only, "minilm_weight_only.json, minilm_weight_only.md"),
    "reliability-w6a6": (reliability_w6a6, "reliability_r20_w6a6/"),
    "reliability-w4a4": (reliability_w4a4, "reliability_r20_w4a4/"),
    "mutation": (mutation, "mutation.json, mutation.md"),
    "mutation-score": (mutation_score, "mutation_score.json, mutation_score.md"),
}


def render(text: str) -> str:
    """`text` with every generated block replaced by what the benchmarks' output gives now."""
    out, pos = [], 0
    for m in BEGIN.finditer(text):
        name = m.group(1)
        end_marker = f"<!-- END generated: {name} -->"
        end = text.index(end_marker, m.end())
        if name not in BLOCKS:
            raise SystemExit(f"unknown generated block {name!r}")
        out.append(text[pos : m.end()])
        out.append("\n" + BLOCKS[name][0]().strip("\n") + "\n\n")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a page is out of date")
    ap.add_argument("--list", action="store_true", help="list the blocks and their sources")
    ap.add_argument("--docs", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    if args.list:
        for name, (_, src) in BLOCKS.items():
            print(f"{name}: benchmarks/out/{src}")
        return 0
    stale = []
    for page in sorted(args.docs.glob("*.md")):
        old = page.read_text()
        new = render(old)
        if new != old:
            stale.append(page)
            if not args.check:
                page.write_text(new)
    for page in stale:
        print(("out of date: " if args.check else "rewrote ") + str(page.relative_to(ROOT)))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
