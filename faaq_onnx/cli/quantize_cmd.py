"""`faaq quantize`: float ONNX in, QDQ ONNX with packed weights out."""

from __future__ import annotations

import sys

import click

from faaq_onnx.cli.common import human_bytes, json_option, seed_option, write_json
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.range_setters import ACTIVATION_METHODS, WEIGHT_METHODS


def quant_options(f):
    """The options every command that quantizes shares (quantize, analyze, eval --trials)."""
    opts = [
        click.option("--calib", required=True, help="Calibration data: .npz, folder of .npy or images, or 'random[:N]'."),
        click.option("--scheme", default=None, help="Uniform scheme such as w8a8, w4a8, w6a6, w8a16 (default w8a8)."),
        click.option("--weight-bits", type=int, default=None, help="Weight bits (with --act-bits, instead of --scheme)."),
        click.option("--act-bits", type=int, default=None, help="Activation bits (with --weight-bits)."),
        click.option("--granularity", type=click.Choice(["per-channel", "per-tensor", "block"]), default="per-channel",
                     show_default=True, help="Weight scale granularity."),
        click.option("--block-size", type=int, default=32, show_default=True, help="Block size for --granularity block."),
        click.option("--weight-symmetric/--weight-asymmetric", default=True, show_default=True),
        click.option("--act-symmetric/--act-asymmetric", default=False, show_default=True),
        click.option("--act-range", type=click.Choice(ACTIVATION_METHODS), default="mse", show_default=True,
                     help="Activation range setter."),
        click.option("--weight-range", type=click.Choice(WEIGHT_METHODS), default="mse", show_default=True,
                     help="Weight range setter."),
        click.option("--percentile", type=float, default=99.99, show_default=True),
        click.option("--calib-size", type=int, default=256, show_default=True,
                     help="Use at most this many calibration samples (a seeded subset)."),
        click.option("--batch-size", type=int, default=16, show_default=True),
        click.option("--no-simplify", is_flag=True, help="Skip onnxsim."),
        seed_option,
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def config_from_options(o: dict) -> QuantConfig:
    if o.get("scheme") and (o.get("weight_bits") or o.get("act_bits")):
        raise FaaqError("give either --scheme or --weight-bits/--act-bits, not both")
    if o.get("weight_bits") or o.get("act_bits"):
        if not (o.get("weight_bits") and o.get("act_bits")):
            raise FaaqError("--weight-bits and --act-bits go together")
        scheme = Candidate.parse(f"w{o['weight_bits']}a{o['act_bits']}")
    else:
        scheme = Candidate.parse(o.get("scheme") or "w8a8")
    return QuantConfig(
        scheme=scheme,
        weight_granularity=o["granularity"],
        block_size=o["block_size"],
        weight_symmetric=o["weight_symmetric"],
        act_symmetric=o["act_symmetric"],
        act_range=o["act_range"],
        weight_range=o["weight_range"],
        percentile=o["percentile"],
        calib_size=o["calib_size"] or None,
        batch_size=o["batch_size"],
        seed=o["seed"],
        simplify=not o["no_simplify"],
        progress=not o["quiet"] and sys.stderr.isatty(),
    )


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where the QDQ model goes.")
@quant_options
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), help="Apply a saved BitPlan JSON.")
@json_option
def command(model, output, plan_path, json_path, **opts):
    """Quantize MODEL and write a QDQ model that stock ONNX Runtime runs."""
    from faaq_onnx.pipeline import quantize
    from faaq_onnx.plan import BitPlan

    config = config_from_options(opts)
    plan = BitPlan.load(plan_path) if plan_path else None
    result = quantize(model, opts["calib"], output, config, plan=plan)
    if json_path:
        write_json(json_path, result.report)
    click.echo(summary_line(result.report))


def summary_line(report: dict) -> str:
    size = report["verify"]["size"]
    outs = report["verify"]["outputs"]
    first = next(iter(outs.values()))
    agree = f", top-1 agreement {100 * first['top1_agreement']:.1f}%" if "top1_agreement" in first else ""
    total = sum(report["timings_s"].values())
    return (
        f"{report['plan']['meta'].get('scheme', 'mixed')}: {report['groups']} groups -> {report.get('output', '(memory)')}\n"
        f"  weights {human_bytes(size['weight_float_bytes'])} -> {human_bytes(size['weight_stored_bytes'])} "
        f"({size['effective_weight_bits']:.2f} effective bits, {size['stored_weight_bits']:.2f} stored bits incl. scales); "
        f"model {human_bytes(size['float_model_bytes'])} -> {human_bytes(size['quant_model_bytes'])}\n"
        f"  output SQNR {first['sqnr_db']:.1f} dB{agree} on {report['verify']['samples']} calibration samples; "
        f"{total:.1f} s"
    )
