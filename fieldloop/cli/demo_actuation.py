"""The demo's actuation steps: from the registered candidate to simulated devices running it.

7. the guardrails judge the candidate (every check a number against its limit) and, on a
   pass, set ``approved``; a deliberately broken copy (its command scaled past the envelope)
   is judged too and refused, with its failed checks named;
8. the approved version is signed into the ``public-cars`` fleet's role of the TUF
   repository that ``fieldloop stack up`` serves over HTTP;
9. a handful of agents, provisioned with the repository's trusted root, update (TUF, the
   attestation checked), self-test, activate and run it behind the safety monitor, each in
   its own process as on a device, and report through the edge SDK's spool;
10. their telemetry lands in bronze like every other stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from fieldloop.config import FieldloopConfig

DEMO_MODEL = "fieldloop.vehicle-longitudinal"
DEMO_RELEASE_FLEET = "public-cars"
DEMO_AGENTS = 3
DEMO_AGENT_FRAMES = 200  # 40 s of a car at 5 Hz, run as fast as the model answers


def judge_candidate(cfg: FieldloopConfig, version: str | None, console: Console) -> dict[str, Any]:
    """The guardrails on the candidate, then on a broken copy of it; returns both verdicts."""
    from actuation.guardrails.cli import print_report
    from actuation.guardrails.drill import register_broken
    from actuation.guardrails.judge import judge

    if version is None:
        console.print("  [yellow]no candidate was registered: nothing to judge[/]")
        return {"approved": None}
    with console.status(f"guardrails: judging {DEMO_MODEL} v{version} ..."):
        report = judge(cfg, DEMO_MODEL, int(version))
    print_report(console, report)
    console.print("[bold]   a deliberately broken candidate (its command scaled 4x) is judged the same way[/]")
    with console.status("guardrails: judging the broken drill candidate ..."):
        broken_version = register_broken(cfg, DEMO_MODEL, int(version))
        broken = judge(cfg, DEMO_MODEL, broken_version)
    print_report(console, broken)
    return {
        "approved": int(version) if report.passed else None,
        "candidate": report.as_dict()["readiness"] | {"verdict": report.verdict.verdict},
        "failed": report.as_dict()["failed"],
        "broken": {
            "version": broken_version,
            "verdict": broken.verdict.verdict,
            "failed": broken.as_dict()["failed"],
        },
    }


def publish_approved(cfg: FieldloopConfig, approved: int | None, console: Console) -> dict[str, Any]:
    """Sign the approved version into the demo fleet's role (the repository created on first use)."""
    from mlflow import MlflowClient

    from actuation.contract import load_fleets
    from actuation.release.cli import open_repository
    from actuation.release.publish import check, first_champion, publish

    repo = open_repository(cfg)
    for line in repo.init():
        console.print(f"  {line}")
    if approved is None:
        running = repo.pointer(DEMO_RELEASE_FLEET)
        keeps = f"its champion v{running.active.version}" if running else "their fallback"
        console.print(f"  [yellow]nothing approved: no release; the devices keep {keeps}[/]")
        return {"published": None}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    fleet = load_fleets().get(DEMO_RELEASE_FLEET)
    client = MlflowClient(cfg.mlflow.uri)
    running = repo.pointer(fleet.name)
    if running is not None and running.active.version != approved:
        console.print(
            f"  fleet {fleet.name} runs its champion v{running.active.version}: v{approved} reaches it by a staged "
            "rollout (step 11), not by a direct publish"
        )
        return {"published": None, "fleet": fleet.name, "champion": running.active.version}
    done = publish(repo, check(client, repo, DEMO_MODEL, approved, fleet))
    if done.changed:
        first_champion(client, DEMO_MODEL, approved, fleet.name)
    verb = "published" if done.changed else "already published"
    console.print(
        f"  {verb} {DEMO_MODEL} v{approved} to fleet {fleet.name}, signed (TUF) and served at "
        f"{cfg.release.base_url}/metadata/ and /targets/"
    )
    if done.campaign:
        console.print(f"  the fleet is asked for its hard cases: campaign {done.campaign} (its rollout policy's)")
    return {"published": approved, "fleet": fleet.name, "changed": done.changed, "campaign": done.campaign}


def run_agents(cfg: FieldloopConfig, console: Console, progress: Callable[[str], None]) -> dict[str, Any]:
    """Provision ``DEMO_AGENTS`` devices with the trusted root and run one cycle of each, at once."""
    from actuation.release.cli import open_repository

    root = cfg.home / "release-root.json"
    root.write_bytes(open_repository(cfg).root_bytes())
    cli = [sys.executable, "-c", "from fieldloop.cli import main; main()"]  # this install's, as a device's own process
    devices = [f"demo-car-{i}" for i in range(1, DEMO_AGENTS + 1)]
    provision = ["--root", str(root), "--replace", "--json"]
    run = ["--once", "--frames", str(DEMO_AGENT_FRAMES), "--json"]
    for device in devices:
        subprocess.run(
            [*cli, "agent", "provision", "--device", device, "--fleet", DEMO_RELEASE_FLEET, *provision],
            check=True,
            capture_output=True,
            text=True,
        )
    t0 = time.monotonic()
    with console.status(f"{DEMO_AGENTS} agents: update, verify, self-test, activate, drive, report ..."):
        procs = {
            device: subprocess.Popen(
                [*cli, "agent", "run", "--device", device, "--fleet", DEMO_RELEASE_FLEET, *run],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for device in devices
        }
        results = {device: proc.communicate() for device, proc in procs.items()}
    progress(f"{DEMO_AGENTS} agents ran in {time.monotonic() - t0:.0f}s")
    summaries: dict[str, Any] = {}
    for device, (out, err) in results.items():
        if procs[device].returncode != 0:
            console.print(f"  [red]{device}: the agent failed[/]: {err.strip()[-500:]}")
            summaries[device] = {"error": err.strip()[-500:]}
            continue
        summaries[device] = s = json.loads(out)
        console.print(f"  {device}: {_agent_line(s)}")
    return {"devices": summaries}


def _agent_line(summary: dict[str, Any]) -> str:
    model = summary.get("active") or "no model (fallback)"
    window = summary.get("window") or {}
    return (
        f"runs {model}; update {summary.get('update_state')}; {window.get('inferences', 0)} inferences, "
        f"p99 {window.get('latency_p99_ms', 0):.2f} ms, {window.get('interventions', 0)} interventions, "
        f"telemetry delivered: {summary.get('telemetry_delivered')}; "
        f"hard-case windows spooled: {(summary.get('campaigns') or {}).get('sent', 0)}"
    )
