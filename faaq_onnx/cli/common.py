"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from faaq_onnx.outputs import _jsonable, write_json_atomic


def write_json(path: str | Path, payload) -> None:
    """A JSON report, whole or absent; '-' writes it to standard output."""
    if str(path) == "-":
        click.echo(json.dumps(payload, indent=2, default=_jsonable))
        return
    write_json_atomic(path, payload)


def echo_warnings(warnings: list[str]) -> None:
    """What the run had to tell the user (a fallback taken, calibration that is not theirs):
    one `warning:` line each on standard error, so it is seen without --json."""
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
json_option = click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
                           help="Write the report as JSON here ('-': standard output).")
