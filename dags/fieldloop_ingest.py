"""Ingest: land what the fleets sent to Kafka in bronze Delta, every 15 minutes.

Runs `fieldloop ingest` (available-now: drain Kafka, then stop) as its own Spark driver
process, so the worker only waits for it. Valid records land exactly once in
`bronze/<contract>`; invalid ones in `quarantine/<contract>` with a reason. It announces
only the bronze tables that got new rows (through the `fieldloop.changed.ingest` alias),
so the refinement DAG, scheduled on the bronze assets, runs only when there is something
to refine. Check the task log for the per-batch counts (consumed, new, duplicates,
quarantined by reason).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from fieldloop.assets import changed_alias

STAGE = "ingest"


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
    @task(outlets=[changed_alias(STAGE)])
    def land_bronze(*, outlet_events: Any = None) -> list[str]:
        """`fieldloop ingest --json`; an asset event for each bronze table that got new rows."""
        from fieldloop.assets import announce, run_stage

        return announce(outlet_events, STAGE, run_stage([STAGE]))

    land_bronze()


fieldloop_ingest()
