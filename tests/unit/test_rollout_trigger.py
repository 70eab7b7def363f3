"""The rollout stage trigger, driving the real controller on a real repository on disk and a real
Delta audit table (delta-rs), with telemetry handed in by the test as in
tests/unit/test_rollout_controller.py; and the release DAG's stage task acting on its events."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actuation.contract import load_fleets
from actuation.release.repository import Repository
from actuation.rollout import controller as ctl
from actuation.rollout.audit import ADVANCE, AWAITING, PAUSED, ROLLBACK, ROLLED_BACK, RUNNING, RolloutLog
from actuation.rollout.trigger import ERROR, MOVED, StageTrigger
from actuation.signing import KeyStore
from fieldloop.layout import DAGS_DIR
from fieldloop.residency import ResidencyGuard
from tests.release_fixtures import approved_tiny, publish_tiny
from tests.unit.test_rollout_controller import FLEET, Aliases, Feed, policy, report

pytestmark = pytest.mark.unit

QUIET_S = 0.5  # how long a trigger must stay quiet to count as waiting


def make_site(tmp_path: Path, **stage: Any) -> ctl.Site:
    repo = Repository(tmp_path / "release", KeyStore(tmp_path / "home"), load_fleets())
    repo.init()
    publish_tiny(repo, FLEET, 1)  # the champion
    log = RolloutLog(
        str(tmp_path / "lake" / "fleet" / "rollouts"), ResidencyGuard(["ap-northeast-1"], "ap-northeast-1")
    )
    cfg = type("Cfg", (), {"release": type("R", (), {"s3": None})()})()
    return ctl.Site(cfg, load_fleets().get(FLEET), repo, log, policy(**stage), Aliases())


@pytest.fixture
def site(tmp_path: Path) -> ctl.Site:
    return make_site(tmp_path)


class Trigger(StageTrigger):
    """The trigger, its controller on the test's site and feed instead of the deployment's."""

    site: ctl.Site
    feed: Feed
    opened = 0

    def controller(self) -> ctl.Controller:
        type(self).opened += 1
        return ctl.Controller(self.site, feed=self.feed, every_s=0)


class Readers(Feed):
    """The test's telemetry, and whether each reader the controller opened was closed."""

    def __call__(self, since: Any) -> Any:
        reader = super().__call__(since)
        reader.closed = False
        reader.close = lambda: setattr(reader, "closed", True)
        return reader


def trigger_on(site: ctl.Site, feed: Feed, stage_index: int, waiting_in: str = RUNNING) -> Trigger:
    rollout = site.log.current(FLEET)
    assert rollout is not None
    Trigger.site, Trigger.feed, Trigger.opened = site, feed, 0
    return Trigger(FLEET, rollout.id, stage_index, waiting_in, poll_s=0.02, max_failures=3)


async def first_event(trigger: StageTrigger, timeout: float = 20) -> dict[str, Any]:
    async def one() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(one(), timeout)


async def quiet_then(trigger: StageTrigger, meanwhile: Any) -> dict[str, Any]:
    """The trigger's event, after checking it stays quiet for QUIET_S and then running ``meanwhile()``."""
    waiting = asyncio.ensure_future(first_event(trigger))
    await asyncio.sleep(QUIET_S)
    assert not waiting.done(), f"the trigger fired while the rollout stayed put: {waiting.result()}"
    meanwhile()
    return await waiting


def test_the_trigger_round_trips_through_its_serialized_form() -> None:
    trigger = StageTrigger("acme-plant", "v3-0123abcd", 1, PAUSED, poll_s=2.0, max_failures=5)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert classpath == "actuation.rollout.trigger.StageTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # what the triggerer stores
    assert rebuilt.serialize() == (classpath, kwargs)


def test_importing_the_trigger_loads_no_controller_lake_or_kafka_client() -> None:
    probe = (
        "import sys, actuation.rollout.trigger; "
        "print([m for m in ('deltalake', 'kafka', 'mlflow', 'pyarrow', 'actuation.rollout.controller') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_it_waits_while_the_stage_soaks_and_fires_when_the_controller_advances(site: ctl.Site) -> None:
    feed = Readers()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    event = asyncio.run(quiet_then(trigger_on(site, feed, 0), lambda: report(site, feed)))
    assert event["status"] == MOVED and event["state"] == RUNNING
    assert (event["stage"], event["stage_index"]) == ("canary", 1)
    assert event["last"]["action"] == ADVANCE and "shadow passed" in event["last"]["reason"]
    assert site.repo.pointer(FLEET).stage.name == "canary"  # the trigger's controller published it
    assert Trigger.opened == 1  # one controller for the whole wait
    deadline = time.monotonic() + 5
    while not all(r.closed for r in feed.readers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert feed.readers and all(r.closed for r in feed.readers)  # no Kafka reader left open after the wait


def test_the_controller_looks_with_the_triggers_context_so_its_decisions_reach_the_task_log(
    site: ctl.Site,
) -> None:
    import structlog

    seen: list[dict[str, Any]] = []

    class Seeing(Trigger):
        def controller(self) -> ctl.Controller:
            seen.append(structlog.contextvars.get_contextvars())
            return super().controller()

    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    feed = Feed()
    report(site, feed)
    trigger = trigger_on(site, feed, 0)

    async def as_the_triggerer_runs_it() -> dict[str, Any]:
        structlog.contextvars.bind_contextvars(trigger_id=7, task_id="public-cars.shadow")  # what routes the logs
        return await first_event(Seeing(**trigger.serialize()[1]))

    asyncio.run(as_the_triggerer_runs_it())
    assert seen == [{"trigger_id": 7, "task_id": "public-cars.shadow"}]


def test_a_rollback_in_its_stage_fires_with_the_decisions_reason(site: ctl.Site) -> None:
    feed = Feed()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    report(site, feed)
    asyncio.run(first_event(trigger_on(site, feed, 0)))  # shadow passed: now in the canary
    report(site, feed, bad=True)
    event = asyncio.run(first_event(trigger_on(site, feed, 1)))
    assert event["state"] == ROLLED_BACK and event["stage"] == "canary"
    assert event["last"]["action"] == ROLLBACK and "fallbacks" in event["last"]["reason"]
    assert site.repo.pointer(FLEET).stage is None  # the fleet is back on the champion


def test_a_persons_pause_fires_and_a_trigger_on_the_paused_rollout_waits_for_the_resume(site: ctl.Site) -> None:
    feed = Feed()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    event = asyncio.run(quiet_then(trigger_on(site, feed, 0), lambda: ctl.request(site, "pause", "ops", "a storm")))
    assert (event["state"], event["stage_index"]) == (PAUSED, 0) and event["last"]["reason"] == "a storm"

    report(site, feed)  # good figures change nothing while paused
    event = asyncio.run(quiet_then(trigger_on(site, feed, 0, PAUSED), lambda: ctl.request(site, "resume", "ops")))
    assert (event["state"], event["stage_index"]) == (RUNNING, 0)
    said = [(d.action, d.requested_by) for d in site.log.rows(FLEET)]
    assert said[said.index(("pause", "ops")) + 1] == ("resume", "ops")


def test_a_stage_whose_policy_asks_for_approval_fires_awaiting_it_and_waits_for_the_approval(tmp_path: Path) -> None:
    site, feed = make_site(tmp_path, approval=True), Feed()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    report(site, feed)
    event = asyncio.run(first_event(trigger_on(site, feed, 0)))
    assert (event["state"], event["stage_index"]) == (AWAITING, 0)
    assert f"rollout resume --fleet {FLEET}" in event["last"]["reason"]

    event = asyncio.run(quiet_then(trigger_on(site, feed, 0, AWAITING), lambda: ctl.request(site, "resume", "ops")))
    assert (event["state"], event["stage"]) == (RUNNING, "canary")


def test_a_trigger_for_a_later_stage_waits_until_the_rollout_reaches_it_and_leaves_it(site: ctl.Site) -> None:
    feed = Feed()
    ctl.begin(site, approved_tiny(site.repo, FLEET, 2), "test")
    trigger = trigger_on(site, feed, 1)  # the canary's task, while the rollout is still in its shadow

    async def scenario() -> dict[str, Any]:
        waiting = asyncio.ensure_future(first_event(trigger))
        await asyncio.sleep(QUIET_S)
        assert not waiting.done(), "fired before the rollout reached its stage"
        report(site, feed)
        while site.log.current(FLEET).stage_index < 1:  # the trigger's controller advances it
            await asyncio.sleep(0.05)
        await asyncio.sleep(QUIET_S)
        assert not waiting.done(), "fired while its own stage soaked"
        report(site, feed)
        return await waiting

    event = asyncio.run(scenario())
    assert (event["state"], event["stage"], event["stage_index"]) == (RUNNING, "all", 2)


def test_a_controller_that_cannot_look_ends_the_wait_with_an_error_event(site: ctl.Site) -> None:
    class Broken(StageTrigger):
        def controller(self) -> ctl.Controller:
            raise ConnectionError("the lake is unreachable")

    event = asyncio.run(first_event(Broken(FLEET, "v2-x", 0, poll_s=0.01, max_failures=3)))
    assert event == {"status": ERROR, "rollout": "v2-x", "error": "the lake is unreachable"}


# -- the release DAG's tasks: the stage task on each event, the plan of what to judge -------------
class TI:
    """A task instance's XCom, as the stage task uses it."""

    def __init__(self, started: dict[str, Any] | None) -> None:
        self.started, self.pushed = started, {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str) -> dict[str, Any] | None:
        assert task_ids == f"{FLEET}.publish"
        return self.started


@pytest.fixture(scope="module")
def release_dag() -> Any:
    spec = importlib.util.spec_from_file_location("fieldloop_release_dag", DAGS_DIR / "fieldloop_release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(state: str, stage_index: int, action: str, reason: str = "why", rollout: str = "v2-a") -> dict[str, Any]:
    last = {"action": action, "requested_by": "controller", "reason": reason, "seq": 3, "at": "", "model": "m"}
    return {"status": MOVED, "rollout": rollout, "state": state, "stage": "canary", "stage_index": stage_index,
            "last": last}  # fmt: skip


def test_the_stage_task_succeeds_fails_or_waits_again_by_where_the_rollout_went(release_dag: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

    stage = release_dag.RolloutStage(
        task_id="canary", fleet=FLEET, stage="canary", stage_index=1, publish_task=f"{FLEET}.publish"
    )
    context = {"ti": TI({"rollout": "v2-a"})}

    with pytest.raises(TaskDeferred) as deferred:
        stage.execute(context)
    assert deferred.value.trigger.serialize()[1] == {
        "fleet": FLEET,
        "rollout_id": "v2-a",
        "stage_index": 1,
        "waiting_in": RUNNING,
        "poll_s": release_dag.POLL_S,
        "max_failures": 12,
    }
    assert stage.moved(context, event(RUNNING, 2, ADVANCE))["stage"] == "canary"  # moved on: success
    assert stage.moved(context, event("complete", 1, "complete"))  # the last stage completed
    with pytest.raises(AirflowFailException, match="rolled back: rollback at canary by controller: fallbacks"):
        stage.moved(context, event(ROLLED_BACK, 1, ROLLBACK, "fallbacks"))
    for state in (PAUSED, AWAITING):
        with pytest.raises(TaskDeferred) as deferred:
            stage.moved(context, event(state, 1, "pause"))
        assert deferred.value.trigger.waiting_in == state  # waits for a person, no worker slot held
        assert context["ti"].pushed["where"]["state"] == state  # where it stands, in the UI's XCom tab
    with pytest.raises(AirflowFailException, match="no longer v2-a"):
        stage.moved(context, event(RUNNING, 1, "start", rollout="v3-b"))
    with pytest.raises(RuntimeError, match="could not look"):
        stage.moved(context, {"status": ERROR, "rollout": "v2-a", "error": "boom"})
    with pytest.raises(AirflowSkipException):
        stage.execute({"ti": TI({"rollout": None, "first_release": True})})


def test_the_release_dag_judges_each_new_candidate_of_the_tasks_once(release_dag: Any, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from fieldloop.registry import APPROVED, CANDIDATE, GUARDRAIL_TAG_PREFIX, TASK_TAG, TENANT_TAG

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    base, tenant, plant = (
        "fieldloop.vehicle-longitudinal",
        "fieldloop.vehicle-longitudinal.acme-mobility",
        "fieldloop.plant-anomaly",
    )
    for name, task in ((base, "vehicle-longitudinal"), (tenant, "vehicle-longitudinal"), (plant, "plant-anomaly")):
        client.create_registered_model(
            name, tags={TASK_TAG: task} | ({TENANT_TAG: "acme-mobility"} if name == tenant else {})
        )
        for _ in range(2):
            client.create_model_version(name, source=str(tmp_path))
    client.set_registered_model_alias(base, CANDIDATE, "2")  # new: not judged yet
    client.set_registered_model_alias(tenant, CANDIDATE, "2")  # judged already (a fail)
    client.set_model_version_tag(tenant, "2", GUARDRAIL_TAG_PREFIX + "verdict", "fail")
    client.set_registered_model_alias(plant, CANDIDATE, "1")  # another task's
    client.set_registered_model_alias(base, APPROVED, "1")

    assert release_dag.unjudged_candidates(client, ["vehicle-longitudinal"]) == [{"model": base, "version": 2}]
    assert release_dag.unjudged_candidates(client, ["plant-anomaly", "vehicle-longitudinal"]) == [
        {"model": plant, "version": 1},
        {"model": base, "version": 2},
    ]


def test_publish_ships_a_first_release_starts_a_rollout_or_follows_the_one_it_started(
    release_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from actuation.release.cli import open_repository
    from fieldloop.config import load_config

    monkeypatch.setenv("FIELDLOOP_HOME", str(tmp_path / "home"))
    commands: list[list[str]] = []

    def run_stage(argv: list[str]) -> dict[str, Any]:  # the CLI, as far as _ship needs it
        commands.append(argv)
        return {"changed": True} if argv[0] == "release" else {"rollout_id": "v2-cli", "reason": "policy"}

    monkeypatch.setattr(release_dag, "run_stage", run_stage)
    model = "fieldloop.vehicle-longitudinal"
    repo = open_repository(load_config())
    repo.init()

    shipped = release_dag._ship(FLEET, model, 1)  # the fleet runs nothing: its first release, no stages
    assert shipped["first_release"] and shipped["rollout"] is None
    assert commands.pop() == ["release", "publish", "--model", model, "--version", "1", "--fleet", FLEET]

    publish_tiny(repo, FLEET, 1)
    with pytest.raises(AirflowSkipException, match="already runs"):
        release_dag._ship(FLEET, model, 1)
    assert release_dag._ship(FLEET, model, 2)["rollout"] == "v2-cli"  # a champion runs: a staged rollout
    assert commands.pop() == ["rollout", "start", "--model", model, "--version", "2", "--fleet", FLEET, "--no-follow"]

    site = ctl.Site.open(load_config(), FLEET)
    started = ctl.begin(site, approved_tiny(repo, FLEET, 2), "a first try of this task")
    assert release_dag._ship(FLEET, model, 2)["rollout"] == started.rollout_id  # a retry follows it
    assert commands == []


def test_champion_finishes_a_completion_whose_mlflow_step_was_lost_and_confirms_the_alias(
    release_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from actuation.release.cli import open_repository
    from fieldloop.config import load_config
    from fieldloop.registry import CHAMPION

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("FIELDLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIELDLOOP_MLFLOW_TRACKING_URI", uri)
    model, client = "fieldloop.vehicle-longitudinal", MlflowClient(uri)
    client.create_registered_model(model)
    for _ in range(2):
        client.create_model_version(model, source=str(tmp_path))
    cfg = load_config()
    repo = open_repository(cfg)
    repo.init()
    publish_tiny(repo, FLEET, 1)
    # the rollout completes under a controller whose MLflow calls are lost (a stand-in that keeps them)
    site = ctl.Site(cfg, load_fleets().get(FLEET), repo, RolloutLog.for_config(cfg), policy(), Aliases())
    ctl.begin(site, approved_tiny(repo, FLEET, 2), "test")
    feed = Feed()
    controller = ctl.Controller(site, feed=feed, every_s=0)
    while not site.log.current(FLEET).done:
        report(site, feed)
        controller.step()
    assert site.log.current(FLEET).state == "complete"

    shipped = {"fleet": FLEET, "model": model, "version": 2, "rollout": site.log.current(FLEET).id}
    champion = release_dag._champion_task(load_fleets().get(FLEET)).function
    done = champion(ti=type("TI", (), {"xcom_pull": lambda self, task_ids: shipped | {"first_release": False}})())
    assert done["champion"] == 2
    assert int(client.get_model_version_by_alias(model, CHAMPION).version) == 2
