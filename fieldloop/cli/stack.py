"""``fieldloop setup`` and ``fieldloop stack up|down|status``: the local stack on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.table import Table

from fieldloop.console import ErrorReportingGroup, config_of, console, progress

COMPONENTS = ("kafka", "mlflow", "airflow", "release")  # fieldloop.stack.components, kept light for --help


# setup ----------------------------------------------------------------------------
@click.command()
@click.pass_context
def setup(ctx: click.Context) -> None:
    """Resolve the JVM jars (Kafka broker, Spark connectors) with Maven. Idempotent."""
    from fieldloop.stack import Stack

    Stack(config_of(ctx)).setup(progress)
    console.print("[green]jars ready[/] in " + str(config_of(ctx).jars_dir))


# stack ----------------------------------------------------------------------------
@click.group(cls=ErrorReportingGroup)
def stack() -> None:
    """Start, stop and inspect the local stack (Kafka, MLflow, Airflow 3, the release server) on 127.0.0.1."""


_ONLY = click.option(
    "--only",
    default=None,
    metavar="NAMES",
    help="Comma-separated components to act on (kafka, mlflow, airflow, release); default all.",
)


def _only(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = set(names) - set(COMPONENTS)
    if unknown:
        raise click.BadParameter(f"unknown component(s) {', '.join(sorted(unknown))}; use {', '.join(COMPONENTS)}")
    return names


@stack.command("up")
@_ONLY
@click.pass_context
def stack_up(ctx: click.Context, only: str | None) -> None:
    """Start every component that is not running and wait until all are ready."""
    from fieldloop.stack import Stack

    t0 = time.monotonic()
    the_stack = Stack(config_of(ctx), _only(only))
    once = the_stack.up(progress)
    _print_status(the_stack.status())
    for line in once:
        console.print(f"[bold yellow]{line}[/]")
    console.print(f"stack up in {time.monotonic() - t0:.0f}s")


@stack.command("down")
@_ONLY
@click.pass_context
def stack_down(ctx: click.Context, only: str | None) -> None:
    """Stop, by pid, what `stack up` started."""
    from fieldloop.stack import Stack

    Stack(config_of(ctx), _only(only)).down(progress)


@stack.command("status")
@_ONLY
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable status.")
@click.pass_context
def stack_status(ctx: click.Context, only: str | None, as_json: bool) -> None:
    """Show each component: URL, pids and health. Exits 3 when something is not healthy."""
    from fieldloop.stack import Stack

    statuses = Stack(config_of(ctx), _only(only)).status()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "url": s.url,
                        "healthy": s.health.ok,
                        "detail": s.health.detail,
                        "processes": [{"name": p.name, "pid": p.pid, "state": p.state} for p in s.processes],
                    }
                    for s in statuses
                ],
                indent=2,
            )
        )
    else:
        _print_status(statuses)
    if not all(s.health.ok for s in statuses):
        sys.exit(3)


def _print_status(statuses: list[Any]) -> None:
    table = Table(title="fieldloop stack", show_lines=False)
    for col in ("component", "url", "pids", "health"):
        table.add_column(col)
    for s in statuses:
        pids = ", ".join(f"{p.name}={p.pid}" if p.state == "running" else f"{p.name}={p.state}" for p in s.processes)
        mark = "[green]healthy[/]" if s.health.ok else "[red]down[/]"
        table.add_row(s.name, s.url, pids, f"{mark} {s.health.detail}")
    console.print(table)
    for s in statuses:
        for note in s.notes:
            console.print(f"  {s.name}: {note}")
