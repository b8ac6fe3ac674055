"""Fixtures of the command-line tests."""

from __future__ import annotations

import re

import click
import pytest

from faaq_onnx.cli import main


@pytest.fixture
def option_help():
    """option_help(cmd) -> {long option: its metavar, help and default as `faaq cmd --help` shows}."""

    def read(cmd: str) -> dict[str, str]:
        command = main.get_command(click.Context(main), cmd)
        ctx = click.Context(command, info_name=cmd, max_content_width=10_000, terminal_width=10_000)
        out: dict[str, str] = {}
        current = None
        for line in command.get_help(ctx).splitlines():
            m = re.match(r"\s+(?:-\w, )?(--[\w-]+)(?:\s*/\s*--[\w-]+)?(.*)$", line)
            if m:
                current = m.group(1)
                out[current] = m.group(2)
            elif current and line.startswith("   "):  # help that did not fit beside the option
                out[current] += " " + line.strip()
        return out

    return read
