"""``fieldloop rollout``: move an approved version through a fleet's stages, watch it, stop it.

``start`` checks the version, signs its first stage and (unless ``--no-follow``) runs the
controller until the rollout completes or is rolled back, printing each decision as it is
made; ``run`` is the controller alone (a restarted one resumes from the audit table);
``status`` shows each fleet's rollout, its stage and its decisions with their figures;
``pause``, ``resume`` and ``rollback`` are a person's decisions, recorded in the same table.
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Any

import click

from fieldloop.console import ErrorReportingGroup, config_of, console

_JSON = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
_FLEET = click.option("--fleet", required=True, help="The fleet (actuation/fleets.toml).")
_REASON = click.option("--reason", default="", help="Why, for the audit table.")


def _who() -> str:
    return f"cli:{getpass.getuser()}"


def _site(ctx: click.Context, fleet: str) -> Any:
    from actuation.rollout.controller import Site

    return Site.open(config_of(ctx), fleet)


def decision_line(d: Any) -> str:
    """One decision as a timeline line: time, stage, action, who, why, and the cohorts' figures."""
    figures = d.figures or {}
    cand, champ = figures.get("candidate") or {}, figures.get("champion") or {}
    said = ""
    if cand.get("inferences") or champ.get("inferences"):
        said = (
            f" [dim](candidate {cand.get('devices', 0)} dev / {cand.get('inferences', 0)} inf, "
            f"champion {champ.get('devices', 0)} dev / {champ.get('inferences', 0)} inf)[/]"
        )
    colour = {"rollback": "red", "pause": "yellow", "complete": "green", "advance": "cyan"}.get(d.action, "white")
    return (
        f"{d.at:%H:%M:%S} [{colour}]{d.action:<15}[/] {d.stage:<8} {d.model} v{d.version}  "
        f"{d.reason} ({d.requested_by}){said}"
    )


def _follow(site: Any, as_json: bool) -> Any:
    from actuation.rollout.controller import Controller

    def say(d: Any) -> None:
        if as_json:
            click.echo(json.dumps(d.as_dict(), default=str))
        else:
            console.print("  " + decision_line(d))

    controller = Controller(site, on_decision=say)
    if not as_json:
        console.print(f"  following the rollout on {site.fleet.name} (Ctrl-C stops the controller, not the rollout)")
    try:
        return controller.run()
    except KeyboardInterrupt:
        console.print("  controller stopped; the rollout holds where it is. `fieldloop rollout run` resumes it")
        return None


@click.group(cls=ErrorReportingGroup)
def rollout() -> None:
    """Staged rollout of approved models to a fleet, judged by the devices' telemetry."""


@rollout.command("start")
@click.option("--model", required=True, help="Registered model name, e.g. fieldloop.vehicle-longitudinal.")
@click.option("--version", "version", required=True, type=click.IntRange(min=1), help="Model version (approved).")
@_FLEET
@click.option("--follow/--no-follow", default=True, help="Run the controller until the rollout ends (default).")
@_JSON
@click.pass_context
def start_cmd(ctx: click.Context, model: str, version: int, fleet: str, follow: bool, as_json: bool) -> None:
    """Check an approved version and roll it out stage by stage (the fleet's rollout policy)."""
    from actuation.rollout.controller import start

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    site = _site(ctx, fleet)
    first = start(site, model, version, _who())
    if as_json:
        click.echo(json.dumps(first.as_dict(), default=str))
    else:
        console.print(
            f"rollout {first.rollout_id}: {model} v{version} on {fleet} against the champion "
            f"{first.champion_model} v{first.champion_version}"
        )
        console.print("  " + decision_line(first))
    if follow:
        _end(_follow(site, as_json), as_json)


@rollout.command("run")
@_FLEET
@_JSON
@click.pass_context
def run_cmd(ctx: click.Context, fleet: str, as_json: bool) -> None:
    """Run the controller of the fleet's rollout until it ends (resumes from the audit table)."""
    _end(_follow(_site(ctx, fleet), as_json), as_json)


def _end(rollout: Any, as_json: bool) -> None:
    if rollout is None or as_json:
        return
    last = rollout.last
    colour = "green" if last.state == "complete" else "red" if last.state == "rolled-back" else "yellow"
    console.print(f"rollout {rollout.id} [{colour}]{last.state}[/]: {last.reason}")


@rollout.command("status")
@click.option("--fleet", default=None, help="One fleet (default: every fleet with a rollout).")
@click.option("--all", "show_all", is_flag=True, help="Every rollout of the fleet, not only the latest.")
@_JSON
@click.pass_context
def status_cmd(ctx: click.Context, fleet: str | None, show_all: bool, as_json: bool) -> None:
    """Each fleet's rollout: its stage and state, what the fleet's pointer says, every decision."""
    from actuation.contract import load_fleets
    from actuation.release.cli import open_repository
    from actuation.rollout.audit import RolloutLog, rollouts_of

    cfg = config_of(ctx)
    log = RolloutLog.for_config(cfg)
    repo = open_repository(cfg)
    fleets = [fleet] if fleet else [f.name for f in load_fleets().fleet]
    out = []
    for name in fleets:
        rollouts = rollouts_of(log.rows(name))
        pointer = repo.pointer(name) if repo.exists() else None
        shown = rollouts if show_all else rollouts[-1:]
        out.append(
            {
                "fleet": name,
                "pointer": None
                if pointer is None
                else {
                    "champion": f"{pointer.active.model}@{pointer.active.version}",
                    "stage": None
                    if pointer.stage is None
                    else {
                        "rollout": pointer.stage.rollout_id,
                        "name": pointer.stage.name,
                        "mode": pointer.stage.mode,
                        "share": pointer.stage.share,
                        "candidate": f"{pointer.stage.candidate.model}@{pointer.stage.candidate.version}",
                    },
                },
                "rollouts": [
                    {"id": r.id, "state": r.state, "stage": r.last.stage, "decisions": [d.as_dict() for d in r.rows]}
                    for r in shown
                ],
                "_rows": [list(r.rows) for r in shown],
            }
        )
    if as_json:
        click.echo(json.dumps([{k: v for k, v in f.items() if k != "_rows"} for f in out], indent=2, default=str))
        return
    if not fleet and not any(f["rollouts"] for f in out):
        console.print("no rollout has started on any fleet; `fieldloop rollout start --help` says how")
    for f in out:
        if not f["rollouts"] and not fleet:
            continue
        p = f["pointer"]
        runs = "nothing published" if p is None else f"champion {p['champion']}"
        if p and p["stage"]:
            s = p["stage"]
            runs += f", stage {s['name']} ({s['mode']} {s['share']:.0%}) of {s['candidate']}"
        console.print(f"[bold]{f['fleet']}[/]: {runs}")
        if not f["rollouts"]:
            console.print("  no rollout yet")
        for r, rows in zip(f["rollouts"], f["_rows"], strict=True):
            console.print(f"  rollout {r['id']}: {r['state']} at stage {r['stage']}")
            for d in rows:
                console.print("    " + decision_line(d))


def _request(ctx: click.Context, fleet: str, action: str, reason: str, as_json: bool) -> None:
    from actuation.rollout.controller import request

    decision = request(_site(ctx, fleet), action, _who(), reason)
    if as_json:
        click.echo(json.dumps(decision.as_dict(), default=str))
    else:
        console.print("  " + decision_line(decision))


@rollout.command("pause")
@_FLEET
@_REASON
@_JSON
@click.pass_context
def pause_cmd(ctx: click.Context, fleet: str, reason: str, as_json: bool) -> None:
    """Hold the fleet where it is: no stage advances until `rollout resume`."""
    _request(ctx, fleet, "pause", reason, as_json)


@rollout.command("resume")
@_FLEET
@_REASON
@_JSON
@click.pass_context
def resume_cmd(ctx: click.Context, fleet: str, reason: str, as_json: bool) -> None:
    """Resume a paused rollout (its stage is judged afresh), or approve the next stage."""
    _request(ctx, fleet, "resume", reason, as_json)


@rollout.command("rollback")
@_FLEET
@_REASON
@_JSON
@click.pass_context
def rollback_cmd(ctx: click.Context, fleet: str, reason: str, as_json: bool) -> None:
    """End the rollout now: every device returns to the champion (a newer signed pointer)."""
    _request(ctx, fleet, "rollback", reason, as_json)
