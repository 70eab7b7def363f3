"""Where a device's input frames come from.

On a vehicle the frames come from its CAN bus and perception stack, on a plant from its
sensors; here, until a device wires its own, from the fleet simulator's car or blast-furnace
sensor, the same physics whose frames gold's training rows were built from. A source is any
iterable of frame records (``dict`` as the stream's Avro schema has them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from actuation.agent.errors import DeviceError

SIMULATED_TASKS = ("vehicle-longitudinal", "plant-anomaly")


def simulated_frames(task: str, rate_hz: float, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Endless frames of one simulated device of ``task`` at ``rate_hz`` (a car, or a blast-furnace
    sensor), device-clock timestamps from now."""
    if task not in SIMULATED_TASKS:
        raise DeviceError(
            f"no simulated input for task {task}; the agent simulates {', '.join(SIMULATED_TASKS)} "
            "(a device of another task feeds its own frames to Agent.infer)"
        )
    import numpy as np

    from ingestion.simulator import load_layout
    from ingestion.simulator.furnace import FurnaceSensor
    from ingestion.simulator.vehicle import Vehicle

    kind = Vehicle if task == "vehicle-longitudinal" else FurnaceSensor
    device = kind(0, 0, np.random.default_rng(seed), rate_hz, load_layout())
    start_ms = int(time.time() * 1000)
    k = 0
    while True:
        for item in device.step(k, start_ms + int(k * 1000 / rate_hz)):
            if item.contract_id == device.contract_id:
                yield item.record
        k += 1
