"""``fieldloop refine``: bronze -> silver with the privacy report printed.

Heavy imports (pyspark, delta) stay inside the command so ``--help`` is instant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fieldloop.console import config_of, console, err_console, stdout_for_json
from refinement.report import PrivacyReport


def print_reports(out: Console, reports: Sequence[PrivacyReport], details: bool = True) -> None:
    """The privacy reports as one table (✓: rows in = out + quarantined + trimmed + suppressed
    + expired), then each table's fields and actions."""
    table = Table(title="privacy report", title_justify="left")
    numeric = ("in", "out", "quarantined", "trimmed", "suppressed", "expired", "k")
    for col in ("table", "level", "bronze", *numeric, ""):
        table.add_column(col, justify="right" if col in numeric else "left", no_wrap=col == "table")
    for r in reports:
        versions = f"v{r.bronze_versions[0]}..{r.bronze_versions[1]}" if r.bronze_versions else "up to date"
        k = "-"
        if r.k_required:
            k = f"{r.k_achieved if r.k_achieved is not None else '-'} (≥{r.k_required})"
        table.add_row(
            r.table,
            r.level,
            versions,
            str(r.rows_in),
            str(r.rows_out),
            str(sum(r.quarantined.values())),
            str(r.trimmed_rows),
            str(r.suppressed_rows),
            str(r.expired_rows),
            k,
            "[green]✓[/]" if r.reconciles else "[red]does not reconcile[/]",
        )
    out.print(table)
    if not details:
        return
    for r in reports:
        if r.retention_deleted:
            out.print(f"[bold]{r.table}[/]: retention deleted {r.retention_deleted} rows of earlier runs")
        if not r.bronze_versions:
            continue
        notes = []
        if r.expired_rows:
            notes.append(f"expired {r.expired_rows}: past the contract's retention when refined, not written")
        if r.quarantined:
            notes.append("quarantined " + ", ".join(f"{k}: {v}" for k, v in sorted(r.quarantined.items())))
        if r.suppressed_values:
            notes.append("values suppressed " + ", ".join(f"{k}: {v}" for k, v in r.suppressed_values.items()))
        if r.l_diversity:
            notes.append("ℓ-diversity " + ", ".join(f"{k}: {v}" for k, v in r.l_diversity.items()))
        if r.placeholders:
            notes.append("free text " + ", ".join(f"[{k}] x{v}" for k, v in sorted(r.placeholders.items())))
        actions = ", ".join(f"{f}={a}" for f, a in r.fields.items() if a != "keep")
        keys = f"; keys {', '.join(r.key_ids)}" if r.key_ids else ""
        out.print(f"[bold]{r.table}[/] ({r.residency_region}{keys}): {actions}")
        for note in notes:
            out.print(f"  {note}")
        out.print(f"  [dim]report: {r.location}[/]")


def print_refused(out: Console, refused: dict[str, str]) -> None:
    """The streams nothing was written for, because this lake may not hold their data."""
    for contract_id, why in refused.items():
        out.print(f"[yellow]{contract_id}: not refined[/]: {why}")


def print_gold(out: Console, gold: Sequence[Any]) -> None:
    """One line per gold table (``refinement.gold.GoldReport``): rows written, sources, DP releases."""
    for g in gold:
        if g.refused:
            out.print(f"  [yellow]gold/{g.table}: not built[/]: {g.refused}")
            continue
        what = f"{g.rows} rows" if g.rows is not None else "unchanged (sources did not move)"
        dp = f"; {len(g.dp)} DP releases charged to the ledger" if g.dp else ""
        held = f"; days not closed yet: {', '.join(g.dp_held)}" if g.dp_held else ""
        cases = ""
        if g.windows:
            w = g.windows
            cases = (
                f"; {w['windows']} hard-case windows: {w['used']} used, {w['too_short']} too short, "
                f"{w['unfit']} lacking a signal, {w['missing']} missing values"
            )
        out.print(f"  gold/{g.table}: {what} from silver {g.sources}{dp}{held}{cases}")
        for skipped in g.dp_skipped:
            out.print(f"    [yellow]skipped {skipped['release_id']}[/]: {skipped['reason']}")


@click.command()
@click.option(
    "--stream",
    "streams",
    multiple=True,
    metavar="NAME",
    help="Contract id, stream or silver table to refine (repeatable); default: every stream.",
)
@click.option(
    "--since-version",
    type=int,
    default=None,
    metavar="N",
    help="Refine bronze versions after N again, replacing what earlier runs wrote (e.g. after a policy fix).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the privacy reports, gold builds and changed tables as JSON for scripts (progress on stderr).",
)
@click.pass_context
def refine(ctx: click.Context, streams: tuple[str, ...], since_version: int | None, as_json: bool) -> None:
    """Refine new bronze versions into quality-checked, pseudonymized or anonymized silver tables.

    Each run reads only what bronze gained since the last one, quarantines rows that fail
    the stream's quality rules, applies its privacy policy and writes a privacy report next
    to each table. Running it again with nothing new writes nothing.
    """
    from refinement.run import refine as run_refine

    cfg = config_of(ctx)
    out = err_console if as_json else console
    with stdout_for_json(as_json), out.status("refining ...") as status:

        def progress(report: PrivacyReport) -> None:
            status.update(f"refining ... {report.table} done")

        result = run_refine(cfg, streams, since_version, on_table=progress)
    if as_json:
        summary = {
            "reports": [r.as_dict() for r in result.reports],
            "gold": [asdict(g) for g in result.gold],
            "changed_tables": result.changed_tables(),
            "refused": result.refused,
            "seconds": result.seconds,
        }
        click.echo(json.dumps(summary, indent=2, default=str, ensure_ascii=False))
        return
    print_reports(console, result.reports)
    print_gold(console, result.gold)
    print_refused(console, result.refused)
    print_upkeep(console, result.upkeep)
    console.print("[dim]" + ", ".join(f"{phase} {s:.1f}s" for phase, s in result.seconds.items()) + "[/]")


def print_upkeep(out: Console, upkeep: Sequence[Any]) -> None:
    """What retention deleted from bronze, quarantine and gold, and which tables were compacted
    (``refinement.maintenance.Upkeep``; silver's retention is in the privacy report)."""
    for u in upkeep:
        if u.expired_rows:
            out.print(f"retention {u.table}: {u.expired_rows} rows past the contract's retention deleted")
        if u.vacuumed:
            out.print(f"  [dim]upkeep {u.table}: {'compacted, ' if u.optimized else ''}vacuumed[/]")
