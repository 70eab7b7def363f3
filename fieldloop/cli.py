"""The ``fieldloop`` command line: the operator's handle on the loop.

Each stage adds a command group here (``fleet``, ``ingest``, ``refine``, ``train``, ...).
Heavy imports stay inside commands so ``fieldloop --help`` is instant. Domain errors
become one red line and exit status 1; nothing prints a traceback unless ``--verbose``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import click
from rich.table import Table

from fieldloop.console import ErrorReportingGroup, config_of, console

_Group = ErrorReportingGroup
_cfg = config_of


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress and show tracebacks.")
@click.version_option(package_name="fieldloop")
def main(verbose: bool) -> None:
    """fieldloop: the edge-to-cloud data loop for physical AI.

    Devices stream to Kafka; Spark refines into Delta tables kept in Japan; Airflow
    trains models registered in MLflow; guarded weights roll out to the fleets.
    Configure with FIELDLOOP_* variables or fieldloop.toml (see `fieldloop config show`).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # kafka-python logs every refused connection while a broker starts; health checks
        # report the outcome in one line instead.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _progress(message: str) -> None:
    console.print(f"  {message}")


# setup ----------------------------------------------------------------------------
@main.command()
@click.pass_context
def setup(ctx: click.Context) -> None:
    """Resolve the JVM jars (Kafka broker, Spark connectors) with Maven. Idempotent."""
    from fieldloop.stack import Stack

    Stack(_cfg(ctx)).setup(_progress)
    console.print("[green]jars ready[/] in " + str(_cfg(ctx).jars_dir))


# stack ----------------------------------------------------------------------------
@main.group(cls=_Group)
def stack() -> None:
    """Start, stop and inspect the local stack (Kafka, MLflow, Airflow 3) on 127.0.0.1."""


_ONLY = click.option(
    "--only",
    default=None,
    metavar="NAMES",
    help="Comma-separated components to act on (kafka, mlflow, airflow); default all.",
)


def _only(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = set(names) - {"kafka", "mlflow", "airflow"}
    if unknown:
        raise click.BadParameter(f"unknown component(s) {', '.join(sorted(unknown))}; use kafka, mlflow, airflow")
    return names


@stack.command("up")
@_ONLY
@click.pass_context
def stack_up(ctx: click.Context, only: str | None) -> None:
    """Start every component that is not running and wait until all are ready."""
    from fieldloop.stack import Stack

    t0 = time.monotonic()
    the_stack = Stack(_cfg(ctx), _only(only))
    once = the_stack.up(_progress)
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

    Stack(_cfg(ctx), _only(only)).down(_progress)


@stack.command("status")
@_ONLY
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable status.")
@click.pass_context
def stack_status(ctx: click.Context, only: str | None, as_json: bool) -> None:
    """Show each component: URL, pids and health. Exits 3 when something is not healthy."""
    from fieldloop.stack import Stack

    statuses = Stack(_cfg(ctx), _only(only)).status()
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


# config ---------------------------------------------------------------------------
@main.group(cls=_Group)
def config() -> None:
    """Inspect the effective configuration and the data contracts."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective config (defaults < fieldloop.toml < FIELDLOOP_*), secrets redacted."""
    data = _cfg(ctx).redacted()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_toml(data)


def _print_toml(data: dict[str, Any], prefix: str = "") -> None:
    nested = {k: v for k, v in data.items() if isinstance(v, dict) and k != "conf"}
    for key, value in data.items():
        if key not in nested:
            click.echo(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    for key, value in nested.items():
        click.echo(f"\n[{prefix}{key}]")
        _print_toml(value, f"{prefix}{key}.")


@config.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the config and every data contract, and check the lake's residency."""
    from fieldloop.contracts import load_contracts
    from fieldloop.residency import ResidencyGuard

    cfg = _cfg(ctx)
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    residency = ResidencyGuard.from_config(cfg).check(cfg.lake)
    table = Table(title=f"{len(contracts)} data contracts")
    for col in ("id", "class", "tenant", "topic", "uses", "retention"):
        table.add_column(col)
    for c in contracts.values():
        table.add_row(
            c.id,
            str(c.data_class),
            c.tenant or "-",
            c.topic,
            ",".join(sorted(c.allowed_uses)) or "-",
            f"{c.retention_days} d",
        )
    console.print(table)
    console.print(f"lake {residency.location} is in {residency.region} ({residency.basis}): [green]allowed[/]")


# topics / ingest / tables -----------------------------------------------------------
@main.group(cls=_Group)
def topics() -> None:
    """Kafka topics, one per data contract (none for secret streams)."""


@topics.command("apply")
@click.option("--partitions", default=3, show_default=True, help="Partitions of newly created topics.")
@click.pass_context
def topics_apply(ctx: click.Context, partitions: int) -> None:
    """Create missing topics and align retention with the contracts. Idempotent."""
    from ingestion.topics import apply_configured_topics

    for change in apply_configured_topics(_cfg(ctx), partitions):
        colour = {"created": "green", "retention-updated": "yellow", "partitions-differ": "red"}.get(
            change.action, "dim"
        )
        console.print(f"  [{colour}]{change.action:<18}[/] {change.topic} {change.detail}")


@main.command()
@click.option("--follow", is_flag=True, help="Run continuously (micro-batches every --trigger-seconds) until Ctrl-C.")
@click.option("--trigger-seconds", default=5, show_default=True, help="Micro-batch interval with --follow (s).")
@click.option("--max-offsets", default=200_000, show_default=True, help="Records per micro-batch at most.")
@click.pass_context
def ingest(ctx: click.Context, follow: bool, trigger_seconds: int, max_offsets: int) -> None:
    """Land Kafka records in bronze Delta exactly once; invalid ones go to quarantine.

    Default is --available-now: drain what Kafka holds, then stop (for schedules).
    """
    from fieldloop.contracts import load_contracts
    from fieldloop.residency import ResidencyGuard
    from fieldloop.spark import spark_session
    from fieldloop.wire import default_registry
    from ingestion.bronze import BronzeJob
    from ingestion.topics import apply_configured_topics

    cfg = _cfg(ctx)
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    guard = ResidencyGuard.from_config(cfg)
    apply_configured_topics(cfg)
    with console.status("starting Spark ..."):
        spark = spark_session(cfg, "fieldloop-ingest")
    job = BronzeJob(cfg, spark, contracts, default_registry(), guard, max_offsets_per_trigger=max_offsets)
    query = job.start(available_now=not follow, trigger_seconds=trigger_seconds)
    shown = 0
    try:
        while query.isActive:
            query.awaitTermination(1)
            for report in job.reports[shown:]:
                console.print(
                    f"  batch {report.batch_id}: {report.consumed} consumed, {sum(report.inserted.values())} new, "
                    f"{sum(report.duplicates.values())} duplicates, {sum(report.quarantined.values())} quarantined "
                    f"{dict(sorted(report.reasons.items())) or ''} ({report.seconds:.1f}s)"
                )
            shown = len(job.reports)
    except KeyboardInterrupt:
        console.print("stopping after the current batch ...")
        query.stop()
    if query.exception():
        from fieldloop.errors import FieldloopError

        raise FieldloopError(f"ingestion stopped: {query.exception()}")
    totals = {
        k: sum(getattr(r, k) if k == "consumed" else sum(getattr(r, k).values()) for r in job.reports)
        for k in ("consumed", "inserted", "duplicates", "quarantined")
    }
    console.print("ingested: " + ", ".join(f"{v} {k}" for k, v in totals.items()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def tables(ctx: click.Context, as_json: bool) -> None:
    """List every Delta table in the lake: path, version, rows, governance."""
    from fieldloop.catalog import list_tables

    found = list_tables(_cfg(ctx))
    if as_json:
        click.echo(json.dumps([t.as_dict() for t in found], indent=2))
        return
    table = Table(title=f"{len(found)} tables in {_cfg(ctx).lake}")
    # the contract is in --json; the table name, which people copy, never wraps
    for col in ("table", "ver", "rows", "class", "tenant", "APPI level", "region", "dups"):
        table.add_column(col, no_wrap=col in ("table", "region"))
    for t in found:
        p = t.properties
        table.add_row(
            f"{t.layer}/{t.name}",
            str(t.version),
            str(t.rows),
            p.get("fieldloop.class", "-"),
            p.get("fieldloop.tenant", "-"),
            p.get("fieldloop.appi_level", "-"),
            p.get("fieldloop.residency_region", "-"),
            "-" if t.duplicates_dropped is None else str(t.duplicates_dropped),
        )
    console.print(table)


# demo -----------------------------------------------------------------------------
@main.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Bring the stack up and show what runs where (each stage extends this)."""
    from fieldloop.demo import run_demo

    run_demo(_cfg(ctx), console, _progress)


def _register_stage_commands() -> None:
    from ingestion.cli import fleet
    from refinement.cli import refine
    from training_jobs.cli import train

    main.add_command(fleet)
    main.add_command(refine)
    main.add_command(train)


_register_stage_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
