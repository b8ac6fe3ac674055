"""`faaq` command line: one module per command, registered on one click group."""

from __future__ import annotations

import sys

import click

from faaq_onnx.errors import FaaqError


class _FaaqGroup(click.Group):
    """Turns FaaqError into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FaaqError as exc:
            click.echo(f"faaq: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_FaaqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="faaq-onnx")
def main() -> None:
    """faaq: mixed-precision post-training quantization of ONNX models."""


def _register() -> None:
    import importlib

    for name in (
        "quantize",
        "analyze",
        "eval",
        "reliability",
        "profile",
        "inspect",
        "export",
        "demo",
    ):
        try:
            mod = importlib.import_module(f"faaq_onnx.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name != f"faaq_onnx.cli.{name}_cmd":
                raise
            continue
        main.add_command(mod.command)


_register()
