"""What every ``fieldloop`` command group shares: consoles, error reporting, the config.

Stage packages define their own click groups (e.g. ``ingestion.cli.fleet``) with these,
and the face (``fieldloop.cli``) registers them, so every command reports errors the same
way. It lives in the kernel, not in the face, because stages may import only the kernel.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from fieldloop.config import FieldloopConfig, load_config
from fieldloop.errors import FieldloopError


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # logs and pipes: wide enough that tables stay readable
        console.width = 120
    return console


console = make_console()
err_console = make_console(stderr=True)


# What a device's install (fieldloop[edge]) leaves out: commands that need them say so.
CLOUD_ONLY = frozenset(
    {
        "pyspark",
        "delta",
        "deltalake",
        "torch",
        "mlflow",
        "airflow",
        "numpy",
        "pandas",
        "pyarrow",
        "opendp",
        "sudachipy",
        "onnx",
        "onnxruntime",
        "boto3",
        "requests",
    }
)


class ErrorReportingGroup(click.Group):
    """Turns fieldloop's own errors into one clear red line and exit status 1.

    A command that needs a library a device's install lacks says which, and how to get it,
    instead of printing a traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FieldloopError as e:
            self._fail(ctx, str(e))
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in CLOUD_ONLY:
                raise
            command = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            self._fail(
                ctx,
                f"`{command}` needs {e.name}, which this install lacks (a device installs fieldloop[edge]); "
                "run it where the loop is installed, or pip install 'fieldloop[cloud]'",
            )

    @staticmethod
    def _fail(ctx: click.Context, message: str) -> None:
        if ctx.find_root().params.get("verbose"):
            err_console.print_exception()
        # the message is text, not markup: "fieldloop[edge]" or a path with brackets stays as it is
        err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        sys.exit(1)


@contextlib.contextmanager
def stdout_for_json(active: bool = True) -> Iterator[None]:
    """While inside, everything printed goes to stderr: Python's prints and the file descriptor
    itself, which a JVM started inside (Spark, Delta's VACUUM) and native libraries write to.
    After it, stdout carries the command's JSON alone."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def progress(message: str) -> None:
    """One indented line of progress under a step's heading."""
    console.print(f"  {message}")


def config_of(ctx: click.Context) -> FieldloopConfig:
    """The config, built once per invocation and validated before anything starts."""
    root = ctx.find_root()
    if "cfg" not in root.meta:
        root.meta["cfg"] = load_config()
    return root.meta["cfg"]
