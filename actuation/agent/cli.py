"""``fieldloop agent``: provision a device, run its agent, show its status.

Registered by the face (``fieldloop.cli``). The config is read once at the entry point;
onnxruntime, tuf and the SDK are imported inside the commands so ``fieldloop --help`` stays
instant. ``run --pause-at download|activation`` (hidden; crash tests only) makes it stop at
that step until it is killed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fieldloop.config import FieldloopConfig
from fieldloop.console import ErrorReportingGroup, config_of, console, stdout_for_json

if TYPE_CHECKING:
    from actuation.agent.device import DeviceDir


def device_dir(cfg: FieldloopConfig, device: str, directory: Path | None) -> DeviceDir:
    from actuation.agent.device import DeviceDir

    return DeviceDir(directory or cfg.home / "devices" / device)


_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Device directory (default: $FIELDLOOP_HOME/devices/<id>).",
)


@click.group(cls=ErrorReportingGroup)
def agent() -> None:
    """The edge agent: verified model updates (TUF, attestations, A/B slots), inference behind a
    safety monitor, telemetry through the edge SDK."""


@agent.command()
@click.option("--device", "device_id", required=True, help="The device's id (its telemetry key).")
@click.option("--fleet", required=True, help="The fleet it belongs to (actuation/fleets.toml).")
@click.option(
    "--root",
    "root_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The trusted TUF root (`fieldloop release root > root.json`).",
)
@click.option("--tenant", default=None, help="Its owner (default: the fleet's tenant).")
@click.option("--repo", "repo_url", default=None, help="Release repository URL (default: the config's release URL).")
@click.option(
    "--rate",
    "rate_hz",
    type=click.FloatRange(min=0, max=1000, min_open=True),
    default=5.0,
    show_default=True,
    help="Inference rate (Hz).",
)
@_DIR
@click.option("--replace", is_flag=True, help="Provision again a device provisioned otherwise.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def provision(
    ctx: click.Context,
    device_id: str,
    fleet: str,
    root_file: Path,
    tenant: str | None,
    repo_url: str | None,
    rate_hz: float,
    directory: Path | None,
    replace: bool,
    as_json: bool,
) -> None:
    """Write a device directory: trusted root, config, metadata cache, A/B slots, spool."""
    from actuation.agent.device import DeviceConfig
    from actuation.agent.device import provision as provision_device
    from actuation.agent.errors import DeviceError
    from actuation.contract import load_fleets

    cfg = config_of(ctx)
    try:
        known = load_fleets().get(fleet)
    except (KeyError, ValueError) as e:
        raise DeviceError(str(e).strip('"')) from e
    if tenant is not None and tenant != known.tenant:
        owner = f"tenant {known.tenant}" if known.tenant else "no tenant (base models only)"
        raise DeviceError(f"fleet {fleet} belongs to {owner}, not to {tenant}: pick that tenant's fleet")
    try:
        config = DeviceConfig(
            device_id=device_id,
            fleet=fleet,
            tenant=known.tenant,
            task=known.task,
            repo_url=repo_url or cfg.release.base_url,
            rate_hz=rate_hz,
        )
    except ValueError as e:
        raise DeviceError(f"invalid device settings: {e}") from e
    device = provision_device(
        device_dir(cfg, device_id, directory).path, config, root_file.read_bytes(), replace=replace
    )
    out = {"device": device_id, "dir": str(device.path), **config.model_dump(exclude={"device_id"})}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    console.print(
        f"device [bold]{device_id}[/] provisioned in {device.path}: fleet {fleet} "
        f"({known.task}, tenant {known.tenant or '-'}), repository {config.repo_url}"
    )


@agent.command()
@click.option("--device", "device_id", required=True, help="The device's id.")
@click.option("--fleet", required=True, help="The fleet it was provisioned for (checked).")
@_DIR
@click.option("--once", is_flag=True, help="One update cycle, a short inference burst, a telemetry flush.")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Run this long (default: until interrupted).",
)
@click.option("--frames", type=click.IntRange(min=1), default=50, show_default=True, help="Frames of the --once burst.")
@click.option(
    "--update-every",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds between update cycles.",
)
@click.option(
    "--flush-seconds",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="How long to wait for telemetry delivery.",
)
@click.option(
    "--disagreement-threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="|shadow - actuated| above which a shadowed inference disagrees (the fleet's rollout policy's), "
    "for the status's shadow disagreement rate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--pause-at",
    type=click.Choice(["download", "activation"]),
    default=None,
    hidden=True,
    help="Crash tests: stop at this step until killed.",
)
@click.pass_context
def run(
    ctx: click.Context,
    device_id: str,
    fleet: str,
    directory: Path | None,
    once: bool,
    seconds: float | None,
    frames: int,
    update_every: float,
    flush_seconds: float,
    disagreement_threshold: float | None,
    as_json: bool,
    pause_at: str | None,
) -> None:
    """Run the device's agent: update cycles, inference at its rate behind the safety monitor, telemetry."""
    import itertools

    from actuation.agent.agent import Agent
    from actuation.agent.errors import DeviceError
    from actuation.agent.sources import simulated_frames
    from actuation.agent.telemetry import producer

    cfg = config_of(ctx)
    device = device_dir(cfg, device_id, directory)
    provisioned = device.config()
    if not ctx.find_root().params.get("verbose"):
        # urllib3 logs each retry of an unreachable repository; the cycle's state says it once
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    if provisioned.fleet != fleet or provisioned.device_id != device_id:
        raise DeviceError(
            f"{device.path} was provisioned as {provisioned.device_id} in fleet {provisioned.fleet}, "
            f"not {device_id} in {fleet}: provision it again with --replace to move it"
        )
    pause = _pause_hook(device.path, pause_at)
    # a service manager stops the agent with SIGTERM: end like Ctrl-C (flush, status, summary)
    signal.signal(signal.SIGTERM, _interrupt)
    with device.lock(), stdout_for_json(as_json):
        telemetry = producer(cfg.kafka.bootstrap_servers, device.spool, provisioned.tenant, **kafka_security(cfg))
        try:
            agent_ = Agent(device, telemetry=telemetry, pause=pause, disagreement_threshold=disagreement_threshold)
            source = simulated_frames(provisioned.task, provisioned.rate_hz)
            agent_.update()
            try:
                if once:
                    agent_.run(itertools.islice(source, frames), paced=False, update_every_s=float("inf"))
                else:
                    agent_.run(source, seconds=seconds, update_every_s=update_every)
            except KeyboardInterrupt:  # an operator's Ctrl-C: flush, record and print the window
                pass
            delivered = telemetry.flush(flush_seconds)
        finally:
            telemetry.close(2.0)
        summary = agent_.write_status()
        summary["telemetry_delivered"] = delivered
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_summary(summary)


@agent.command()
@click.option("--device", "device_id", required=True, help="The device's id.")
@_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, device_id: str, directory: Path | None, as_json: bool) -> None:
    """What the device runs, its slots and its last run's figures (no network)."""
    from actuation.agent.slots import Slots, state_summary

    device = device_dir(config_of(ctx), device_id, directory)
    config = device.config()
    out: dict[str, Any] = {"config": config.model_dump(), "state": state_summary(Slots(device).state())}
    out["last_run"] = json.loads(device.status.read_text()) if device.status.exists() else None
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    state = out["state"]
    active = state["slots"].get(state["active"]) if state["active"] else None
    label = (
        f"{active['release']['model']}@{active['release']['version']} (slot {state['active']})" if active else "none"
    )
    console.print(f"device {config.device_id} in fleet {config.fleet}: active model {label}")
    for key, why in state["refused"].items():
        console.print(f"  [yellow]refused[/] {key}: {why}")
    if out["last_run"]:
        _print_summary(out["last_run"])


def _print_summary(summary: dict[str, Any]) -> None:
    w = summary["window"]
    console.print(
        f"device {summary['device']} ({summary['fleet']}): active {summary['active'] or 'none (fallback only)'}"
    )
    console.print(f"  update: {summary['update_state']}")
    if stage := summary.get("stage"):
        cohort = "in its cohort" if stage["in_cohort"] else "outside its cohort"
        console.print(
            f"  rollout {stage['rollout_id']}: stage {stage['name']} ({stage['mode']}, "
            f"{stage['share']:.0%} of the fleet), candidate {stage['candidate']}, {cohort}"
        )
        if stage["shadow_state"]:
            console.print(f"  shadow: {stage['shadow_state']}")
    if w["inferences"]:
        console.print(
            f"  {w['inferences']} inferences, latency p50 {w['latency_p50_ms']:.3f} ms, "
            f"p99 {w['latency_p99_ms']:.3f} ms, "
            f"OOD rate {w['ood_rate']:.1%}, interventions {w['interventions']} {w['interventions_by_reason'] or ''}"
        )
    if shadow := w.get("shadow"):
        rate = shadow["disagreement_rate"]
        said = f"rate {rate:.1%} above {shadow['disagreement_threshold']:g}, " if rate is not None else ""
        console.print(
            f"  shadow {summary['shadow'] or '(dropped)'} on {shadow['inferences']} inferences: disagreement "
            f"{said}p95 {shadow['disagreement_p95']:.3g}, max {shadow['disagreement_max']:.3g}"
        )
    if w["errors"]:
        console.print(f"  errors: {w['errors']}")
    if summary.get("telemetry_delivered") is False:
        console.print("  [yellow]telemetry spooled, not yet delivered[/] (the broker is unreachable; it is sent later)")


def kafka_security(cfg: FieldloopConfig) -> dict[str, Any]:
    k = cfg.kafka
    return {
        "security_protocol": k.security_protocol,
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_username": k.sasl_username,
        "sasl_password": k.sasl_password,
        "ssl_cafile": k.ssl_cafile,
    }


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _pause_hook(directory: Path, step: str | None):
    """Crash tests: at ``step``, leave a marker file and wait to be killed."""
    if not step:
        return None

    def pause(at: str) -> None:
        if at == step:
            (directory / f"paused-at-{at}").write_text(str(os.getpid()))
            while True:
                time.sleep(1)

    return pause
