"""Ingest: land what the fleets sent to Kafka in bronze Delta, every 15 minutes, and at once
when a device reports a safety event, sends a hard case, or a rollout completes.

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
clock.

**The loop closes here.** Two more kinds of asset start a run. `fieldloop.fleet.hard_cases`
is raised by a second watcher, on the hard-case topics (`fieldloop.public.hard_cases.v1`,
`fieldloop.restricted.<tenant>.hard_cases.v1`), each time a device sends home a window its
fleet's campaign asked for (the event names the fleet, campaign, trigger and model version,
never the device). `fieldloop.rollouts.<fleet>` is announced by the release DAG's `champion`
task when a version became a fleet's champion: from then on its cars send hard cases under
the campaign the release signed. A run lands them in `bronze/hard_cases_*`; refine builds
`gold/hard_cases_*`; train fine-tunes the champion with them; release rolls the result out:
the asset graph is a cycle. A run that found nothing new announces nothing, so the cycle
stops by itself when the field is quiet.

**To stop the loop**, pause this DAG (`airflow dags pause fieldloop_ingest`, or the toggle in
the UI): its watchers stop with it, the records wait in Kafka, and nothing downstream starts.
To stop only the field's hard cases from coming home, stop the fleet's campaign
(`fieldloop campaign stop`). Pausing `fieldloop_train` or `fieldloop_release` instead stops
new models, or their rollouts, while the lake keeps filling.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import AssetAny, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from actuation.contract import load_fleets
from fieldloop.assets import changed_alias, hard_cases_asset, rollout_asset, safety_events_asset
from fieldloop.config import load_config
from fieldloop.contracts import load_contracts

CFG = load_config()  # files and environment only: no network at parse time
CONTRACTS = load_contracts(CFG.contracts_dir, CFG.allowed_regions)
TELEMETRY = [c.topic for c in CONTRACTS.values() if c.stream == "telemetry"]
HARD_CASES = sorted(c.topic for c in CONTRACTS.values() if c.stream == "hard_cases")
FLEETS = [f.name for f in load_fleets().fleet]  # files only
STAGE = "ingest"
EVERY_15_MIN = CronTriggerTimetable("*/15 * * * *", timezone="UTC")
# What the field says starts a run too; a deployment without telemetry or hard-case streams has
# no watcher to run, and one without fleets no rollouts.
FIELD = [
    *([safety_events_asset(TELEMETRY)] if TELEMETRY else []),
    *([hard_cases_asset(HARD_CASES)] if HARD_CASES else []),
    *[rollout_asset(fleet) for fleet in FLEETS],
]


@dag(
    dag_id="fieldloop_ingest",
    description=(
        "Land the fleets' Kafka records in bronze Delta, every 15 minutes and on a safety event, "
        "a hard case or a completed rollout"
    ),
    schedule=AssetOrTimeSchedule(timetable=EVERY_15_MIN, assets=AssetAny(*FIELD)) if FIELD else EVERY_15_MIN,
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
