"""`faaq inspect`: what faaq sees in a model (quantizer groups) and what ORT runs."""

from __future__ import annotations

import click

from faaq_onnx.cli.common import json_option, write_json


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--kernels", is_flag=True, help="Report which quantized nodes ORT fused into integer kernels."
)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim during canonicalization.")
@json_option
def command(model, kernels, no_simplify, json_path):
    """Print the quantizer groups of MODEL (or, with --kernels, ORT's kernel choice)."""
    from faaq_onnx.cli.common import input_files
    from faaq_onnx.outputs import check_destinations

    check_destinations({"--json": json_path}, input_files(model=model))
    if kernels:
        from faaq_onnx.runtime.kernels import format_kernel_report, kernel_report

        report = kernel_report(model)
        click.echo(format_kernel_report(report))
        if json_path:
            write_json(json_path, report)
        return
    from faaq_onnx.analysis.discover import discover_groups
    from faaq_onnx.model_io import load_model
    from faaq_onnx.passes.canonicalize import canonicalize

    ir_model, warnings = canonicalize(load_model(model), simplify=not no_simplify)
    qgraph = discover_groups(ir_model)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(
        f"{len(qgraph.groups)} quantizer groups, {len(qgraph.weights)} weight quantizers, "
        f"{len(qgraph.activations)} activation quantizers"
    )
    for g in qgraph.groups.values():
        click.echo(f"{g.name}  [{g.kind}]  MACs {g.macs:,}  params {g.weight_params:,}")
        click.echo(f"    ops:         {', '.join(g.ops)}")
        if g.weights:
            click.echo(f"    weights:     {', '.join(g.weights)}")
        for a in g.activations:
            aq = qgraph.activations[a]
            extra = f"  (replaces {', '.join(aq.droppable)})" if aq.droppable else ""
            click.echo(f"    activation:  {', '.join(aq.tensors)}{extra}")
    for s in qgraph.skipped:
        click.echo(f"not quantized: {s}")
    if json_path:
        write_json(json_path, qgraph.to_dict())
