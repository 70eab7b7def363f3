"""What every ``fieldloop`` command group shares: consoles, error reporting, the config.

Stage packages define their own click groups (e.g. ``ingestion.cli.fleet``) with these,
and the face (``fieldloop.cli``) registers them, so every command reports errors the same
way. It lives in the kernel, not in the face, because stages may import only the kernel.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from fieldloop.config import FieldloopConfig, load_config
from fieldloop.errors import FieldloopError


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # logs and pipes: wide enough that tables stay readable
        console.width = 120
    return console


console = make_console()
err_console = make_console(stderr=True)


class ErrorReportingGroup(click.Group):
    """Turns fieldloop's own errors into one clear red line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FieldloopError as e:
            if ctx.find_root().params.get("verbose"):
                err_console.print_exception()
            err_console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
            sys.exit(1)


def progress(message: str) -> None:
    """One indented line of progress under a step's heading."""
    console.print(f"  {message}")


def config_of(ctx: click.Context) -> FieldloopConfig:
    """The config, built once per invocation and validated before anything starts."""
    root = ctx.find_root()
    if "cfg" not in root.meta:
        root.meta["cfg"] = load_config()
    return root.meta["cfg"]
