"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from faaq_onnx.graph import save_atomic  # noqa: F401  (re-exported for commands)


def write_json(path: str | Path, payload) -> None:
    """Atomic JSON write: a report is whole or absent."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=_jsonable)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
json_option = click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
