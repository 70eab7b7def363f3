"""``fieldloop guardrail``: judge a model version before it may ship.

Heavy imports (MLflow, ONNX Runtime, hypothesis) stay inside the command so ``--help`` is instant.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click
from rich.table import Table

from fieldloop.console import config_of, console, stdout_for_json

if TYPE_CHECKING:
    from rich.console import Console

    from actuation.guardrails.report import Report


@click.command()
@click.option("--model", required=True, help="Registered model name, e.g. fieldloop.vehicle-longitudinal.")
@click.option("--version", type=click.IntRange(min=1), help="Version to judge; default: the one @candidate points at.")
@click.option(
    "--fleet",
    "fleets",
    multiple=True,
    help="Fleet to judge it for (repeatable); default: every fleet of its task that may run it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON for scripts.")
@click.pass_context
def guardrail(ctx: click.Context, model: str, version: int | None, fleets: tuple[str, ...], as_json: bool) -> None:
    """Judge a model version against its task's guardrail policy and record the verdict.

    Runs the int8 ONNX file a device would run (one thread, batch 1) through regression on
    the frozen holdout, the safety envelope over a scenario suite, property checks,
    OOD separation, each fleet's edge budgets and governance. Every check is a measured
    number against its limit. A pass sets the `approved` alias; a fail removes it from this
    version and names every failed check. Either way the verdict is signed (in-toto in
    DSSE, the guardrail key) and logged with a report, plots and a model card.
    Exits 1 on a fail.

    \b
    Examples:
      fieldloop guardrail --model fieldloop.vehicle-longitudinal
      fieldloop guardrail --model fieldloop.plant-anomaly.acme-steel --version 3 --json
    """
    from actuation.guardrails.judge import judge

    cfg = config_of(ctx)
    echo = (lambda line: None) if as_json else console.print
    with stdout_for_json(as_json):
        report = judge(cfg, model, version, list(fleets) or None, echo=echo)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print_report(console, report)
    if not report.passed:
        ctx.exit(1)


def print_report(out: Console, report: Report) -> None:
    """The verdict, every check with its value and limit, what failed and why, readiness."""
    v, r = report.verdict, report.readiness
    colour = "green" if report.passed else "red"
    out.print(
        f"[bold]{v.model}[/] v{v.version}: [bold {colour}]{v.verdict.upper()}[/] under "
        f"{v.policy.name}@{v.policy.version} for {', '.join(v.fleets)}"
    )
    table = Table(box=None, padding=(0, 2), title_justify="left")
    for column in ("check", "value", "limit", "unit", ""):
        table.add_column(column, justify="right" if column in ("value", "limit") else "left")
    for c in sorted(v.checks, key=lambda c: c.passed):
        value = "unmeasurable" if c.value is None else f"{c.value:.4g}"
        table.add_row(c.name, value, f"{c.op} {c.limit:g}", c.unit, "ok" if c.passed else "[red]FAILED[/]")
    out.print(table)
    for c in v.failed:  # what was wrong, measured, and how: the detail names the scenario, row or fleet
        value = "unmeasurable" if c.value is None else f"{c.value:.6g}"
        out.print(f"  [red]failed[/] {c.name}: {value} {c.unit} against {c.op} {c.limit:g}: {c.detail}")
    out.print(
        f"  readiness: {r['passed']}/{r['checks']} checks passed, {r['failed']} failed, {r['incidents']} incidents"
    )
    if report.passed:
        out.print(f"  @approved -> v{v.version}")
    else:
        out.print("  not approved: fix what the failed checks name, retrain, and judge the new candidate")
    out.print(f"  attestation {report.attestation} (guardrail key {report.keyid[:12]}); report and plots in guardrail/")
