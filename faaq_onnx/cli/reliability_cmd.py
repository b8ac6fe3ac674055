"""`faaq reliability`: seed 004's protocol, accuracy over many calibration draws."""

from __future__ import annotations

from pathlib import Path

import click

from faaq_onnx.cli.options import config_from_options, quant_options


@click.command("reliability")
@click.argument("model", type=click.Path(dir_okay=False))
@quant_options
@click.option(
    "--data", required=True, help="Labeled test set (.npz with x, y; or images with --labels)."
)
@click.option("--labels", default=None, help="Labels file for an image-folder test set.")
@click.option(
    "--preset", default=None, help="Preprocessing preset of the calibration pool and the test set."
)
@click.option(
    "--trials",
    type=int,
    default=10,
    show_default=True,
    help="Calibration draws (one quantization each).",
)
@click.option(
    "--noise-share",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of each calibration draw replaced by noise images (seed 004 B.5).",
)
@click.option(
    "--dominant-class",
    type=int,
    default=None,
    help="Make this class DOMINANT_SHARE of each draw (class imbalance, seed 004 B.6).",
)
@click.option("--dominant-share", type=float, default=0.5, show_default=True)
@click.option(
    "--test-limit", type=int, default=None, help="Evaluate on a seeded subset of the test set."
)
@click.option(
    "--report",
    "report_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for reliability.json, reliability.md and the per-class box plot.",
)
def command(
    model,
    data,
    labels,
    preset,
    trials,
    noise_share,
    dominant_class,
    dominant_share,
    test_limit,
    report_dir,
    **opts,
):
    """Re-quantize MODEL with TRIALS calibration draws from --calib (a labeled pool) and report
    overall and per-class top-1 on --data as mean ± std, the worst class and its drop."""
    import onnx

    from faaq_onnx import data as data_mod
    from faaq_onnx.cli.common import at_least, input_files
    from faaq_onnx.errors import FaaqError
    from faaq_onnx.outputs import OutputSet, check_destinations
    from faaq_onnx.reliability import (
        CalibrationDraw,
        plot_drops,
        run_trials,
        to_markdown,
    )

    at_least("--trials", trials, 2)
    at_least("--test-limit", test_limit)
    config = config_from_options(opts)
    draw = CalibrationDraw(
        config.calib_size or 256,
        noise_share,
        dominant_class,
        dominant_share,
        held_out=min(config.verify_samples, 64),
    )
    out = Path(report_dir)
    check_destinations({"--report": out}, folders=("--report",))
    check_destinations(
        [
            ("--report", out / n)
            for n in ("reliability.json", "reliability.md", "per_class_drops.png")
        ],
        input_files(
            model=model,
            **{"calibration data": opts["calib"], "labeled data": data, "labels": labels},
        ),
    )
    pool = data_mod.load_labeled(
        data_mod.resolve_data_path(opts["calib"]), preset=preset, seed=opts["seed"]
    )
    kwargs = {"labels": labels} if labels else {}
    test = data_mod.load_labeled(
        data_mod.resolve_data_path(data),
        preset=preset,
        limit=test_limit,
        seed=opts["seed"],
        **kwargs,
    )
    graph_inputs = [i.name for i in onnx.load(model, load_external_data=False).graph.input]
    if len(graph_inputs) < 1:
        raise FaaqError(f"{model} has no inputs")

    def progress(i, n, top1):
        click.echo(f"  draw {i}/{n}: top-1 {100 * top1:.2f}%", err=True)

    summary = run_trials(model, pool, test, config, trials, draw, graph_inputs[0], progress)
    md = to_markdown(summary)
    with OutputSet() as outs:  # the three files, or none
        outs.add_json(out / "reliability.json", summary, "--report")
        outs.add_text(out / "reliability.md", md, "--report")
        outs.add_file(out / "per_class_drops.png", "--report", lambda tmp: plot_drops(summary, tmp))
    click.echo(md + f"report written to {out}/ (reliability.json/.md, per_class_drops.png)")
