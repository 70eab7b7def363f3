"""Airflow 3 from `stack up`: the API is healthy, our DAGs are parsed, and a DAG runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import requests

from fieldloop.layout import DAGS_DIR
from fieldloop.stack.components import AirflowComponent


def test_api_reports_every_component_healthy(airflow: AirflowComponent) -> None:
    report = requests.get(f"{airflow.url}/api/v2/monitor/health", timeout=10).json()
    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert report[part]["status"] == "healthy", report


def test_api_lists_every_dag_file_and_no_import_errors(airflow: AirflowComponent) -> None:
    token = airflow.token()
    dag_ids = {d["dag_id"] for d in airflow.api("dags?limit=1000", token)["dags"]}
    expected = {p.stem for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_")}
    assert expected and expected <= dag_ids
    assert airflow.api("importErrors", token)["total_entries"] == 0


def test_wrong_password_is_refused(airflow: AirflowComponent) -> None:
    resp = requests.post(f"{airflow.url}/auth/token", json={"username": "admin", "password": "wrong"}, timeout=10)
    assert resp.status_code == 401


def test_stack_health_dag_runs_against_the_stack(airflow: AirflowComponent, tmp_path: Path) -> None:
    airflow_cli = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.run([airflow_cli, "dags", "test", "fieldloop_stack_health"],
                          env=airflow.env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    # `dags test` records its run in the metadata DB: every task must have succeeded.
    token = airflow.token()
    runs = airflow.api("dags/fieldloop_stack_health/dagRuns?order_by=-run_after&limit=1", token)["dag_runs"]
    assert runs and runs[0]["state"] == "success", runs
    run_id = quote(runs[0]["dag_run_id"], safe="")
    tasks = airflow.api(f"dags/fieldloop_stack_health/dagRuns/{run_id}/taskInstances", token)["task_instances"]
    states = {t["task_id"]: t["state"] for t in tasks}
    assert states == {t: "success" for t in ("contracts", "lake_residency", "kafka_topics", "mlflow_experiments")}
