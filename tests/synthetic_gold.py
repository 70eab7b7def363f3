"""Gold tables written by Spark in the refinement jobs' layout, from synthetic devices.

The training tests need gold tables of chosen classes, tenants and contracts (including
ones refinement would never write, to prove the training rule refuses them), and enough
rows to learn from. Rows follow ``refinement/gold.py``: vehicle windows are 10 frames of
(speed, accel, brake, steering, yaw rate) plus 3 perception counts, target = acceleration
5 frames later; plant windows are 10 z-scored readings with a ``bad_quality`` flag.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from fieldloop.classes import DataClass
from fieldloop.lineage import TableGovernance
from fieldloop.spark import create_table

VEHICLE_SCHEMA = "_device STRING, ts TIMESTAMP, features ARRAY<DOUBLE>, target DOUBLE, intervention BOOLEAN"
PLANT_SCHEMA = (
    "site STRING, line STRING, sensor_id STRING, unit STRING, ts TIMESTAMP, features ARRAY<DOUBLE>, bad_quality BOOLEAN"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def vehicle_rows(devices: int, frames: int, seed: int, prefix: str = "p1dev") -> list[tuple[Any, ...]]:
    """Windows from devices whose acceleration follows a slow oscillation plus noise (learnable 1 s ahead)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(devices):
        n = frames + 15
        t = np.arange(n) * 0.2
        accel = 1.5 * np.sin(t * rng.uniform(0.3, 0.8) + rng.uniform(0, 6)) + rng.normal(0, 0.1, n)
        speed = np.clip(10 + np.cumsum(accel) * 0.2, 0, 40)
        brake = np.clip(-accel / 3, 0, 1)
        steer = rng.normal(0, 5, n)
        yaw = steer * 0.3 + rng.normal(0, 0.5, n)
        signals = np.stack([speed, accel, brake, steer, yaw], axis=1)
        for i in range(9, n - 5):
            window = signals[i - 9 : i + 1].ravel()
            counts = rng.integers(0, 5, 3).astype(float)
            rows.append(
                (
                    f"{prefix}{d:03d}",
                    T0 + timedelta(seconds=float(t[i])),
                    [float(v) for v in np.concatenate([window, counts])],
                    float(accel[i + 5]),
                    False,
                )
            )
    return rows


def plant_rows(sensors: int, readings: int, seed: int) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sensors):
        values = np.sin(np.arange(readings) / 7.0) + rng.normal(0, 0.1, readings)
        spikes = rng.random(readings) < 0.03
        values[spikes] += rng.choice([-4.0, 4.0], spikes.sum())
        z = (values - values.mean()) / values.std()
        for i in range(9, readings):
            rows.append(
                (
                    "JP-CHB-01",
                    "L1",
                    f"sensor-{s:02d}",
                    "degC",
                    T0 + timedelta(seconds=i),
                    [float(v) for v in z[i - 9 : i + 1]],
                    bool(spikes[i]),
                )
            )
    return rows


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
