"""`faaq quantize`: float ONNX in, QDQ ONNX with packed weights out."""

from __future__ import annotations

import click

from faaq_onnx.cli.common import (
    at_least,
    cache_option,
    check_cache_dir,
    echo_warnings,
    input_files,
    json_option,
    preset_option,
    write_json,
)
from faaq_onnx.cli.options import (
    config_from_options,
    load_labeled_option,
    mixed_options,
    quant_options,
)
from faaq_onnx.cli.summary import summary_line
from faaq_onnx.errors import FaaqError


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where the QDQ model goes.",
)
@quant_options
@mixed_options
@click.option(
    "--plan", "plan_path", type=click.Path(dir_okay=False), help="Apply a saved BitPlan JSON."
)
@click.option(
    "--save-plan", type=click.Path(dir_okay=False), help="Write the chosen BitPlan as JSON."
)
@click.option(
    "--save-overrides",
    type=click.Path(dir_okay=False),
    help="Write the plan as ONNX Runtime TensorQuantOverrides JSON.",
)
@preset_option
@json_option
def command(
    model,
    output,
    plan_path,
    save_plan,
    save_overrides,
    json_path,
    budget,
    candidates,
    metric,
    allocator,
    labels_data,
    cache_dir,
    no_cache,
    ep,
    latency_batch,
    measure_latency,
    workers,
    ray_address,
    **opts,
):
    """Quantize MODEL and write a QDQ model that stock ONNX Runtime runs.

    With --budget (avg-bits=4, size-mb=0.2, bops=0.25[@w8a16], sqnr-db=30, max-drop=0.5)
    faaq measures each quantizer group's sensitivity and allocates bit widths per
    group from --candidates; without it, --scheme applies everywhere.
    """
    from faaq_onnx.analysis.budget import Budget
    from faaq_onnx.outputs import OutputSet, check_destinations
    from faaq_onnx.pipeline import quantize
    from faaq_onnx.plan import BitPlan

    # everything the user can get wrong is refused here, in one line, before any work
    at_least("--latency-batch", latency_batch)
    config = config_from_options(
        opts,
        candidates if budget else None,
        workers=workers,
        ray_address=ray_address,
        measure_latency=measure_latency,
    )
    if (workers > 1 or ray_address) and not budget:
        raise FaaqError(
            "--workers/--ray-address distribute the sensitivity sweep of a --budget run"
        )
    parsed = Budget.parse(budget) if budget else None
    check_destinations(
        {
            "-o": output,
            "--save-plan": save_plan,
            "--save-overrides": save_overrides,
            "--json": json_path,
        },
        input_files(
            model=model,
            **{"calibration data": opts["calib"], "plan": plan_path, "labeled data": labels_data},
        ),
    )
    if parsed is not None:
        check_cache_dir(cache_dir, no_cache)
    plan = BitPlan.load(plan_path) if plan_path else None
    labeled = load_labeled_option(labels_data, opts["seed"], config.preset)
    result = quantize(
        model,
        opts["calib"],
        None,
        config,
        plan=plan,
        budget=parsed,
        candidates=candidates,
        metric=metric,
        allocator=allocator,
        cache_dir=cache_option(cache_dir, no_cache),
        labeled=labeled,
        ep=ep,
        latency_batch=latency_batch,
    )
    # the outputs commit together: all written beside their targets, then renamed; if one
    # cannot be written, none is (the model included)
    with OutputSet() as outs:
        result.report["output_bytes"] = outs.add_model(output, result.model, "-o")
        result.report["output"] = str(output)
        if save_plan:
            outs.add_json(save_plan, result.plan.to_dict(), "--save-plan")
        if save_overrides:
            outs.add_json(
                save_overrides,
                result.plan.tensor_quant_overrides(result.qgraph, config),
                "--save-overrides",
            )
        if json_path and json_path != "-":
            outs.add_json(json_path, result.report, "--json")
    if json_path == "-":
        write_json(json_path, result.report)
    echo_warnings(result.report["warnings"])
    click.echo(summary_line(result.report), err=json_path == "-")
