"""`faaq profile`: latency, throughput, size and memory, float vs quantized, per EP and batch."""

from __future__ import annotations

from pathlib import Path

import click

from faaq_onnx.cli.common import at_least, input_files, json_option, write_json
from faaq_onnx.errors import FaaqError


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FaaqError(
            f"--{what} takes comma-separated integers such as 1,8; got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise FaaqError(f"--{what} needs positive integers, got {text!r}")
    return values


@click.command("profile")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--ep",
    default="cpu",
    show_default=True,
    help="Execution providers, comma-separated: cpu, cuda, auto (cuda if present, else cpu).",
)
@click.option("--batch", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--runs", type=int, default=30, show_default=True, help="Timed runs per measurement.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option(
    "--threads", type=int, default=None, help="ORT intra-op threads (default or 0: ORT's choice)."
)
@click.option(
    "--per-op",
    is_flag=True,
    help="Also profile per op type and node; share of time in integer kernels.",
)
@click.option("--top", type=int, default=15, show_default=True, help="Nodes listed with --per-op.")
@click.option(
    "--in-process",
    is_flag=True,
    help="Measure in this process (faster; peak RSS is then the whole process's).",
)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG: latency against model size."
)
@json_option
def command(
    models, ep, batch, runs, warmup, threads, per_op, top, in_process, plot_path, json_path
):
    """Time MODELS (the first is the baseline for speed-up) on each EP and batch size."""
    from faaq_onnx.cli.profile_report import format_profile
    from faaq_onnx.runtime.profile import profile_models

    eps = [e.strip() for e in ep.split(",") if e.strip()]
    if not eps:
        raise FaaqError("--ep needs at least one of cpu, cuda, auto")
    batches = _int_list(batch, "batch")
    if top < 1:
        raise FaaqError("--top must be at least 1")
    at_least("--runs", runs)
    at_least("--warmup", warmup, 0)
    if threads is not None and threads < 0:
        raise FaaqError(
            f"--threads must be at least 1 (or 0: ONNX Runtime's choice), got {threads}"
        )
    for m in models:
        if not Path(m).is_file():
            raise FaaqError(f"model file not found: {m}")
    from faaq_onnx.outputs import OutputSet, check_destinations

    check_destinations(
        {"--json": json_path, "--plot": plot_path}, input_files(**{f"model {m}": m for m in models})
    )

    def progress(line: str) -> None:
        click.echo(f"profiling {line} ...", err=True)

    report = profile_models(
        models,
        eps=eps,
        batches=batches,
        warmup=warmup,
        runs=runs,
        threads=threads,
        per_op=per_op,
        top=top,
        isolate=not in_process,
        progress=progress,
    )
    click.echo(format_profile(report))
    if json_path == "-":
        write_json(json_path, report)
    with OutputSet() as outs:  # both or neither
        if json_path and json_path != "-":
            outs.add_json(json_path, report, "--json")
        if plot_path:
            outs.add_file(plot_path, "--plot", lambda tmp: plot_latency_vs_size(report, tmp))
    for path in (json_path, plot_path):
        if path and path != "-":
            click.echo(f"wrote {path}")


def plot_latency_vs_size(report: dict, path: str | Path) -> Path:
    """One point per model x EP x batch: median latency against bytes on disk."""
    import matplotlib

    from faaq_onnx.outputs import savefig_atomic

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if r["status"] == "ok"]
    if not ok:
        raise FaaqError("nothing to plot: every measurement was skipped")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = sorted({(r["ep"], r["batch"]) for r in ok})
    markers = "os^Dv<>p*h"
    for i, (ep, b) in enumerate(series):
        pts = [r for r in ok if r["ep"] == ep and r["batch"] == b]
        ax.scatter(
            [r["model_bytes"] / 1e6 for r in pts],
            [r["median_ms"] for r in pts],
            marker=markers[i % len(markers)],
            label=f"{ep}, batch {b}",
        )
        for r in pts:
            ax.annotate(
                r["model_name"],
                (r["model_bytes"] / 1e6, r["median_ms"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("model size on disk (MB)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(
        f"onnxruntime {report['machine']['onnxruntime']}, {report['machine']['cpu_count']} CPUs"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savefig_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path
