"""Ingest: land what the fleets sent to Kafka in bronze Delta, every 15 minutes, and at once
when a device reports a safety event.

Runs `fieldloop ingest` (available-now: drain Kafka, then stop) as its own Spark driver
process, so the worker only waits for it. Valid records land exactly once in
`bronze/<contract>`; invalid ones in `quarantine/<contract>` with a reason. It announces
only the bronze tables that got new rows (through the `fieldloop.changed.ingest` alias),
so the refinement DAG, scheduled on the bronze assets, runs only when there is something
to refine. Check the task log for the per-batch counts (consumed, new, duplicates,
quarantined by reason).

Besides the clock, the asset `fieldloop.fleet.safety_events` starts a run: a watcher in the
triggerer reads the fleet telemetry topic and raises it the moment a device says its monitor
or a person overrode the model, or an inference failed (the event's extra names the fleet,
the model version and the reason). That run lands the hard-case windows the devices'
campaigns sent with it, so they reach gold and the next fine-tune without waiting for the
clock. To stop reacting to the field, pause this DAG: its watcher stops with it and the
telemetry waits in Kafka for the next run.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from fieldloop.assets import changed_alias, safety_events_asset
from fieldloop.config import load_config
from fieldloop.contracts import load_contracts

CFG = load_config()  # files and environment only: no network at parse time
CONTRACTS = load_contracts(CFG.contracts_dir, CFG.allowed_regions)
TELEMETRY = [c.topic for c in CONTRACTS.values() if c.stream == "telemetry"]
STAGE = "ingest"
EVERY_15_MIN = CronTriggerTimetable("*/15 * * * *", timezone="UTC")


@dag(
    dag_id="fieldloop_ingest",
    description="Land the fleets' Kafka records in bronze Delta, every 15 minutes and on a safety event",
    # a deployment without a telemetry stream has no safety events to react to
    schedule=AssetOrTimeSchedule(timetable=EVERY_15_MIN, assets=safety_events_asset(TELEMETRY))
    if TELEMETRY
    else EVERY_15_MIN,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one Spark driver at a time; runs share the checkpoint
    tags=["fieldloop", "ingestion"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", "retries": 3, "retry_delay": pendulum.duration(minutes=1)},
)
def fieldloop_ingest() -> None:
    @task(outlets=[changed_alias(STAGE)])
    def land_bronze(*, outlet_events: Any = None) -> list[str]:
        """`fieldloop ingest --json`; an asset event for each bronze table that got new rows."""
        from fieldloop.assets import announce, run_stage

        return announce(outlet_events, STAGE, run_stage([STAGE]))

    land_bronze()


fieldloop_ingest()
