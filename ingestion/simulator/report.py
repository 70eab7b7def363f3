"""What a simulation run reports: counts per stream and device, faults, and anomaly ground truth."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Counts:
    """generated = accepted + refused + bypassed; raw_sent counts extra wire messages."""

    generated: int = 0
    accepted: int = 0  # taken by the SDK
    refused: int = 0  # refused by the SDK at the device
    bypassed: int = 0  # replaced by junk bytes, which only the raw path can send
    raw_sent: int = 0  # junk and duplicates sent around the SDK

    @property
    def balanced(self) -> bool:
        return self.generated == self.accepted + self.refused + self.bypassed


@dataclass
class SimulationReport:
    """What one run generated, what the SDK took and refused, and what went around it."""

    seed: int
    devices: int
    rate_hz: float
    seconds: float
    start: str
    device_mix: dict[str, int]
    topics: dict[str, str]  # contract id -> topic
    streams: dict[str, Counts] = field(default_factory=dict)  # by contract id
    per_device: dict[str, Counts] = field(default_factory=dict)
    refused_reasons: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> injected/accepted/refused/raw_sent
    duplicates_sent: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)  # ground truth windows, device-clock ts
    flushed: bool = False
    dry_run: bool = False
    wall_seconds: float = 0.0

    @property
    def total(self) -> Counts:
        out = Counts()
        for c in self.streams.values():
            for name in vars(out):
                setattr(out, name, getattr(out, name) + getattr(c, name))
        return out

    @property
    def raw_malformed(self) -> int:
        return sum(m["raw_sent"] for m in self.malformed.values())

    def reconciles(self) -> bool:
        """Every stream and device balances, and raw messages are exactly junk plus duplicates."""
        parts = list(self.streams.values()) + list(self.per_device.values())
        total = self.total
        return (
            all(c.balanced for c in parts)
            and total.generated == sum(c.generated for c in self.per_device.values())
            and total.raw_sent == self.raw_malformed + self.duplicates_sent
            and total.refused == sum(self.refused_reasons.values())
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reconciles": self.reconciles()}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> SimulationReport:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("reconciles", None)
        data["streams"] = {k: Counts(**v) for k, v in data["streams"].items()}
        data["per_device"] = {k: Counts(**v) for k, v in data["per_device"].items()}
        return cls(**data)
