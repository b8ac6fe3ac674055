"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from faaq_onnx.errors import FaaqError
from faaq_onnx.outputs import _jsonable, check_writable, write_json_atomic


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


seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for every random choice."
)
json_option = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the report as JSON here ('-': standard output).",
)
preset_option = click.option(
    "--preset",
    default=None,
    help="Preprocessing of raw images in the calibration data (a folder of images, or uint8 images in an .npz): "
    "cifar10, imagenet, imagenet-inception, digits, or none (decoded, HWC -> CHW, nothing else) "
    "[default: guessed from the model's input and the images].",
)


def at_least(option: str, value, minimum: int = 1) -> None:
    """One line naming the option unless `value` (an int option, None: not given) is >= minimum."""
    if value is not None and value < minimum:
        raise FaaqError(f"{option} must be at least {minimum}, got {value}")


def check_cache_dir(cache_dir, no_cache: bool) -> None:
    """The sensitivity/latency cache is written during the run: its folder is checked up front."""
    if no_cache:
        return
    if cache_dir:
        check_writable(cache_dir, "--cache-dir", folder=True)
        return
    from faaq_onnx.analysis.sensitivity import default_cache_dir

    try:
        check_writable(default_cache_dir(), "the sensitivity cache", folder=True)
    except FaaqError as exc:
        raise FaaqError(f"{exc} (pass --cache-dir DIR or --no-cache)") from None


def cache_option(cache_dir, no_cache: bool):
    """What the pipeline takes: False (no cache), a Path, or None (the default folder)."""
    return False if no_cache else (Path(cache_dir) if cache_dir else None)


def input_files(**named) -> dict[str, Path]:
    """The files a command reads, by label, for check_destinations (data paths as the loaders find them)."""
    out = {}
    for label, path in named.items():
        if not path:
            continue
        p = Path(path)
        if not p.exists() and label in ("calibration data", "labeled data"):
            from faaq_onnx.data import resolve_data_path

            try:
                p = resolve_data_path(path)
            except FaaqError:
                continue  # 'random:N', 'bn-stats', or missing: the loader says so
        if p.is_file():
            out[label] = p
    return out
