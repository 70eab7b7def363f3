"""Refine: turn new bronze versions into quality-checked, anonymized silver tables, and
silver into gold training datasets and aggregates.

Scheduled on the bronze assets: it runs whenever the ingest DAG has landed new data in
any bronze table; it updates the silver and gold assets (the training DAG waits on the
gold ones). Runs `fieldloop refine` as its own Spark driver process. Each run
reads only the bronze versions added since the last one, quarantines rows failing their
stream's quality rules (`quarantine/<contract>_quality`), applies the stream's privacy
policy (keyed pseudonyms, generalization, k-anonymity) and writes a privacy report next
to every silver table; the task log prints it. A run with nothing new writes nothing.

A failed run wrote nothing for the stream that failed: a quality gate names the rules
and devices to look at, a residency refusal names the location, a key error names the
key id and source (never the key).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pendulum
from airflow.sdk import AssetAny, dag, task

from fieldloop.assets import bronze_assets, gold_assets, table_asset
from fieldloop.config import load_config
from fieldloop.contracts import load_contracts
from refinement.policy import output_tables

FIELDLOOP = Path(sys.executable).parent / "fieldloop"
CFG = load_config()  # files and environment only: no network at parse time
CONTRACTS = load_contracts(CFG.contracts_dir, CFG.allowed_regions)


@dag(
    dag_id="fieldloop_refine",
    schedule=AssetAny(*bronze_assets(CONTRACTS)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs share each table's bronze watermark
    tags=["fieldloop", "refinement"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=2)},
)
def fieldloop_refine() -> None:
    @task.bash(
        outlets=[table_asset("silver", name) for name in output_tables(CFG.refine.policies_dir)]
        + gold_assets(CONTRACTS)
    )
    def refine_silver() -> str:
        return f"{FIELDLOOP} refine"

    refine_silver()


fieldloop_refine()
