"""Gold tables written by Spark with fieldloop's governance properties, from synthetic rows.

The training tests need gold tables of chosen classes, tenants and contracts (including
ones refinement would never write, to prove the training rule refuses them). The rows
come from :mod:`training_jobs.synthetic` (a task's gold layout); the schemas below are
its column orders, as refinement writes them.
"""

from __future__ import annotations

from typing import Any

from fieldloop.classes import DataClass
from fieldloop.lineage import TableGovernance
from fieldloop.spark import create_table

# Column order of training_jobs.synthetic.VEHICLE_COLUMNS and PLANT_COLUMNS.
VEHICLE_SCHEMA = "_device STRING, ts TIMESTAMP, features ARRAY<DOUBLE>, target DOUBLE, intervention BOOLEAN"
PLANT_SCHEMA = (
    "site STRING, line STRING, sensor_id STRING, unit STRING, ts TIMESTAMP, features ARRAY<DOUBLE>, bad_quality BOOLEAN"
)


def write_gold(
    spark: Any,
    lake: str,
    name: str,
    rows: list[tuple[Any, ...]],
    schema: str,
    data_class: DataClass,
    contract: str,
    tenant: str | None = None,
    task: str = "vehicle-longitudinal",
) -> str:
    """A gold table at ``<lake>/gold/<name>`` with fieldloop's governance properties; returns its path."""
    path = f"{lake}/gold/{name}"
    df = spark.createDataFrame(rows, schema)
    gov = TableGovernance(data_class, contract, "ap-northeast-1", appi_level="pseudonymized", tenant=tenant)
    create_table(
        spark, path, df.schema, {**gov.to_delta_properties(), "fieldloop.layer": "gold", "fieldloop.task": task}
    )
    df.write.format("delta").mode("overwrite").save(path)
    return path
