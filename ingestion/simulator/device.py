"""What every simulated device is: a unit of the fleet that emits :class:`Item` s, tick by tick.

Each kind of device has its own module (:mod:`~ingestion.simulator.vehicle`,
:mod:`~ingestion.simulator.robot`, :mod:`~ingestion.simulator.furnace`) with its physics;
they share the base class, the record type and the few helpers below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

DEVICE_STREAM = 1  # SeedSequence spawn-key stream of device physics (faults use others)
NOTE_EVERY_S = 10.0  # a driver or operator types a note about this often (mean, s); a third are empty


@dataclass(frozen=True)
class Item:
    """One generated record.

    Attributes:
        contract_id: the data contract governing the record's stream.
        device_id: the id the SDK sends it under.
        record: the record, as its stream's Avro schema expects it.
        event_ms: true simulated time (epoch millis); ``record["ts"]`` is the device clock.
        unit: index of the simulated device that produced it (a vehicle emits three streams).
        truth: ground-truth label not in the record (furnace ``spike`` / ``step-drift``).
    """

    contract_id: str
    device_id: str
    record: dict[str, Any]
    event_ms: int
    unit: int = 0
    truth: str | None = None


class Device:
    """A simulated device: one unit of the fleet, emitting one or more streams.

    A kind is built as ``Kind(unit, ordinal, rng, rate_hz, layout)``: its index in the fleet,
    how many of its kind come before it, its own random stream, the tick rate (Hz) and the
    fleet file (:class:`~ingestion.simulator.layout.FleetLayout`), where it finds its contracts.
    """

    kind: ClassVar[str]
    unit: int
    device_id: str
    rng: np.random.Generator

    @property
    def device_ids(self) -> list[str]:
        return [self.device_id]

    @property
    def contract_ids(self) -> list[str]:
        raise NotImplementedError

    def step(self, k: int, t_ms: int) -> list[Item]:
        """Advance one tick (1/rate s) to ``t_ms`` and return what the device emits."""
        raise NotImplementedError

    def count(self, ticks: int) -> int:
        """How many items :meth:`step` emits over ``ticks`` ticks."""
        raise NotImplementedError


def device_rng(seed: int, unit: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(DEVICE_STREAM, unit)))


def clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else float(x)


def jst_hour(t_ms: int) -> float:
    return (t_ms / 3_600_000 + 9) % 24


def lognormal_ms(rng: np.random.Generator, median_ms: float, sigma: float) -> float:
    latency = median_ms * math.exp(sigma * rng.normal())
    if rng.random() < 0.01:  # GC pause, thermal throttling
        latency *= rng.uniform(3, 8)
    return round(latency, 3)
