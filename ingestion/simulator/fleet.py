"""The fleet: which devices a :class:`FleetSpec` makes, and their records in event-time order.

Which kind the n-th device is follows :data:`DEVICE_PATTERN`, whatever the fleet size; who the
devices of each kind belong to, and which contracts their streams go to, comes from the fleet
file (:mod:`ingestion.simulator.layout`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ingestion.errors import SimulationError
from ingestion.simulator.device import Device, Item, device_rng
from ingestion.simulator.furnace import FurnaceSensor
from ingestion.simulator.layout import FleetLayout, default_layout
from ingestion.simulator.robot import RobotArm
from ingestion.simulator.vehicle import Vehicle

DEVICE_PATTERN = (  # interleaved, so small fleets get every kind
    "vehicle",
    "furnace",
    "robot",
    "vehicle",
    "furnace",
    "vehicle",
    "robot",
    "vehicle",
    "furnace",
    "vehicle",
)

_KINDS: dict[str, type[Device]] = {"vehicle": Vehicle, "robot": RobotArm, "furnace": FurnaceSensor}


@dataclass(frozen=True)
class FleetSpec:
    """What to simulate.

    Attributes:
        devices: number of devices (units); kinds follow :data:`DEVICE_PATTERN`.
        seconds: simulated duration (s of device time, not wall time).
        rate_hz: records per second of each device's main stream.
        seed: makes the whole run, faults included, reproducible given ``start``.
        start: simulated clock start; default: ``seconds`` before the spec was made (whole
            seconds), so the run's last readings are from now. A fixed year of data would
            soon be older than its contracts' retention: bronze quarantines such records as
            ``expired`` and nothing reaches silver.
    """

    devices: int = 10
    seconds: float = 60.0
    rate_hz: float = 10.0
    seed: int = 0
    start: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is None:  # read the clock once: every part of a run sees the same start
            now = datetime.now(UTC).replace(microsecond=0)
            object.__setattr__(self, "start", now - timedelta(seconds=math.ceil(max(self.seconds, 0))))

    def validate(self) -> None:
        """Raises SimulationError naming the first bad value."""
        if self.devices < 1:
            raise SimulationError(f"devices must be at least 1, got {self.devices}")
        if not 0 < self.rate_hz <= 1000:
            raise SimulationError(f"rate must be in (0, 1000] records/s per device, got {self.rate_hz}")
        if self.seconds <= 0 or self.ticks < 1:
            raise SimulationError(f"{self.seconds} s at {self.rate_hz} records/s is less than one record per device")
        if self.seed < 0:
            raise SimulationError(f"seed must be >= 0, got {self.seed}")
        if self.start is not None and self.start.tzinfo is None:
            raise SimulationError("start needs a UTC offset (e.g. 2025-04-01T09:00:00+09:00)")

    @property
    def ticks(self) -> int:
        return int(self.seconds * self.rate_hz + 1e-9)

    @property
    def start_ms(self) -> int:
        assert self.start is not None  # set by __post_init__
        return int(self.start.timestamp() * 1000)


def device_kind(index: int) -> str:
    """The kind of device ``index``: fixed, whatever the fleet size."""
    return DEVICE_PATTERN[index % len(DEVICE_PATTERN)]


def _ordinal(index: int) -> int:
    """How many devices of the same kind come before ``index``."""
    kind = device_kind(index)
    per_round = DEVICE_PATTERN.count(kind)
    return (index // len(DEVICE_PATTERN)) * per_round + DEVICE_PATTERN[: index % len(DEVICE_PATTERN)].count(kind)


class Fleet:
    """The devices of one spec and the stream of their records.

    Args:
        spec: how many devices, for how long, at what rate, from which seed.
        layout: who the devices belong to; default the fleet file shipped with the simulator.

    Raises:
        SimulationError: the spec is invalid.
    """

    def __init__(self, spec: FleetSpec, layout: FleetLayout | None = None) -> None:
        spec.validate()
        self.spec = spec
        self.layout = layout or default_layout()
        self.devices: list[Device] = []
        self.phase_ms: list[int] = []
        period_ms = 1000 / spec.rate_hz
        for index in range(spec.devices):
            rng = device_rng(spec.seed, index)
            self.phase_ms.append(int(rng.integers(max(1, int(period_ms)))))  # devices do not tick in unison
            kind = _KINDS[device_kind(index)]
            self.devices.append(kind(index, _ordinal(index), rng, spec.rate_hz, self.layout))

    def mix(self) -> dict[str, int]:
        counts = dict.fromkeys(_KINDS, 0)
        for d in self.devices:
            counts[d.kind] += 1
        return counts

    def contract_ids(self) -> set[str]:
        return {c for d in self.devices for c in d.contract_ids}

    def expected_items(self) -> int:
        return sum(d.count(self.spec.ticks) for d in self.devices)

    def items(self) -> Iterator[Item]:
        """Every device's records, in event-time order (ties: device order)."""
        start, rate = self.spec.start_ms, self.spec.rate_hz
        for k in range(self.spec.ticks):
            tick_ms = start + round(k * 1000 / rate)
            batch: list[Item] = []
            for device, phase in zip(self.devices, self.phase_ms, strict=True):
                batch += device.step(k, tick_ms + phase)
            batch.sort(key=lambda item: item.event_ms)
            yield from batch
