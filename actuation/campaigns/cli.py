"""``fieldloop campaign``: ask a fleet's devices for the input windows around a trigger.

``create`` signs a campaign into the fleet's role (the devices see it at their next update
cycle), ``list`` shows what is signed, ``stop`` ends one. Each change is a new targets version
of the fleet's role, mirrored to S3 afterwards when ``FIELDLOOP_RELEASE_S3`` names a bucket.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from fieldloop.console import ErrorReportingGroup, config_of, console

_JSON = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(cls=ErrorReportingGroup)
def campaign() -> None:
    """Collection campaigns: which hard cases a fleet's devices send home, how many, until when."""


def _row(c: Any, now: datetime) -> dict[str, Any]:
    from actuation.campaigns import campaign_row  # imported when used: `fieldloop --help` stays light

    return campaign_row(c, now)


def _book(ctx: click.Context) -> tuple[Any, Any]:
    from actuation.campaigns import CampaignBook
    from actuation.release.cli import open_repository

    cfg = config_of(ctx)
    return cfg, CampaignBook(open_repository(cfg))


def _mirrored(cfg: Any) -> dict[str, Any] | None:
    from actuation.release.cli import mirror_release

    return mirror_release(cfg)


@campaign.command("create")
@click.option("--fleet", required=True, help="The fleet whose devices collect.")
@click.option("--trigger", required=True, help="'fallback', or terms like 'ood>=0.8', 'speed_mps>20 and brake>0.5'.")
@click.option("--max-per-hour", type=int, default=60, show_default=True, help="Windows per device per hour.")
@click.option(
    "--max-bytes-per-day", type=int, default=10 * 1024 * 1024, show_default=True, help="Bytes per device per day."
)
@click.option("--window-before", type=int, default=10, show_default=True, help="Frames up to the trigger's.")
@click.option("--window-after", type=int, default=5, show_default=True, help="Frames after the trigger.")
@click.option("--expires", default="24h", show_default=True, help="How long it runs: 30m, 24h, 7d.")
@_JSON
@click.pass_context
def create(
    ctx: click.Context,
    fleet: str,
    trigger: str,
    max_per_hour: int,
    max_bytes_per_day: int,
    window_before: int,
    window_after: int,
    expires: str,
    as_json: bool,
) -> None:
    """Sign a campaign into the fleet's role (the same one still running is not signed twice)."""
    from actuation.campaigns import parse_duration

    cfg, book = _book(ctx)
    done = book.create(
        fleet, trigger, max_per_hour, max_bytes_per_day, window_before, window_after, parse_duration(expires)
    )
    mirrored = _mirrored(cfg) if done.signed else None
    row = _row(done.campaign, datetime.now(UTC))
    if as_json:
        click.echo(json.dumps({**row, "signed": done.signed, "mirrored": mirrored}, indent=2))
        return
    verb = "signed" if done.signed else "already running, nothing signed:"
    console.print(
        f"campaign [bold]{row['id']}[/] {verb} fleet {row['fleet']} collects on '{row['trigger']}', "
        f"{row['window_before']}+{row['window_after']} frames, at most {row['max_per_hour']}/h and "
        f"{row['max_bytes_per_day']} B/day per device, until {row['expires_at']}"
    )


@campaign.command("list")
@click.option("--fleet", default=None, help="Only this fleet's.")
@_JSON
@click.pass_context
def list_(ctx: click.Context, fleet: str | None, as_json: bool) -> None:
    """The signed campaigns, newest first, with their state (active, expired, stopped)."""
    from rich.table import Table

    _, book = _book(ctx)
    now = datetime.now(UTC)
    rows = [_row(c, now) for c in book.list(fleet)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no campaigns" + (f" for fleet {fleet}" if fleet else ""))
        return
    table = Table("id", "fleet", "state", "trigger", "budget", "window", "expires")
    for r in rows:
        budget = f"{r['max_per_hour']}/h, {r['max_bytes_per_day']} B/day"
        window = f"{r['window_before']}+{r['window_after']}"
        table.add_row(r["id"], r["fleet"], r["state"], r["trigger"], budget, window, r["expires_at"])
    console.print(table)


@campaign.command("stop")
@click.option("--id", "campaign_id", required=True, help="The campaign to stop (campaign list).")
@_JSON
@click.pass_context
def stop(ctx: click.Context, campaign_id: str, as_json: bool) -> None:
    """Stop a campaign: its devices send nothing more after their next update cycle."""
    cfg, book = _book(ctx)
    stopped, changed = book.stop(campaign_id)
    mirrored = _mirrored(cfg) if changed else None
    if as_json:
        click.echo(json.dumps({**_row(stopped, datetime.now(UTC)), "changed": changed, "mirrored": mirrored}))
        return
    console.print(f"campaign {campaign_id} " + ("stopped" if changed else "was stopped already"))
