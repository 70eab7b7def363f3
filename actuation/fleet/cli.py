"""``fieldloop fleet agents``: N real edge agents of a fleet in this process, with faults.

Registered by the face into the ``fleet`` group (``ingestion.cli``, which may not import
actuation). The devices are provisioned with this site's repository's trusted root (what
``fieldloop release root`` prints) and its URL, in ``$FIELDLOOP_HOME/fleets/<fleet>/`` unless
``--dir`` says otherwise; a second run reuses them (slots, metadata cache, spools).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from fieldloop.console import config_of, console, err_console, stdout_for_json


def _parse_faults(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Any]:
    from actuation.fleet.errors import FaultSpecError
    from actuation.fleet.faults import parse_faults

    try:
        return parse_faults(values)
    except FaultSpecError as e:
        raise click.BadParameter(str(e)) from e


@click.command("agents")
@click.option("--fleet", required=True, help="The fleet the devices belong to (actuation/fleets.toml).")
@click.option(
    "--devices", "-n", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Number of agents."
)
@click.option(
    "--seconds", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True, help="How long to run."
)
@click.option(
    "--rate-hz",
    type=click.FloatRange(0, 100),
    default=1.0,
    show_default=True,
    help="Inferences per device per second (0: update cycles only).",
)
@click.option(
    "--poll-s",
    type=click.FloatRange(0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds between a device's update cycles (each device at its own stable phase).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    callback=_parse_faults,
    metavar="SPEC",
    help="Inject a fault (repeatable; times in seconds from the start): offline:SHARE@START+DURATION "
    "(that share of devices loses its network: no update, telemetry spooled), outage@START+DURATION "
    "(the release repository is unreachable), condition:SHARE@START+DURATION (an untrained field "
    "condition: a snowstorm motorway, chattering sensors in dense traffic, out of distribution).",
)
@click.option(
    "--id-prefix",
    default=None,
    help="Device ids are PREFIX-0001... (default: the fleet's name). A device is its directory: "
    "use another prefix with another --dir, or their telemetry's sequence numbers start again.",
)
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker threads.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the devices' directories go (default: $FIELDLOOP_HOME/fleets/<fleet>).",
)
@click.option(
    "--root",
    "root_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The trusted root (default: this site's repository's newest, as `fieldloop release root` prints it).",
)
@click.option("--repo", "repo_url", default=None, help="Release repository URL (default: the config's release URL).")
@click.option("--no-telemetry", is_flag=True, help="Count inferences, send no telemetry (required above 200 devices).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (with every activation) as JSON.")
@click.pass_context
def agents(
    ctx: click.Context,
    fleet: str,
    devices: int,
    seconds: float,
    rate_hz: float,
    poll_s: float,
    faults: list[Any],
    id_prefix: str | None,
    threads: int,
    directory: Path | None,
    root_file: Path | None,
    repo_url: str | None,
    no_telemetry: bool,
    as_json: bool,
) -> None:
    """Run N real edge agents of a fleet in this process: update cycles against the release
    repository, inference on simulated frames, telemetry through each device's spool, faults."""
    from pydantic import ValidationError

    from actuation.agent.cli import kafka_security
    from actuation.fleet.errors import FleetError
    from actuation.fleet.run import FleetRun, FleetSettings

    cfg = config_of(ctx)
    if not ctx.find_root().params.get("verbose"):
        # each refused or offline cycle is in the summary's states; per-device warnings would drown the progress
        for name in ("urllib3", "actuation.agent.agent", "ingestion.producer"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        settings = FleetSettings(
            fleet=fleet,
            devices=devices,
            poll_s=poll_s,
            rate_hz=rate_hz,
            id_prefix=id_prefix,
            threads=threads,
            telemetry=not no_telemetry,
            faults=tuple(faults),
        )
    except ValidationError as e:
        raise FleetError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from e
    root = root_file.read_bytes() if root_file else _site_root(cfg)
    run = FleetRun(
        settings,
        root=root,
        repo_url=repo_url or cfg.release.base_url,
        directory=directory or cfg.home / "fleets" / fleet,
        bootstrap=cfg.kafka.bootstrap_servers,
        kafka=kafka_security(cfg),
    )
    with stdout_for_json(as_json):
        err_console.print(
            f"fleet {fleet}: {devices} agents, poll every {poll_s:g} s, {rate_hz:g} Hz, {threads} threads, "
            f"{len(faults)} faults, {seconds:g} s"
        )
        try:
            summary = run.run(seconds, progress=_print_progress)
        except KeyboardInterrupt:
            run.stop()
            summary = run.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_summary(summary)


def _site_root(cfg: Any) -> bytes:
    """The newest root of this site's repository (a ReleaseError says how to make one if there is none)."""
    from actuation.release.cli import open_repository

    return open_repository(cfg).root_bytes()


def _print_progress(snap: dict[str, Any]) -> None:
    versions = ", ".join(f"{v} x{n}" for v, n in snap["versions"].items())
    states = ", ".join(f"{k} {n}" for k, n in sorted(snap["update_states"].items()))
    faults = []
    if snap["offline_devices"]:
        faults.append(f"{snap['offline_devices']} offline")
    if snap["outage"]:
        faults.append("repository out")
    err_console.print(
        f"[dim]{snap['at_s']:7.1f} s[/] running {versions} | polls {snap['polls']} ({states}) | "
        f"inferences {snap['inferences']} | activations {snap['activations']}"
        + (f" | [yellow]{', '.join(faults)}[/]" if faults else "")
    )


def _print_summary(s: dict[str, Any]) -> None:
    console.print(f"fleet {s['fleet']}: {s['devices']} agents for {s['seconds']:.1f} s")
    for version, n in s["versions"].items():
        console.print(f"  {version}: {n} devices")
    console.print(
        f"  update cycles: {s['polls']} ({s['polls_per_s']}/s), states {s['update_states']}, "
        f"largest poll lag {s['max_poll_lag_s']} s"
    )
    for state, figures in s["poll_bytes"].items():
        console.print(
            f"    {state}: {figures['metadata_bytes_per_poll']:.0f} B metadata, "
            f"{figures['target_bytes_per_poll']:.0f} B targets per cycle"
        )
    console.print(
        f"  inferences: {s['inferences']} {s['inferences_by_version']}, interventions {s['interventions_by_version']}"
    )
    console.print(f"  activations: {len(s['activations'])}")
    for a in s["activations"][:20]:
        console.print(f"    {a['at_s']:7.2f} s {a['device']}: {a['previous'] or 'none'} -> {a['active'] or 'none'}")
    if len(s["activations"]) > 20:
        console.print(f"    ... {len(s['activations']) - 20} more (--json lists every one)")
    for f in s["faults"]:
        console.print(f"  fault {f['fault']}: {f['devices']} devices, {f['start_s']:g}-{f['end_s']:g} s")
    if s["telemetry"]:
        t = s["telemetry"]
        console.print(f"  telemetry: {t['accepted']} spooled, {t['acked']} acknowledged, {t['pending']} pending")
