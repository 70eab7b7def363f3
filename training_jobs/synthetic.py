"""Synthetic rows in a task's gold layout, for benchmarks and tests (never for a model that ships).

Rows are laid out as :data:`fieldloop.datasets.TASK_LAYOUTS` says, as gold tables hold
them: one tuple per row in the column order of :data:`VEHICLE_COLUMNS` or
:data:`PLANT_COLUMNS`, ``features`` a window of ``layout.window`` frames of
``layout.signals`` (oldest first) then ``layout.extras``. The signals are made to be
learnable: a vehicle's acceleration follows a slow oscillation plus noise (so its value
``layout.horizon`` frames ahead can be predicted), a plant sensor reads a sine with noise
and rare spikes (flagged ``bad_quality``). Seeded: the same arguments give the same rows.

:func:`features_and_labels` gives the arrays the training job would read from such a
table (float32 features ``[N, D]`` and labels ``[N]``), without Spark or Delta.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from fieldloop.datasets import layout

T0 = datetime(2026, 11, 1, tzinfo=UTC)  # the first frame's time
VEHICLE_COLUMNS = ("_device", "ts", "features", "target", "intervention")
PLANT_COLUMNS = ("site", "line", "sensor_id", "unit", "ts", "features", "bad_quality")
FRAME_S = 0.2  # 5 Hz vehicle frames


def vehicle_rows(devices: int, frames: int, seed: int, prefix: str = "p1dev") -> list[tuple[Any, ...]]:
    """``vehicle-longitudinal`` rows (:data:`VEHICLE_COLUMNS`) of ``devices`` vehicles, about ``frames`` each."""
    rows_layout = layout("vehicle-longitudinal")
    window, horizon = rows_layout.window, rows_layout.horizon
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(devices):
        n = frames + window + horizon
        t = np.arange(n) * FRAME_S
        accel = 1.5 * np.sin(t * rng.uniform(0.3, 0.8) + rng.uniform(0, 6)) + rng.normal(0, 0.1, n)
        brake = np.clip(-accel / 3, 0, 1)
        signal = {
            "speed_mps": np.clip(10 + np.cumsum(accel) * FRAME_S, 0, 40),
            "accel_mps2": accel,
            "brake": brake,
            "steering_deg": rng.normal(0, 5, n),
        }
        signal["yaw_rate_dps"] = signal["steering_deg"] * 0.3 + rng.normal(0, 0.5, n)
        frames_by_signal = np.stack([signal[name] for name in rows_layout.signals], axis=1)
        for i in range(window - 1, n - horizon):
            history = frames_by_signal[i - window + 1 : i + 1].ravel()
            counts = rng.integers(0, 5, len(rows_layout.extras)).astype(float)  # perception counts
            rows.append(
                (
                    f"{prefix}{d:03d}",
                    T0 + timedelta(seconds=float(t[i])),
                    [float(v) for v in np.concatenate([history, counts])],
                    float(signal[rows_layout.target_signal][i + horizon]),
                    False,
                )
            )
    return rows


def plant_rows(sensors: int, readings: int, seed: int) -> list[tuple[Any, ...]]:
    """``plant-anomaly`` rows (:data:`PLANT_COLUMNS`) of ``sensors`` sensors with ``readings`` readings each."""
    window = layout("plant-anomaly").window
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sensors):
        values = np.sin(np.arange(readings) / 7.0) + rng.normal(0, 0.1, readings)
        spikes = rng.random(readings) < 0.03
        values[spikes] += rng.choice([-4.0, 4.0], spikes.sum())
        z = (values - values.mean()) / values.std()
        for i in range(window - 1, readings):
            rows.append(
                (
                    "JP-CHB-01",
                    "L1",
                    f"sensor-{s:02d}",
                    "degC",
                    T0 + timedelta(seconds=i),
                    [float(v) for v in z[i - window + 1 : i + 1]],
                    bool(spikes[i]),
                )
            )
    return rows


def features_and_labels(task: str, devices: int, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of :func:`vehicle_rows` or :func:`plant_rows` as the job reads them: float32
    ``features`` ``[N, D]`` and the layout's label column ``[N]``."""
    if task == "vehicle-longitudinal":
        rows, columns = vehicle_rows(devices, frames, seed), VEHICLE_COLUMNS
    elif task == "plant-anomaly":
        rows, columns = plant_rows(devices, frames, seed), PLANT_COLUMNS
    else:
        raise KeyError(f"no synthetic rows for task '{task}'; there are for vehicle-longitudinal, plant-anomaly")
    features, label = columns.index("features"), columns.index(layout(task).label_column)
    x = np.ascontiguousarray([r[features] for r in rows], dtype=np.float32)
    return x, np.asarray([float(r[label]) for r in rows], dtype=np.float32)
