"""The rollout trigger on the real Kafka broker, and the release DAG's stage tasks under Airflow
itself.

The trigger as the triggerer builds it (the deployment's config, the controller's Kafka feed
of the fleet's telemetry) waits while the shadow soaks and fires when the devices' reports
have carried it to the canary.

The stage tasks run under Airflow (`dag.test()`, which runs deferred tasks'
triggers in-process): each defers to the rollout trigger, whose controller opens the site
from the deployment's config (a private home: release repository, keys and the delta-rs
audit table), and acts on the event Airflow hands back.

The rollout is set up paused in its canary (its shadow passed on telemetry handed in, as in
tests/unit/test_rollout_controller.py), so no Kafka broker is needed: the controller reads
telemetry only while a stage runs. The shadow's task succeeds at once (its stage is past);
the canary's finds the rollout paused, says how to resume it and waits again, without a
worker slot, until a person's rollback fails it with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actuation.release.cli import open_repository
from actuation.rollout import controller as ctl
from actuation.rollout.audit import ROLLED_BACK
from actuation.rollout.feed import TELEMETRY_TOPIC
from actuation.rollout.trigger import StageTrigger
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.layout import DAGS_DIR
from fieldloop.wire import default_registry, encode
from tests.release_fixtures import approved_tiny, publish_tiny
from tests.unit.test_rollout_controller import Feed, report
from tests.unit.test_rollout_trigger import first_event

pytestmark = pytest.mark.integration

FLEET = "public-cars"


def test_the_trigger_follows_the_fleets_telemetry_on_kafka_and_fires_on_the_advance(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from kafka import KafkaProducer

    monkeypatch.setenv("FIELDLOOP_HOME", str(tmp_path / "home"))  # the broker stays the session's
    cfg = load_config()
    fieldloop = str(Path(sys.executable).parent / "fieldloop")
    subprocess.run([fieldloop, "topics", "apply"], env=dict(os.environ), capture_output=True, check=True, timeout=120)
    repo = open_repository(cfg)
    repo.init()
    publish_tiny(repo, FLEET, 1)  # the champion
    site = ctl.Site.open(cfg, FLEET)  # the packaged policy: the shadow soaks 20 s
    first = ctl.begin(site, approved_tiny(repo, FLEET, 2), "test")
    trigger = StageTrigger(FLEET, first.rollout_id, 0, poll_s=1.0)

    def devices_report() -> None:
        """Each device reports what the fleet's pointer gives it, on the telemetry topic."""
        reports, schema = Feed(), default_registry().get("telemetry", 3)
        report(site, reports)
        producer = KafkaProducer(**cfg.kafka.client_options())
        for record in reports.pending:
            producer.send(TELEMETRY_TOPIC, encode(record, schema))
        producer.flush()
        producer.close()

    async def scenario() -> dict:
        waiting = asyncio.ensure_future(first_event(trigger, timeout=120))
        await asyncio.sleep(5)
        assert not waiting.done(), "fired before any device reported"
        devices_report()
        return await waiting

    event = asyncio.run(scenario())
    assert (event["state"], event["stage"], event["last"]["action"]) == ("running", "canary", "advance")
    assert "shadow passed: every gate held" in event["last"]["reason"]
    assert repo.pointer(FLEET).stage.name == "canary"


# The probe DAG: the release DAG's stage operator for each stage of the fleet's policy, after a
# publish that names the rollout. Run as a script, it has a person roll the fleet back after
# a while and runs the DAG with dag.test(), printing each task's state.
PROBE_DAG = r"""
import importlib.util, json, os, sys, threading, time
import pendulum
from airflow.sdk import DAG, chain, task

from actuation.rollout.policy import load_policy

FLEET, ROLLOUT = os.environ["PROBE_FLEET"], os.environ["PROBE_ROLLOUT"]
spec = importlib.util.spec_from_file_location("fieldloop_release_dag", os.environ["PROBE_RELEASE_DAG"])
release = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release)

START = pendulum.datetime(2026, 1, 1, tz="UTC")
with DAG("release_stages_probe", schedule=None, start_date=START, catchup=False) as dag:
    @task(task_id="publish")
    def publish():
        return {"fleet": FLEET, "rollout": ROLLOUT, "first_release": False}

    stages = [
        release.RolloutStage(task_id=s.name, fleet=FLEET, stage=s.name, stage_index=i, publish_task="publish")
        for i, s in enumerate(load_policy(FLEET).stage)
    ]
    chain(publish(), *stages)


def person():
    from actuation.rollout import controller as ctl
    from fieldloop.config import load_config

    time.sleep(float(os.environ["PROBE_ROLLBACK_AFTER_S"]))
    ctl.request(ctl.Site.open(load_config(), FLEET), "rollback", "ops", "the storm got worse")


if __name__ == "__main__":
    threading.Thread(target=person, daemon=True).start()
    run = dag.test()
    print(json.dumps({ti.task_id: str(ti.state) for ti in run.get_task_instances()}))
"""


def paused_in_its_canary(cfg: FieldloopConfig) -> str:
    """A rollout on FLEET whose shadow passed, paused by a person in its canary; its id."""
    repo = open_repository(cfg)
    repo.init()
    publish_tiny(repo, FLEET, 1)  # the champion
    site = ctl.Site.open(cfg, FLEET)
    first = ctl.begin(site, approved_tiny(repo, FLEET, 2), "test")
    feed = Feed()
    controller = ctl.Controller(site, feed=feed)
    while site.log.current(FLEET).stage_index == 0:  # the packaged policy's shadow soaks 20 s
        report(site, feed)
        controller.step()
        time.sleep(0.5)
    ctl.request(site, "pause", "ops", "a storm over Osaka")
    return first.rollout_id


def test_stage_tasks_defer_to_the_controller_and_act_on_where_the_rollout_went(tmp_path: Path) -> None:
    home, airflow_home, dags = tmp_path / "home", tmp_path / "airflow", tmp_path / "dags"
    dags.mkdir()
    (dags / "release_stages_probe.py").write_text(PROBE_DAG)
    env = {
        **os.environ,
        "FIELDLOOP_HOME": str(home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(DAGS_DIR.parent), os.environ.get("PYTHONPATH", "")]),
        "PROBE_FLEET": FLEET,
        "PROBE_RELEASE_DAG": str(DAGS_DIR / "fieldloop_release.py"),
        "PROBE_ROLLBACK_AFTER_S": "15",
    }
    env["PROBE_ROLLOUT"] = paused_in_its_canary(load_config(env))
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    proc = subprocess.run(
        [sys.executable, str(dags / "release_stages_probe.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    states = json.loads(proc.stdout.strip().splitlines()[-1])
    assert states == {"publish": "success", "shadow": "success", "canary": "failed", "half": "upstream_failed",
                      "all": "upstream_failed"}  # fmt: skip
    assert "is PAUSED in stage canary" in out and f"rollout resume --fleet {FLEET}" in out  # what a person does
    assert "was rolled back: rollback at canary by ops: the storm got worse" in out
    assert ctl.Site.open(load_config(env), FLEET).log.current(FLEET).state == ROLLED_BACK
