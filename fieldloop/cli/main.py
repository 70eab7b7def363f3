"""The ``fieldloop`` command line: the operator's handle on the loop (the face).

The root group, the kernel's own commands (``setup``, ``stack``, ``config``, ``tables``)
and ``demo``; each stage keeps its command group in its own package (``ingestion.cli``,
``refinement.cli``, ``training_jobs.cli``) and is registered here. This package is the
only part of the kernel that imports a stage. Heavy imports stay inside commands so
``fieldloop --help`` is instant. Domain errors become one red line and exit status 1;
nothing prints a traceback unless ``--verbose``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click
from rich.table import Table

from fieldloop.console import ErrorReportingGroup, config_of, console


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


# config ---------------------------------------------------------------------------
@main.group(cls=ErrorReportingGroup)
def config() -> None:
    """Inspect the effective configuration and the data contracts."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective config (defaults < fieldloop.toml < FIELDLOOP_*), secrets redacted."""
    data = config_of(ctx).redacted()
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

    cfg = config_of(ctx)
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


# tables ---------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def tables(ctx: click.Context, as_json: bool) -> None:
    """List every Delta table in the lake: path, version, rows, governance, duplicates dropped and
    rows retention deleted."""
    from fieldloop.catalog import list_tables

    found = list_tables(config_of(ctx))
    if as_json:
        click.echo(json.dumps([t.as_dict() for t in found], indent=2))
        return
    table = Table(title=f"{len(found)} tables in {config_of(ctx).lake}")
    # the contract is in --json; the table name, which people copy, never wraps
    for col in ("table", "ver", "rows", "class", "tenant", "APPI level", "region", "dups", "expired"):
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
            str(t.retention_deleted or "-"),
        )
    console.print(table)
    for t in found:
        for note in t.notes:
            console.print(f"  [yellow]{t.layer}/{t.name}[/]: {note}")


def _register_commands() -> None:
    from actuation.agent.cli import agent
    from actuation.campaigns.cli import campaign
    from actuation.fleet.cli import agents
    from actuation.guardrails.cli import guardrail
    from actuation.release.cli import release
    from actuation.rollout.cli import rollout
    from fieldloop.cli.demo import demo
    from fieldloop.cli.stack import setup, stack
    from fieldloop.cli.status import status
    from ingestion.cli import fleet, ingest, topics
    from refinement.cli import refine
    from training_jobs.cli import train

    for command in (
        setup,
        stack,
        topics,
        fleet,
        ingest,
        refine,
        train,
        guardrail,
        release,
        rollout,
        campaign,
        agent,
        demo,
        status,
    ):
        main.add_command(command)
    fleet.add_command(agents)  # ingestion's group: ingestion may not import actuation


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
