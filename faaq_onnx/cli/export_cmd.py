"""`faaq export`: a reference model from the zoo, as ONNX."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("name", required=False)
@click.option("--weights", default=None, help="Checkpoint (torch state dict) to load; random init without it.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where the .onnx goes (default models/NAME.onnx).")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--batch", type=int, default=None, help="Fixed batch size (default: dynamic).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--list", "list_models", is_flag=True, help="List the zoo and exit.")
def command(name, weights, output, opset, batch, seed, list_models):
    """Export zoo model NAME (see --list) to ONNX."""
    from faaq_onnx import zoo
    from faaq_onnx.errors import FaaqError

    if list_models or not name:
        for entry in zoo.ZOO.values():
            click.echo(f"{entry.name:24} input {tuple(entry.input_shape)}  {entry.description}")
        return
    if name not in zoo.ZOO:
        raise FaaqError(f"unknown zoo model {name!r}: choose one of {', '.join(zoo.ZOO)}")
    out = output or f"models/{name}.onnx"
    path = zoo.export(name, out, weights=weights, opset=opset, batch=batch, seed=seed)
    click.echo(f"exported {name} -> {path}")
