"""A safety event in fleet telemetry starts an ingest run through the Kafka watcher, with real
Airflow (scheduler, triggerer, DAG processor) and a real broker: nobody triggers anything."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import requests

from fieldloop.stack.components import AirflowComponent

DAG = "fieldloop_ingest"
ASSET = "x-fieldloop://fleet/safety-events"


def _set_paused(airflow: AirflowComponent, token: str, paused: bool) -> None:
    resp = requests.patch(
        f"{airflow.url}/api/v2/dags/{DAG}",
        json={"is_paused": paused},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    resp.raise_for_status()


def test_an_intervention_reported_by_a_device_starts_an_ingest_run_that_lands_it(
    airflow: AirflowComponent, kafka_bootstrap: str, tmp_path: Path
) -> None:
    from deltalake import DeltaTable
    from kafka import KafkaAdminClient, KafkaProducer

    from fieldloop.contracts import load_contracts
    from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, default_registry, encode
    from ingestion.cloud.topics import apply_topics
    from tests.fleet_rows import telemetry_record

    contracts = load_contracts()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    apply_topics(admin, contracts)
    admin.close()
    telemetry = contracts["fleet-telemetry"]
    device = f"watch-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    seq = 0

    def report(intervention: bool) -> None:
        nonlocal seq
        record = telemetry_record(
            device,
            datetime.now(UTC),
            model_version="7",
            ood_score=0.9 if intervention else 0.1,
            disagreement=1.5 if intervention else 0.0,
            intervention=intervention,
        )
        headers = [
            (H_CLASS, b"public"),
            (H_CONTRACT, telemetry.id.encode()),
            (H_DEVICE, device.encode()),
            (H_SEQ, str(seq).encode()),
        ]
        value = encode(record, default_registry().get("telemetry", 3))
        producer.send(telemetry.topic, key=device.encode(), value=value, headers=headers)
        producer.flush()
        seq += 1

    token = airflow.token()
    (asset,) = [a for a in airflow.api("assets?limit=1000", token)["assets"] if a["uri"] == ASSET]
    _set_paused(airflow, token, False)
    try:
        # The watcher starts once the DAG processor has seen the DAG unpaused (it re-parses every
        # 30 s) and reads from the newest offset: report until its first event arrives.
        events: list[dict] = []
        deadline = time.monotonic() + 300
        while not events and time.monotonic() < deadline:
            report(False)
            report(False)
            report(True)
            time.sleep(3)
            token = airflow.token()
            events = airflow.api(f"assets/events?asset_id={asset['id']}&limit=100", token)["asset_events"]
        assert events, "no safety event raised within 300 s; see the triggerer's log under the home's logs/"
        for event in events:  # only the interventions raised it, and none names the device
            said = event["extra"]["payload"]  # the triggerer files what safety_event returned under payload
            assert event["extra"]["from_trigger"] is True, event
            assert said["reason"] == "intervention" and said["fleet"] == "public-cars", event
            assert said["model_version"] == "7"
            assert device not in repr(event)

        # the event started an ingest run on its own, which lands the device's reports in bronze
        runs: list[dict] = []
        while time.monotonic() < deadline + 600:
            token = airflow.token()
            runs = airflow.api(f"dags/{DAG}/dagRuns?run_type=asset_triggered&limit=10", token)["dag_runs"]
            if runs and all(r["state"] in ("success", "failed") for r in runs):
                break
            time.sleep(5)
        assert runs, "the safety event started no ingest run"
        assert [r["state"] for r in runs] == ["success"] * len(runs), runs
    finally:
        _set_paused(airflow, airflow.token(), True)
        producer.close()
    run_id = quote(runs[0]["dag_run_id"], safe="")
    consumed = airflow.api(f"dags/{DAG}/dagRuns/{run_id}", airflow.token()).get("consumed_asset_events", [])
    assert all(e["uri"] == ASSET for e in consumed), consumed
    rows = DeltaTable(f"{airflow.cfg.lake}/bronze/fleet_telemetry").to_pyarrow_table(columns=["_device_id"])
    assert device in set(rows.column("_device_id").to_pylist())
