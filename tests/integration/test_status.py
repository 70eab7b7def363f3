"""``fieldloop status --json`` as a person runs it, against the real stack: a registered version
in the real MLflow server with its lineage and verdict, a real signed release repository
served by nginx (with campaigns signed into it by ``fieldloop campaign create|stop``), a gold
Delta table and the Delta rollout audit table."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from actuation.rollout.audit import COMPLETE, COMPLETED, ROLLBACK, ROLLED_BACK, START, Decision, RolloutLog
from actuation.rollout.policy import load_policy
from fieldloop.config import FieldloopConfig
from fieldloop.lineage import ModelLineage, TableGovernance, TableLineage
from fieldloop.registry import CHAMPION, GUARDRAIL_TAG_PREFIX
from tests.release_fixtures import publish_tiny, register_version, served_release

GOLD = "vehicle_longitudinal_public"


def decision(model: str, version: int, fleet: str, action: str, state: str) -> Decision:
    """A decision as the controller records it (the log numbers it)."""
    return Decision(
        rollout_id=f"r-{fleet}",
        seq=0,
        at=datetime.now(UTC),
        fleet=fleet,
        model=model,
        version=version,
        champion_model=model,
        champion_version=version,
        stage="all",
        stage_index=2,
        mode="active",
        share=1.0,
        action=action,
        state=state,
        requested_by="controller",
        reason=f"{action} for the status test",
    )


@pytest.fixture()
def model(mlflow_uri: str) -> Iterator[str]:
    """A registered model name of the fieldloop.* family, deleted afterwards: it would show on
    every later `fieldloop status` of this server."""
    name = f"fieldloop.status-test-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(MlflowException):
        MlflowClient(mlflow_uri).delete_registered_model(name)


def test_status_json_reads_the_real_stack(
    tmp_path: Path, cfg: FieldloopConfig, mlflow_uri: str, release_server: str, model: str
) -> None:
    with served_release(tmp_path / "home", cfg) as served:
        private = served.cfg
        gold = f"{private.lake}/gold/{GOLD}"
        write_deltalake(gold, pa.table({"target": [0.1, 0.2, 0.3]}))
        landed = datetime.fromtimestamp(DeltaTable(gold).history(1)[0]["timestamp"] / 1000, UTC)

        # a version trained on that table, judged, champion of public-cars
        client = MlflowClient(mlflow_uri)
        version, _ = register_version(client, model, {"edge/readme.txt": b"status test"}, approve=False)
        gov = TableGovernance("public", "vehicle-frames-public", "ap-northeast-1")  # type: ignore[arg-type]
        lineage = ModelLineage([TableLineage.of(f"gold/{GOLD}", gold, 0, gov)])
        for key, value in {**lineage.to_mlflow_tags(), GUARDRAIL_TAG_PREFIX + "verdict": "pass"}.items():
            client.set_model_version_tag(model, str(version), key, value)
        client.set_registered_model_alias(model, CHAMPION, str(version))
        publish_tiny(served.repo, "public-cars", version=version, model=model)

        # its rollout completed on public-cars; another was rolled back on acme-vans
        log = RolloutLog.for_config(private)
        for fleet, action, state in (
            ("public-cars", START, "running"),
            ("public-cars", COMPLETE, COMPLETED),
            ("acme-vans", START, "running"),
            ("acme-vans", ROLLBACK, ROLLED_BACK),
        ):
            made = decision(model, version, fleet, action, state)
            log.append_if(fleet, lambda rows, made=made: made)
        completed = log.current("public-cars").last.at

        env = {
            **os.environ,
            "FIELDLOOP_HOME": str(private.home),
            "FIELDLOOP_KAFKA_PORT": str(private.kafka.port),
            "FIELDLOOP_KAFKA_CONTROLLER_PORT": str(private.kafka.controller_port),
            "FIELDLOOP_MLFLOW_PORT": str(private.mlflow.port),
            "FIELDLOOP_MLFLOW_TRACKING_URI": mlflow_uri,
            "FIELDLOOP_AIRFLOW_PORT": str(private.airflow.port),
            "FIELDLOOP_RELEASE_PORT": str(private.release.port),
        }
        env.pop("FIELDLOOP_KAFKA_BOOTSTRAP", None)

        # campaigns as a person signs them: one running on acme-vans, one stopped on public-cars
        def fieldloop(*args: str) -> dict:
            done = subprocess.run(
                [sys.executable, "-m", "fieldloop.cli.main", *args, "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        running = fieldloop("campaign", "create", "--fleet", "acme-vans", "--trigger", "ood>=0.8")
        stopped = fieldloop("campaign", "create", "--fleet", "public-cars", "--trigger", "fallback", "--expires", "7d")
        fieldloop("campaign", "stop", "--id", stopped["id"])
        listed = {c["id"]: c for c in fieldloop("campaign", "list")}

        t0 = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "fieldloop.cli.main", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        took = time.monotonic() - t0
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    print(f"fieldloop status --json took {took:.1f} s")

    stack = {c["name"]: c["healthy"] for c in status["stack"]["components"]}
    assert stack == {"kafka": False, "mlflow": False, "airflow": False, "release": True}  # the private home's own
    [table] = [t for t in status["lake"]["tables"] if t["name"] == GOLD]
    assert table["last_data_version"] == 0 and table["age_s"] >= 0

    [registered] = [m for m in status["models"]["models"] if m["name"] == model]
    assert registered["aliases"] == [{"alias": "champion", "version": version, "verdict": "pass"}]

    fleets = {f["name"]: f for f in status["fleets"]["fleets"]}
    cars = fleets["public-cars"]
    assert cars["champion"] == {"model": model, "version": version, "verdict": "pass"}
    assert (cars["rollout"]["state"], cars["stage"], cars["expired_roles"]) == ("complete", None, [])
    assert fleets["acme-vans"]["rollout"]["state"] == "rolled-back"
    assert fleets["acme-vans"]["champion"] is None

    assert [(i["kind"], i["where"]) for i in status["incidents"]["incidents"]] == [("rollback", "acme-vans")]
    kpis = status["kpis"]
    assert kpis["readiness"]["value"] == 1 / 3 and kpis["readiness"]["parts"]["public-cars"] == "ready"
    assert kpis["incidents_24h"]["value"] == 1
    assert kpis["loop_closure"]["value"] == (completed - landed).total_seconds()
    assert f"gold/{GOLD}@v0" in kpis["loop_closure"]["detail"]

    campaigns = {f["fleet"]: f for f in status["campaigns"]["fleets"]}
    assert set(campaigns) == set(fleets)
    assert campaigns["acme-plant"] == {"fleet": "acme-plant", "active": 0, "campaigns": []}
    # besides the person's, each fleet runs what its releases asked for: its rollout policy's campaign
    asked = load_policy("public-cars").campaign.trigger
    for fleet, mine in (("acme-vans", running), ("public-cars", stopped)):
        rows = campaigns[fleet]["campaigns"]
        assert all((c["trigger"], c["state"]) == (asked, "active") for c in rows if c["id"] != mine["id"]), rows
        assert campaigns[fleet]["active"] == sum(c["state"] == "active" for c in rows)
    assert [c["trigger"] for c in campaigns["public-cars"]["campaigns"]].count(asked) == 1  # asked once, not per step
    van = {c["id"]: c for c in campaigns["acme-vans"]["campaigns"]}[running["id"]]
    car = {c["id"]: c for c in campaigns["public-cars"]["campaigns"]}[stopped["id"]]
    assert (van["id"], van["state"], van["trigger"]) == (running["id"], "active", "ood>=0.8")
    assert (car["id"], car["state"], car["trigger"]) == (stopped["id"], "stopped", "fallback")
    assert van == listed[van["id"]] and car == listed[car["id"]]  # the rows `fieldloop campaign list` prints
    assert status["campaigns"]["missing"] == []
