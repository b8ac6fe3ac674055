"""`faaq analyze`: where the sensitive layers are, and what each budget buys."""

from __future__ import annotations

from pathlib import Path

import click

from faaq_onnx.cli.common import preset_option
from faaq_onnx.cli.options import config_from_options, load_labeled_option, quant_options


@click.command("analyze")
@click.argument("model", type=click.Path(dir_okay=False))
@quant_options
@click.option(
    "--candidates", default="practical", show_default=True, help="Kernels per group, or a preset."
)
@click.option(
    "--metrics", default="sqnr,kl,fit", show_default=True, help="Sensitivity metrics to measure."
)
@click.option(
    "--metric",
    type=click.Choice(["sqnr", "kl", "fit"]),
    default="sqnr",
    show_default=True,
    help="Metric the trade-off plans minimize.",
)
@click.option(
    "--points", type=int, default=8, show_default=True, help="Budgets on the trade-off curve."
)
@click.option(
    "--report", "report_dir", required=True, type=click.Path(file_okay=False), help="Output folder."
)
@click.option(
    "--latency/--no-latency",
    default=False,
    show_default=True,
    help="Also profile each candidate's kernels on --ep and plot SQNR against measured latency.",
)
@click.option(
    "--measure-latency",
    is_flag=True,
    help="Also write the model of every uniform and knapsack point and time it against the "
    "float model (interleaved, on --ep at --latency-batch): plotted as latency x float.",
)
@click.option("--ep", default="cpu", show_default=True, help="Execution provider for --latency.")
@click.option(
    "--latency-batch", type=int, default=1, show_default=True, help="Batch size for --latency."
)
@click.option(
    "--cache-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Where sensitivity tables and measured kernel costs are cached "
    "[default: $FAAQ_CACHE_DIR, else ~/.cache/faaq].",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the cache.")
@click.option(
    "--labels-data",
    default=None,
    help="Labeled .npz (x, y): every trade-off point's top-1 too (in the probe, as the emitted "
    "model computes it), plotted against size, BOPs and latency.",
)
@preset_option
def command(
    model,
    candidates,
    metrics,
    metric,
    points,
    report_dir,
    cache_dir,
    no_cache,
    latency,
    measure_latency,
    ep,
    latency_batch,
    labels_data,
    **opts,
):
    """Sensitivity table (JSON, Markdown, PNG) and the trade-off curve of MODEL."""
    from faaq_onnx.analysis import tradeoff as tradeoff_mod
    from faaq_onnx.analysis.candidates import parse_candidates
    from faaq_onnx.cli.common import (
        at_least,
        cache_option,
        check_cache_dir,
        echo_warnings,
        input_files,
    )
    from faaq_onnx.errors import FaaqError
    from faaq_onnx.outputs import OutputSet, check_destinations
    from faaq_onnx.passes.emit_qdq import needed_opset
    from faaq_onnx.pipeline import Compilation
    from faaq_onnx.plan import BitPlan

    # everything the user can get wrong is refused here, in one line, before any work
    at_least("--points", points)
    at_least("--latency-batch", latency_batch)
    config = config_from_options(opts)
    cands = parse_candidates(candidates)
    wanted = tuple(m.strip() for m in metrics.split(",") if m.strip())
    if any(m not in ("sqnr", "kl", "fit") for m in wanted) or metric not in wanted:
        raise FaaqError(f"--metrics must be among sqnr, kl, fit and include --metric {metric}")
    out = Path(report_dir)
    names = [
        "sensitivity.json",
        "sensitivity.md",
        "sensitivity.png",
        "tradeoff.json",
        "tradeoff.png",
    ]
    names += ["latency.json"] if latency else []
    check_destinations({"--report": out}, folders=("--report",))
    check_destinations(
        [("--report", out / n) for n in names],
        input_files(
            model=model, **{"calibration data": opts["calib"], "labeled data": labels_data}
        ),
    )
    labeled = load_labeled_option(labels_data, opts["seed"], config.preset)
    check_cache_dir(cache_dir, no_cache)
    cache = cache_option(cache_dir, no_cache)
    comp = Compilation(
        model,
        opts["calib"],
        config,
        target_opset=needed_opset(BitPlan({str(c): c for c in cands}), config, config.int2),
    )
    echo_warnings(comp.warnings)
    if metric == "fit":
        from faaq_onnx.interpreter import UnsupportedOp, check_supported

        try:
            check_supported(comp.float_proto)
        except UnsupportedOp as exc:
            raise FaaqError(
                f"--metric fit needs the torch interpreter, which cannot run this model: {exc}"
            ) from None
    table = comp.sensitivity(cands, wanted, cache)
    key = {"sqnr": "sqnr_db", "kl": "kl", "fit": "fit"}[metric]
    if latency:
        comp.latency_table(ep, latency_batch, cache)
    accuracy = comp.labeled_accuracy(labeled) if labeled is not None else None
    curve = tradeoff_mod.tradeoff(comp, metric, points, accuracy)
    if measure_latency:
        tradeoff_mod.measure_latency(comp, curve, ep, latency_batch)
    # the report commits together: every file written beside its place, then renamed; if one
    # cannot be written, none is (and a folder made for them is removed)
    with OutputSet() as outs:
        outs.add_json(out / "sensitivity.json", table.to_dict(), "--report")
        outs.add_text(out / "sensitivity.md", table.to_markdown(), "--report")
        if table.has(metric):
            outs.add_file(
                out / "sensitivity.png",
                "--report",
                lambda tmp: tradeoff_mod.plot_sensitivity(table, tmp, key),
            )
        if latency:
            outs.add_json(out / "latency.json", comp.latency.to_dict(), "--report")
        outs.add_json(out / "tradeoff.json", curve, "--report")
        outs.add_file(
            out / "tradeoff.png", "--report", lambda tmp: tradeoff_mod.plot_tradeoff(curve, tmp)
        )
    if "fit_unavailable" in table.meta:
        click.echo(f"note: fit metric unavailable: {table.meta['fit_unavailable']}", err=True)
    worst = table.ranking(None, metric)[:5]
    click.echo(
        f"{len(table.table)} groups x candidates {', '.join(map(str, cands))}: most sensitive ({metric}): "
        + ", ".join(worst)
    )

    def lat(p):
        top1 = f"  top-1 {100 * p['top1']:.2f} %" if "top1" in p else ""
        timed = (
            f"  measured {p['measured_latency_ratio']:.2f}x float"
            if "measured_latency_ratio" in p
            else ""
        )
        return top1 + (f"  latency {p['latency_ms']:.3f} ms" if "latency_ms" in p else "") + timed

    if "float_top1" in curve:
        click.echo(
            f"  float top-1 {100 * curve['float_top1']:.2f} % on {len(labeled[1])} labeled samples"
        )

    for p in curve["uniform"]:
        click.echo(
            f"  uniform {p['label']:8} size {p['model_bytes'] / 1e6:7.3f} MB  BOPs {p['relative_bops']:.3f}  "
            f"SQNR {p['sqnr_db']:6.2f} dB{lat(p)}"
        )
    for p in curve["knapsack"]:
        click.echo(
            f"  knapsack         size {p['model_bytes'] / 1e6:7.3f} MB  BOPs {p['relative_bops']:.3f}  "
            f"SQNR {p['sqnr_db']:6.2f} dB{lat(p)}"
        )
    click.echo(f"report written to {out}/ (sensitivity.json/.md/.png, tradeoff.json/.png)")
