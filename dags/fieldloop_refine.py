"""Refine: turn new bronze versions into quality-checked, anonymized silver tables, and
silver into gold training datasets and aggregates.

Scheduled on the bronze assets: it runs whenever the ingest DAG has landed new data in
any bronze table. Runs `fieldloop refine` as its own Spark driver process. Each run
reads only the bronze versions added since the last one, quarantines rows failing their
stream's quality rules (`quarantine/<contract>_quality`), applies the stream's privacy
policy (keyed pseudonyms, generalization, k-anonymity) and writes a privacy report next
to every silver table; the task log prints it. A run with nothing new writes nothing and
announces nothing; otherwise it announces exactly the silver and gold tables that got a
new version (through the `fieldloop.changed.refine` alias), so the training DAG retrains
only the models whose gold datasets changed.

A failed run wrote nothing for the stream that failed: a quality gate names the rules
and devices to look at, a residency refusal names the location, a key error names the
key id and source (never the key).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import AssetAny, dag, task

from fieldloop.assets import bronze_assets, changed_alias
from fieldloop.config import load_config
from fieldloop.contracts import load_contracts

CFG = load_config()  # files and environment only: no network at parse time
CONTRACTS = load_contracts(CFG.contracts_dir, CFG.allowed_regions)
STAGE = "refine"


@dag(
    dag_id="fieldloop_refine",
    description="Refine new bronze rows into silver (quality, pseudonyms, anonymization) and gold",
    schedule=AssetAny(*bronze_assets(CONTRACTS)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs share each table's bronze watermark
    tags=["fieldloop", "refinement"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": pendulum.duration(minutes=2)},
)
def fieldloop_refine() -> None:
    @task(outlets=[changed_alias(STAGE)])
    def refine(*, outlet_events: Any = None) -> list[str]:
        """`fieldloop refine --json`; an asset event for each silver and gold table that got a new version."""
        from fieldloop.assets import announce, run_stage

        return announce(outlet_events, STAGE, run_stage([STAGE]))

    refine()


fieldloop_refine()
