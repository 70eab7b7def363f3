"""Ingest: land what the fleets sent to Kafka in bronze Delta, every 15 minutes.

Runs `fieldloop ingest` (available-now: drain Kafka, then stop) as its own Spark driver
process, so the worker only waits for it. Valid records land exactly once in
`bronze/<contract>`; invalid ones in `quarantine/<contract>` with a reason. On success it
updates the bronze assets that the refinement DAG is scheduled on. Check the task log
for the per-batch counts (consumed, new, duplicates, quarantined by reason).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from fieldloop.assets import bronze_assets
from fieldloop.config import load_config
from fieldloop.contracts import load_contracts

FIELDLOOP = Path(sys.executable).parent / "fieldloop"
CFG = load_config()  # files and environment only: no network at parse time
CONTRACTS = load_contracts(CFG.contracts_dir, CFG.allowed_regions)


@dag(
    dag_id="fieldloop_ingest",
    schedule="*/15 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one Spark driver at a time; runs share the checkpoint
    tags=["fieldloop", "ingestion"],
    doc_md=__doc__,
    default_args={"retries": 3, "retry_delay": pendulum.duration(minutes=1)},
)
def fieldloop_ingest() -> None:
    @task.bash(outlets=bronze_assets(CONTRACTS))
    def land_bronze() -> str:
        return f"{FIELDLOOP} ingest"

    land_bronze()


fieldloop_ingest()
