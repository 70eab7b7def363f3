"""Staged rollouts end to end: real agents (actuation.fleet) against the real release repository
(nginx), their telemetry through the real broker to the controller, versions and aliases in the
real MLflow server, decisions in a real Delta audit table.

Models are real ONNX models of the vehicle task's width (tests/tuf_repository.py ``tiny_model``):
the champion commands the measured acceleration; the good candidate 0.95 of it; the bad one
the same command with an OOD score of 0.95, over the release's threshold, so every command it
makes is replaced by the monitor's fallback, which its shadow cannot show (it never acts) and
its canary, compared with the champion's cohort, does.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from actuation.contract import cohort_position, load_fleets
from actuation.fleet import Fault, FleetRun, FleetSettings
from actuation.release.publish import ATTESTATION_ARTIFACT, MODEL_FILE, check, first_champion, publish
from actuation.rollout import controller as ctl
from actuation.rollout.audit import ADVANCE, COMPLETE, COMPLETED, ROLLBACK, ROLLED_BACK, RolloutLog
from actuation.rollout.feed import TELEMETRY_TOPIC
from actuation.rollout.policy import RolloutPolicy
from fieldloop.config import FieldloopConfig
from fieldloop.registry import APPROVED, CHAMPION, MANIFEST_FILE
from fieldloop.residency import ResidencyGuard
from tests.kafka_topics import ensure_topic
from tests.release_fixtures import ServedRelease, attest_files, log_bytes, register_version, served_release, verdict
from tests.tuf_repository import tiny_model

FLEET = "public-cars"
DEVICES = 20
POLL_S = 0.5


def policy() -> RolloutPolicy:
    stage = {"min_devices": 2, "min_inferences": 20, "max_wait_s": 60}
    return RolloutPolicy.model_validate(
        {
            "fleet": FLEET,
            "version": 1,
            "disagreement_threshold": 0.5,
            "stage": [
                {"name": "shadow", "mode": "shadow", "share": 0.5, "soak_s": 3, **stage},
                {"name": "canary", "mode": "active", "share": 0.25, "soak_s": 3, **stage},
                {"name": "all", "mode": "active", "share": 1.0, "soak_s": 2, **stage},
            ],
            "gate": [
                {"name": "disagreement", "metric": "shadow_disagreement_rate", "max": 0.2, "action": "pause"},
                {"name": "fallbacks", "metric": "intervention_rate", "max_increase": 0.1, "action": "rollback"},
                {"name": "errors", "metric": "error_rate", "max": 0.05, "action": "rollback"},
            ],
        }
    )


@pytest.fixture()
def served(tmp_path: Path, cfg: FieldloopConfig, kafka_bootstrap: str) -> Iterator[ServedRelease]:
    ensure_topic(kafka_bootstrap, TELEMETRY_TOPIC)
    with served_release(tmp_path / "home", cfg) as release:
        yield release


@pytest.fixture()
def site(served: ServedRelease, tmp_path: Path, cfg: FieldloopConfig, mlflow_uri: str) -> ctl.Site:
    log = RolloutLog(
        str(tmp_path / "lake" / "fleet" / "rollouts"), ResidencyGuard(["ap-northeast-1"], "ap-northeast-1")
    )
    # the session's broker (the served repository's private home has ports of its own)
    return ctl.Site(cfg, load_fleets().get(FLEET), served.repo, log, policy(), MlflowClient(mlflow_uri))


def approve(site: ctl.Site, model: str, **weights: float) -> int:
    """A registered version of ``model`` (a tiny vehicle model), attested as the guardrails would, approved."""
    client, fleet = site.client, site.fleet
    files = tiny_model(model=model, **weights)
    edge = {MODEL_FILE: files.onnx, MANIFEST_FILE: files.manifest_bytes}
    version, run_id = register_version(client, model, {f"edge/{n}": d for n, d in edge.items()})
    judged = verdict(model, version, fleet.task, fleet.tenant, [FLEET])
    log_bytes(client, run_id, ATTESTATION_ARTIFACT, attest_files(site.repo.keys, judged, edge))
    client.set_registered_model_alias(model, APPROVED, str(version))
    return version


def first_release(site: ctl.Site, model: str) -> int:
    version = approve(site, model)
    publish(site.repo, check(site.client, site.repo, model, version, site.fleet))
    first_champion(site.client, model, version, FLEET)
    return version


def fleet(served: ServedRelease, tmp_path: Path, bootstrap: str, **settings: Any) -> FleetRun:
    values = {
        "fleet": FLEET,
        "devices": DEVICES,
        "poll_s": POLL_S,
        "rate_hz": 5.0,
        "id_prefix": f"ro-{uuid.uuid4().hex[:6]}",
        **settings,
    }
    return FleetRun(
        FleetSettings(**values),
        root=served.repo.root_bytes(),
        repo_url=served.url,
        directory=tmp_path / "fleet",
        bootstrap=bootstrap,
    )


def cohort(rollout_id: str, share: float, devices: list[str]) -> set[str]:
    return {d for d in devices if cohort_position(rollout_id, d) < share}


def rollout_id_where(devices: list[str], ok: Any) -> str:
    """The first of it-0, it-1, ... whose cohorts satisfy ``ok`` (so a test knows them in advance)."""
    return next(r for r in (f"it-{i}" for i in range(1000)) if ok(r))


class Running:
    """A controller on its own thread, stoppable as a killed process would be (between two looks)."""

    def __init__(self, site: ctl.Site, clock: Any) -> None:
        self.decisions: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._controller = ctl.Controller(site, on_decision=lambda d: self.decisions.append((clock(), d)), every_s=0.2)
        self._thread = threading.Thread(target=self._controller.run, args=(self._stop.is_set,), daemon=True)
        self._thread.start()

    def kill(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_good_version_moves_through_every_stage_and_becomes_champion_even_across_a_controller_restart(
    site: ctl.Site, served: ServedRelease, tmp_path: Path
) -> None:
    model = f"test.rollout.{uuid.uuid4().hex[:8]}"
    v1 = first_release(site, model)
    run = fleet(served, tmp_path, site.cfg.kafka.bootstrap_servers)
    run.start()
    try:
        assert run.wait_for(lambda r: r.running() == {f"{model}@{v1}": DEVICES}, 30), run.running()
        v2 = approve(site, model, accel_gain=0.95)
        rid = rollout_id_where(run.device_ids, lambda r: len(cohort(r, 0.25, run.device_ids)) >= 3)
        run_offset = time.time() - run.elapsed()  # wall clock of the run's start
        ctl.begin(site, check(site.client, site.repo, model, v2, site.fleet), "test", rollout_id=rid)
        first = Running(site, run.elapsed)
        assert run.wait_for(lambda r: site.log.current(FLEET).last.stage == "canary", 60), site.log.rows(FLEET)
        first.kill()  # mid-stage: a new controller takes over from the audit table alone
        second = Running(site, run.elapsed)
        assert run.wait_for(lambda r: site.log.current(FLEET).done, 90), site.log.rows(FLEET)
        assert run.wait_for(lambda r: r.running() == {f"{model}@{v2}": DEVICES}, 30), run.running()
        second.kill()
    finally:
        run.stop()
    rows = site.log.rows(FLEET)
    assert site.log.current(FLEET).state == COMPLETED, [(r.action, r.reason) for r in rows]
    assert [(r.action, r.stage) for r in rows if r.action in (ADVANCE, COMPLETE)] == [
        (ADVANCE, "canary"),
        (ADVANCE, "all"),
        (COMPLETE, "all"),
    ]
    assert len({r.seq for r in rows}) == len(rows)
    advanced_all = next(r for r in rows if r.action == ADVANCE and r.stage == "all")
    # written before the pointer that gives it to the whole fleet: until then only the canary ran it
    all_at = advanced_all.at.timestamp() - run_offset
    canary = cohort(rid, 0.25, run.device_ids)
    early = [a for a in run.activations_to(f"{model}@{v2}") if a.at_s < all_at]
    assert early and {a.device for a in early} <= canary, (early, canary)
    assert site.client.get_model_version_by_alias(model, CHAMPION).version == str(v2)
    assert "replaced by" in site.client.get_model_version(model, str(v1)).tags[ctl.RETIRED_TAG]
    pointer = site.repo.pointer(FLEET)
    assert pointer.stage is None and pointer.active.version == v2
    assert advanced_all.figures["candidate"]["devices"] >= 2


def test_a_bad_version_is_halted_at_its_canary_and_every_device_returns_to_the_champion(
    site: ctl.Site, served: ServedRelease, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = f"test.rollout.{uuid.uuid4().hex[:8]}"
    v1 = first_release(site, model)
    offline_from, offline_for = 4.0, 40.0
    run = fleet(
        served,
        tmp_path,
        site.cfg.kafka.bootstrap_servers,
        faults=(Fault.parse(f"offline:0.5@{offline_from}+{offline_for}"),),
    )
    offline = {run.device_ids[i] for i in run.plan.devices("offline")}

    def cohorts_useful(rid: str) -> bool:  # a canary with online devices, and one offline device in it
        canary = cohort(rid, 0.25, run.device_ids)
        return (
            len(canary - offline) >= 3
            and len(canary & offline) >= 1
            and len(cohort(rid, 0.5, run.device_ids) - offline) >= 3
        )

    rid = rollout_id_where(run.device_ids, cohorts_useful)
    canary, champion, bad = cohort(rid, 0.25, run.device_ids), f"{model}@{v1}", None
    run.start()
    try:
        assert run.wait_for(lambda r: r.running() == {champion: DEVICES}, 30), run.running()
        assert run.elapsed() < offline_from, "the machine is too slow for this test's timing"
        v3 = approve(site, model, ood_bias=3.0)  # same commands, an OOD score over the threshold
        bad = f"{model}@{v3}"
        ctl.begin(site, check(site.client, site.repo, model, v3, site.fleet), "test", rollout_id=rid)
        controller = Running(site, run.elapsed)
        assert run.wait_for(lambda r: site.log.current(FLEET).done, 90), site.log.rows(FLEET)
        halted_at = controller.decisions[-1][0]
        back = canary - offline
        assert run.wait_for(lambda r: all(r.versions()[d] == champion for d in back), 30), run.versions()
        controller.kill()
        assert run.wait_for(lambda r: r.elapsed() > offline_from + offline_for + 2 * POLL_S, 60)
        assert run.wait_for(lambda r: r.running() == {champion: DEVICES}, 30), run.running()
    finally:
        run.stop()
    rollout = site.log.current(FLEET)
    assert rollout.state == ROLLED_BACK and rollout.last.action == ROLLBACK and rollout.last.stage == "canary"
    assert "fallbacks" in rollout.last.reason
    took_it = run.activations_to(bad)
    assert took_it and {a.device for a in took_it} <= canary - offline  # zero activations outside the cohort
    first_activation = min(a.at_s for a in took_it)
    all_back = max(a.at_s for a in run.activations_to(champion) if a.device in canary - offline)
    assert all_back >= halted_at
    # each canary device is back within a few of its update cycles after the rollback was signed
    assert all_back - halted_at <= 10 * POLL_S, (all_back - halted_at, POLL_S)
    with capsys.disabled():
        print(
            f"\n  bad canary: first activation at {first_activation:.2f} s, halted and signed at {halted_at:.2f} s, "
            f"whole canary back on the champion at {all_back:.2f} s: {all_back - first_activation:.2f} s from "
            f"first activation, {all_back - halted_at:.2f} s after the decision (poll {POLL_S} s)"
        )
    assert site.client.get_model_version_by_alias(model, CHAMPION).version == str(v1)
    pointer = site.repo.pointer(FLEET)
    assert pointer.stage is None and pointer.active.version == v1  # a newer pointer, naming the champion
