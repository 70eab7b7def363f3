"""The rollout controller's decisions, on a real repository on disk and a real Delta audit table
(delta-rs), with telemetry handed in by the test (the Kafka feed is tested against a broker in
tests/integration/test_rollout.py) and a small stand-in for MLflow's aliases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actuation.contract import cohort_position, load_fleets
from actuation.errors import ReleaseError
from actuation.release.repository import Repository
from actuation.rollout import controller as ctl
from actuation.rollout.audit import (
    ADVANCE,
    COMPLETE,
    HOLD,
    PAUSE,
    PAUSED,
    ROLLBACK,
    ROLLED_BACK,
    RUNNING,
    START,
    RolloutLog,
)
from actuation.rollout.policy import RolloutPolicy
from actuation.signing import KeyStore
from fieldloop.registry import CHAMPION
from fieldloop.residency import ResidencyGuard
from tests.release_fixtures import approved_tiny, publish_tiny

pytestmark = pytest.mark.unit

FLEET = "public-cars"
MODEL = "fieldloop.vehicle-longitudinal"
DEVICES = [f"car-{i:03d}" for i in range(40)]


def policy(**stage_overrides: Any) -> RolloutPolicy:
    stage = {"min_devices": 2, "min_inferences": 10, "soak_s": 0.0} | stage_overrides
    return RolloutPolicy.model_validate(
        {
            "fleet": FLEET,
            "version": 1,
            "disagreement_threshold": 0.5,
            "stage": [
                {"name": "shadow", "mode": "shadow", "share": 0.5, **stage},
                {"name": "canary", "mode": "active", "share": 0.2, **stage},
                {"name": "all", "mode": "active", "share": 1.0, **stage},
            ],
            "gate": [
                {"name": "disagree", "metric": "shadow_disagreement_rate", "max": 0.2, "action": "pause"},
                {"name": "fallbacks", "metric": "intervention_rate", "max_increase": 0.05, "action": "rollback"},
                {"name": "latency", "metric": "latency_p99_ms", "max": 50, "action": "pause"},
            ],
        }
    )


class Aliases:
    """MLflow's alias and tag calls the controller makes, kept in dicts."""

    def __init__(self) -> None:
        self.aliases: dict[tuple[str, str], int] = {}
        self.tags: dict[tuple[str, int, str], str] = {}

    def get_model_version_by_alias(self, model: str, alias: str) -> Any:
        if (model, alias) not in self.aliases:
            raise LookupError(alias)
        return type("V", (), {"version": str(self.aliases[model, alias])})()

    def set_registered_model_alias(self, model: str, alias: str, version: str) -> None:
        self.aliases[model, alias] = int(version)

    def set_model_version_tag(self, model: str, version: str, key: str, value: str) -> None:
        self.tags[model, int(version), key] = value


class Feed:
    """Telemetry as the Kafka feed hands it over: each reader opened gets every record put in
    after its last drain, as each controller's own consumer of the topic would."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.readers: list[_Reader] = []

    def __call__(self, since: datetime) -> _Reader:
        reader = _Reader(self, len(self.pending))
        self.readers.append(reader)
        return reader


class _Reader:
    def __init__(self, feed: Feed, at: int) -> None:
        self.feed, self.at = feed, 0  # a stage's feed reads from the stage's start: everything

    def drain(self) -> list[dict[str, Any]]:
        out = self.feed.pending[self.at :]
        self.at = len(self.feed.pending)
        return out

    def close(self) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> ctl.Site:
    repo = Repository(tmp_path / "release", KeyStore(tmp_path / "home"), load_fleets())
    repo.init()
    publish_tiny(repo, FLEET, 1)  # the champion
    guard = ResidencyGuard(["ap-northeast-1"], "ap-northeast-1")
    log = RolloutLog(str(tmp_path / "lake" / "fleet" / "rollouts"), guard)
    cfg = type("Cfg", (), {"release": type("R", (), {"s3": None})()})()
    return ctl.Site(cfg, load_fleets().get(FLEET), repo, log, policy(), Aliases())


def record(device: str, version: int, *, intervention: bool = False, shadow: float | None = None) -> dict[str, Any]:
    return {
        "device_id": device,
        "fleet": FLEET,
        "model_name": MODEL,
        "model_version": str(version),
        "ts": datetime.now(UTC),
        "latency_ms": 2.0,
        "ood_score": 0.1,
        "disagreement": 0.0,
        "intervention": intervention,
        "update_state": "up-to-date",
        "shadow_version": None if shadow is None else "2",
        "shadow_disagreement": shadow,
        "shadow_ood_score": None,
        "error": None,
    }


def report(site: ctl.Site, feed: Feed, *, bad: bool = False, n: int = 10, devices: list[str] = DEVICES) -> None:
    """Each device reports ``n`` inferences of what the fleet's pointer gives it."""
    pointer = site.repo.pointer(FLEET)
    assert pointer is not None
    for device in devices:
        runs = pointer.release_for(device).version
        shadow = pointer.shadow_for(device)
        for i in range(n):
            feed.pending.append(
                record(
                    device,
                    runs,
                    intervention=bad and runs == 2 and i % 2 == 0,
                    shadow=(0.6 if bad else 0.1) if shadow else None,
                )
            )


def actions(site: ctl.Site) -> list[str]:
    return [d.action for d in site.log.rows(FLEET)]


def test_a_good_candidate_moves_through_every_stage_and_becomes_champion(site: ctl.Site) -> None:
    feed = Feed()
    controller = ctl.Controller(site, feed=feed, every_s=0)
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    pointer = site.repo.pointer(FLEET)
    assert pointer.stage.name == "shadow" and pointer.active.version == 1 and pointer.stage.candidate.version == 2
    seen = []
    for _ in range(10):
        report(site, feed)
        decision = controller.step()
        if decision:
            seen.append((decision.action, decision.stage))
        if site.log.current(FLEET).done:
            break
    assert seen == [(ADVANCE, "canary"), (ADVANCE, "all"), (COMPLETE, "all")]
    final = site.repo.pointer(FLEET)
    assert final.stage is None and final.active.version == 2
    assert site.client.aliases[MODEL, CHAMPION] == 2
    assert "replaced by" in site.client.tags[MODEL, 1, ctl.RETIRED_TAG]
    assert all(pointer.release_for(d).version == 2 for d in DEVICES for pointer in [final])


def test_a_candidate_that_misbehaves_in_its_canary_is_halted_and_the_fleet_rolled_back(site: ctl.Site) -> None:
    feed = Feed()
    controller = ctl.Controller(site, feed=feed, every_s=0)
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    report(site, feed)  # shadow: agrees well enough
    assert controller.step().action == ADVANCE
    report(site, feed, bad=True)  # canary: half its inferences fall back, the champion's none
    decision = controller.step()
    assert decision.action == ROLLBACK and decision.state == ROLLED_BACK and decision.stage == "canary"
    assert "fallbacks" in decision.reason and "intervention_rate 0.5" in decision.reason
    pointer = site.repo.pointer(FLEET)
    assert pointer.stage is None and pointer.active.version == 1
    assert (MODEL, CHAMPION) not in site.client.aliases
    failed = [g for g in decision.gates if not g["passed"]]
    assert [g["gate"] for g in failed] == ["fallbacks"] and failed[0]["champion"] == 0.0
    assert controller.step() is None  # it is over: nothing more is decided


def test_a_stage_with_too_few_reporting_devices_is_never_judged(site: ctl.Site) -> None:
    feed = Feed()
    controller = ctl.Controller(site, feed=feed, every_s=0)
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    shadowing = [d for d in DEVICES if site.repo.pointer(FLEET).shadow_for(d)]
    for _ in range(3):  # one shadowing device, however much it reports, and it disagrees badly
        report(site, feed, bad=True, n=50, devices=shadowing[:1] + [d for d in DEVICES if d not in shadowing])
        controller.step()
    rows = site.log.rows(FLEET)
    assert [r.action for r in rows] == [START, HOLD]
    assert rows[-1].state == RUNNING and "1 devices reporting (2 needed)" in rows[-1].reason
    assert site.repo.pointer(FLEET).stage.name == "shadow"


def test_a_device_outside_the_cohort_running_the_candidate_halts_the_rollout(site: ctl.Site) -> None:
    feed = Feed()
    controller = ctl.Controller(site, feed=feed, every_s=0)
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    report(site, feed)
    controller.step()  # -> canary
    stage = site.repo.pointer(FLEET).stage
    outsider = next(d for d in DEVICES if cohort_position(stage.rollout_id, d) >= stage.share)
    feed.pending.append(record(outsider, 2))
    decision = controller.step()
    assert decision.action == ROLLBACK and outsider in decision.reason


def test_a_shadow_that_disagrees_pauses_and_a_person_resumes_or_rolls_back(site: ctl.Site) -> None:
    feed = Feed()
    controller = ctl.Controller(site, feed=feed, every_s=0)
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    report(site, feed, bad=True)
    decision = controller.step()
    assert decision.action == PAUSE and decision.state == PAUSED and "disagree" in decision.reason
    report(site, feed)
    assert controller.step() is None  # paused: the fleet holds where it is
    assert site.repo.pointer(FLEET).stage.name == "shadow"
    with pytest.raises(ReleaseError, match="is paused, not running"):
        ctl.request(site, PAUSE, "cli:ops")
    ctl.request(site, "resume", "cli:ops", "looked at the shadow's cases")
    report(site, feed)
    assert controller.step().action == ADVANCE  # judged on figures since the resume
    ctl.request(site, ROLLBACK, "cli:ops", "manual")
    assert site.log.current(FLEET).state == ROLLED_BACK
    pointer = site.repo.pointer(FLEET)
    assert pointer.stage is None and pointer.active.version == 1
    with pytest.raises(ReleaseError, match="no rollout in progress"):
        ctl.request(site, ROLLBACK, "cli:ops")


def test_one_rollout_per_fleet_and_a_second_start_says_what_runs(site: ctl.Site) -> None:
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    with pytest.raises(ReleaseError, match=r"already rolling out fieldloop.vehicle-longitudinal version 2 .*shadow"):
        ctl.begin(site, approved_tiny(site.repo, FLEET, 3), "test")


def test_a_restarted_controller_resumes_without_repeating_or_skipping_a_step(site: ctl.Site) -> None:
    feed = Feed()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    report(site, feed)
    assert ctl.Controller(site, feed=feed, every_s=0).step().action == ADVANCE  # shadow -> canary, then killed
    report(site, feed)
    restarted = ctl.Controller(site, feed=feed, every_s=0)  # the replacement, from the audit table alone
    old = ctl.Controller(site, feed=feed, every_s=0)  # ... while the old one still runs

    class Racing:  # the old controller decides between the new one's look and its write
        def __getattr__(self, name: str) -> Any:
            return getattr(site.log, name)

        def append_if(self, fleet: str, decide: Any) -> Any:
            assert old.step().action == ADVANCE
            return site.log.append_if(fleet, decide)

    restarted.site = ctl.Site(site.cfg, site.fleet, site.repo, Racing(), site.policy, site.client)  # type: ignore[arg-type]
    assert restarted.step() is None  # it saw a decision it had not looked at: it looks again, later
    assert [(r.action, r.stage) for r in site.log.rows(FLEET)] == [(START, "shadow"), (ADVANCE, "canary"),
                                                                  (ADVANCE, "all")]  # fmt: skip
    report(site, feed)
    assert ctl.Controller(site, feed=feed, every_s=0).step().action == COMPLETE


def test_a_decision_whose_publish_was_lost_is_published_on_the_next_look(
    site: ctl.Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = Feed()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    report(site, feed)
    controller = ctl.Controller(site, feed=feed, every_s=0)
    monkeypatch.setattr(ctl, "_apply", lambda site, decision: None)  # killed between decision and publish
    assert controller.step().action == ADVANCE
    assert site.repo.pointer(FLEET).stage.name == "shadow"
    monkeypatch.undo()
    ctl.Controller(site, feed=feed, every_s=0).step()
    assert site.repo.pointer(FLEET).stage.name == "canary"
    assert actions(site) == [START, ADVANCE, HOLD]  # the canary waits for its own figures


def test_a_rollout_of_the_version_the_fleet_already_runs_is_refused(site: ctl.Site) -> None:
    with pytest.raises(ReleaseError, match=r"already runs \S+ version 1 \(its champion\)"):
        ctl.begin(site, approved_tiny(site.repo, FLEET, 1), "test")
    assert site.log.rows(FLEET) == []


def test_a_stage_that_never_gets_enough_devices_pauses_for_a_person_instead_of_waiting_forever(site: ctl.Site) -> None:
    site.policy = policy(max_wait_s=0.01)
    feed = Feed()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    controller = ctl.Controller(site, feed=feed, every_s=0)
    report(site, feed, devices=DEVICES[:1])
    decision = controller.step()
    assert decision.action == PAUSE and "max_wait_s" in decision.reason and "(2 needed)" in decision.reason
    assert site.repo.pointer(FLEET).stage.name == "shadow"  # the fleet holds where it is


@pytest.mark.parametrize("where", ["shadow", "canary", "all", "paused", "awaiting-approval"])
def test_a_person_rolls_back_from_any_stage_and_state(site: ctl.Site, where: str) -> None:
    site.policy = policy(approval=where == "awaiting-approval")
    feed = Feed()
    controller = ctl.Controller(site, feed=feed, every_s=0)
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    for _ in range({"shadow": 0, "canary": 1, "all": 2, "paused": 0, "awaiting-approval": 1}[where]):
        report(site, feed)
        controller.step()
    if where == "paused":
        ctl.request(site, PAUSE, "cli:ops")
    state = site.log.current(FLEET)
    assert (state.last.stage, state.state) == {
        "shadow": ("shadow", RUNNING),
        "canary": ("canary", RUNNING),
        "all": ("all", RUNNING),
        "paused": ("shadow", PAUSED),
        "awaiting-approval": ("shadow", "awaiting-approval"),
    }[where]
    decision = ctl.request(site, ROLLBACK, "cli:ops", "changed my mind")
    assert decision.state == ROLLED_BACK and decision.requested_by == "cli:ops"
    pointer = site.repo.pointer(FLEET)
    assert pointer.stage is None and pointer.active.version == 1
    assert all(pointer.release_for(d).version == 1 and pointer.shadow_for(d) is None for d in DEVICES)
