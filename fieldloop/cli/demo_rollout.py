"""The demo's staged rollouts: a fleet of agents judges two versions by what it reports.

11. a fleet of :data:`DEMO_DEVICES` simulated cars (real agents in this process, each with its
    own update cache, A/B slots and spool) runs the champion; an approved version that is not
    the champion (the candidate the demo trained, or a next fine-tune) is rolled out through
    the fleet's rollout policy (shadow, canary, half, all), every stage judged against the
    champion's cohort, and becomes the champion;
12. (first iteration only) a drill copy of it whose OOD score is miscalibrated passes the guardrails (its commands
    and its OOD ranking are the original's) and is rolled out the same way: in its canary its
    monitor falls back far more often than the champion's cohort does, and the controller
    halts it and rolls the fleet back; no device outside the canary ever runs it.

Each decision is printed as the controller makes it, with the cohorts' figures. Every rollout
asks the fleet for its hard cases (the rollout policy's campaign): what the cars spool while it
runs is what the next iteration learns from (:mod:`fieldloop.cli.demo_loop`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from fieldloop.config import FieldloopConfig

DEMO_MODEL = "fieldloop.vehicle-longitudinal"
DEMO_FLEET = "public-cars"
DEMO_DEVICES = 40  # the canary (a fifth) then has ~8 cars: at least 2 reporting, as the policy asks
DEMO_POLL_S = 2.0
DEMO_RATE_HZ = 5.0


def fleet_run(cfg: FieldloopConfig) -> Any:
    """The demo's cars, provisioned afresh under ``$FIELDLOOP_HOME/devices/demo-fleet``."""
    from actuation.agent.cli import kafka_security
    from actuation.fleet import FleetRun, FleetSettings
    from actuation.release.cli import open_repository

    directory = cfg.home / "devices" / "demo-fleet"
    shutil.rmtree(directory, ignore_errors=True)  # a device's spool restarts its sequence with its directory
    settings = FleetSettings(
        fleet=DEMO_FLEET,
        devices=DEMO_DEVICES,
        id_prefix=f"demo-car-{int(time.time())}",  # new ids each run: bronze deduplicates by (device, seq)
        poll_s=DEMO_POLL_S,
        rate_hz=DEMO_RATE_HZ,
        write_status=False,
    )
    return FleetRun(
        settings,
        root=open_repository(cfg).root_bytes(),
        repo_url=cfg.release.base_url,
        directory=directory,
        bootstrap=cfg.kafka.bootstrap_servers,
        kafka=kafka_security(cfg),
    )


def roll_out(site: Any, version: int, run: Any, console: Console, label: str) -> dict[str, Any]:
    """Start a rollout of ``version`` and run its controller to the end, printing each decision."""
    from actuation.rollout.audit import AWAITING, PAUSED
    from actuation.rollout.cli import decision_line
    from actuation.rollout.controller import Controller, start

    t0, started_at = run.elapsed(), time.time()
    first = start(site, DEMO_MODEL, version, "demo")
    console.print(f"  {label}: rollout {first.rollout_id} of v{version} against the champion v{first.champion_version}")
    console.print("    " + decision_line(first))
    timeline = [first]

    def said(decision: Any) -> None:
        timeline.append(decision)
        console.print("    " + decision_line(decision))

    def waits_for_a_person() -> bool:
        current = site.log.current(site.fleet.name)
        return current is not None and current.state in (PAUSED, AWAITING)

    rollout = Controller(site, on_decision=said, every_s=0.5).run(stop=waits_for_a_person)
    assert rollout is not None
    last = rollout.last
    if not rollout.done:  # paused (a gate or too few devices): the demo does not wait for a person
        from actuation.rollout.controller import request

        said(request(site, "rollback", "demo", f"the demo does not wait for a person: {last.reason}"))
        rollout = site.log.current(site.fleet.name)
    took = run.elapsed() - t0
    candidate = f"{DEMO_MODEL}@{version}"
    activations = run.activations_to(candidate)
    activated = {a.device for a in activations}
    # the loop closes when the new version acts on a car (its canary's first activation), in wall time
    active_at = time.time() - (run.elapsed() - activations[0].at_s) if activations else None
    return {
        "rollout": rollout.id,
        "version": version,
        "state": rollout.state,
        "stage": rollout.last.stage,
        "reason": rollout.last.reason,
        "seconds": round(took, 1),
        "devices_activated": len(activated),
        "started_at": started_at,
        "active_at": active_at,
        "decisions": [d.as_dict() for d in timeline],
    }


def rollouts(
    cfg: FieldloopConfig,
    candidate: int | None,
    console: Console,
    progress: Callable[[str], None],
    judge: Callable[[int], Any],
    drill: bool = True,
) -> dict[str, Any]:
    """Steps 11 and 12 (see the module docstring); ``judge(version)`` is the guardrails' verdict;
    without ``drill``, only the good rollout."""
    from actuation.contract import cohort_position
    from actuation.guardrails.drill import register_miscalibrated
    from actuation.rollout.controller import Site

    site = Site.open(cfg, DEMO_FLEET)
    pointer = site.repo.pointer(DEMO_FLEET)
    if pointer is None or candidate is None or candidate == pointer.active.version:
        why = "nothing was released" if pointer is None else "no approved version other than the champion"
        console.print(f"  [yellow]{why}: no rollout[/]")
        return {"good": None, "drill": None}
    good = _with_fleet(
        cfg, site, console, progress, lambda run: roll_out(site, candidate, run, console, "a better version")
    )
    if not drill:
        return {"good": good, "drill": None}
    console.print("[bold]12. a drill: a copy whose OOD score is miscalibrated passes the guardrails ...[/]")
    # judged while no car runs: the guardrails time the model's p99 on this machine, which the
    # agents in this process would otherwise share
    with console.status("registering a miscalibrated copy of the new champion and judging it ..."):
        drill_version = register_miscalibrated(cfg, DEMO_MODEL, candidate)
        verdict = judge(drill_version)
    failed = ", ".join(c.name for c in verdict.verdict.failed) or "none"
    console.print(
        f"  drill v{drill_version} (its OOD score raised to a power: same commands, same ranking): "
        f"{verdict.verdict.verdict}, {len(verdict.verdict.checks)} checks, failed: {failed}"
    )
    if not verdict.passed:
        console.print("  [yellow]the guardrails refused the drill: no rollout for it[/]")
        return {"good": good, "drill": {"version": drill_version, "verdict": "fail", "failed": failed}}
    console.print("[bold]   ... and meets the field: its canary falls back where the champion's cohort does not[/]")

    def drill_rollout(run: Any) -> dict[str, Any]:
        champion = f"{DEMO_MODEL}@{site.repo.pointer(DEMO_FLEET).active.version}"
        bad = roll_out(site, drill_version, run, console, "the drill")
        label = f"{DEMO_MODEL}@{drill_version}"
        share = _canary_share(site)
        stray = [a.device for a in run.activations_to(label) if cohort_position(bad["rollout"], a.device) >= share]
        ran = {a.device for a in run.activations_to(label)}
        run.wait_for(lambda r: all(r.versions().get(d) == champion for d in ran), 4 * DEMO_POLL_S + 30)
        back = _back_on(run, champion, label)
        if back is not None:
            console.print(
                f"  every car that ran the drill was back on the champion {back:.1f} s after the drill's first "
                f"activation; cars outside its canary that ever ran it: {len(stray)}"
            )
        return bad | {"stray_activations": len(stray), "back_after_s": back}

    return {"good": good, "drill": _with_fleet(cfg, site, console, progress, drill_rollout)}


def _with_fleet(
    cfg: FieldloopConfig, site: Any, console: Console, progress: Callable[[str], None], body: Callable[[Any], Any]
) -> dict[str, Any]:
    """``body(run)`` with the demo's cars running the fleet's champion, then their summary."""
    pointer = site.repo.pointer(DEMO_FLEET)
    champion = f"{DEMO_MODEL}@{pointer.active.version}"
    run = fleet_run(cfg)
    run.start()
    try:
        with console.status(f"{DEMO_DEVICES} cars: provision, update to the champion ..."):
            converged = run.wait_for(lambda r: r.running()[champion] == DEMO_DEVICES, 120)
        progress(f"{DEMO_DEVICES} cars run the champion {champion} ({run.elapsed():.0f}s)")
        if not converged:
            console.print(f"  [yellow]not every car took the champion: {dict(run.running())}[/]")
        result = body(run)
        _ends(console, result, run)
        return result | {"hard_cases": run.hard_cases()}
    finally:
        run.stop()


def _canary_share(site: Any) -> float:
    return next(s.share for s in site.policy.stage if s.mode == "active")


def _back_on(run: Any, champion: str, bad: str) -> float | None:
    """Seconds from the drill's first activation until every car that ran it was back on the champion."""
    took = run.activations_to(bad)
    if not took:
        return None
    devices = {a.device for a in took}
    if any(run.versions().get(d) != champion for d in devices):
        return None
    back = max(a.at_s for a in run.activations_to(champion) if a.device in devices)
    return back - min(a.at_s for a in took)


def _ends(console: Console, result: dict[str, Any], run: Any) -> None:
    colour = "green" if result["state"] == "complete" else "red"
    console.print(
        f"  [{colour}]{result['state']}[/] at {result['stage']} after {result['seconds']:.0f}s; "
        f"{result['devices_activated']} cars ran it; the fleet now: {dict(run.running())}; "
        f"hard-case windows spooled so far: {run.hard_cases()['sent']}"
    )
