"""Fault injection for the fleet simulator: the plan and the junk.

``--fault KIND[:PARAM]`` specs become a :class:`FaultPlan` that depends only on the seed,
the fleet size and the run's duration, so a seed replays the same faults:

* ``network-drop[:SECONDS]`` (default 30): the uplink goes offline for a window; the run
  calls ``sink.pause()`` at its start and ``sink.resume()`` at its end (the SDK spools).
* ``broker-restart[:SECONDS]`` (default 15): the embedded broker is stopped at a planned
  moment and started again after SECONDS of simulated time.
* ``malformed[:FRACTION]`` (default 0.02): that fraction of records is replaced by junk,
  one of :data:`MALFORMED_KINDS`. Junk records (NaN, far-future ``ts``, oversized) are
  offered to the SDK; junk bytes (truncated, unknown fingerprint) cannot be, and junk the
  SDK refuses is pushed anyway: both through the raw path (:mod:`ingestion.simulator.raw`)
  with correct-looking headers and a sequence number from :data:`JUNK_SEQ_BASE` up, so the
  cloud's quarantine sees them.
* ``duplicates[:FRACTION]`` (default 0.02): that fraction of accepted records is sent
  again, byte-identical, with the same (device, seq), through the raw path.
* ``clock-skew[:MINUTES]`` (default 5): a fifth of the devices (at least one) run with a
  clock off by up to MINUTES until an NTP correction mid-run steps it back.

Fault decisions draw from their own random streams, so enabling a fault never changes the
records the devices generate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fieldloop.wire import HEADER_LEN, MAGIC, RegisteredSchema, encode
from ingestion.errors import FaultSpecError

FAULT_KINDS = ("network-drop", "broker-restart", "malformed", "duplicates", "clock-skew")
DEFAULT_PARAMS = {
    "network-drop": 30.0,
    "broker-restart": 15.0,
    "malformed": 0.02,
    "duplicates": 0.02,
    "clock-skew": 5.0,
}
PARAM_UNITS = {
    "network-drop": "seconds",
    "broker-restart": "seconds",
    "malformed": "fraction",
    "duplicates": "fraction",
    "clock-skew": "minutes",
}
_ONCE = ("malformed", "duplicates", "clock-skew")  # rates and skews: a second spec would be ambiguous

MALFORMED_KINDS = ("truncated", "unknown-fingerprint", "nan", "future-ts", "oversized")
BYTE_KINDS = frozenset({"truncated", "unknown-fingerprint"})  # not records: only the raw path can send them
OVERSIZED_BYTES = 768 * 1024  # far above any real record (< 10 KiB), below the SDK's and broker's 1 MiB limits
# Junk gets sequence numbers from here up (per device), so under the cloud's (device, seq)
# de-duplication it can never shadow a real record, nor a real record it (SDK seqs count from 1).
JUNK_SEQ_BASE = 9_000_000_000_000
SKEWED_SHARE = 0.2

# Random streams: numpy SeedSequence(seed, spawn_key=(stream, unit)); the simulator's devices use stream 1.
_PLAN, _MALFORMED, _JUNK, _DUPLICATES = 2, 3, 4, 5
_FLEET_UNIT = 1 << 30  # spawn-key slot for fleet-wide draws, never a device index


@dataclass(frozen=True)
class FaultSpec:
    """One requested fault: its kind and its parameter (unit in :data:`PARAM_UNITS`)."""

    kind: str
    param: float

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse ``KIND[:PARAM]``, e.g. ``malformed:0.05`` or ``network-drop``.

        Raises:
            FaultSpecError: unknown kind or invalid parameter.
        """
        kind, _, raw = text.strip().partition(":")
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault '{kind}': use one of {', '.join(FAULT_KINDS)}")
        if not raw:
            return cls(kind, DEFAULT_PARAMS[kind])
        try:
            param = float(raw)
        except ValueError as e:
            raise FaultSpecError(f"fault '{text}': parameter '{raw}' is not a number ({PARAM_UNITS[kind]})") from e
        unit = PARAM_UNITS[kind]
        if not math.isfinite(param) or param <= 0 or (unit == "fraction" and param > 1):
            allowed = "0 < fraction <= 1" if unit == "fraction" else f"{unit} > 0"
            raise FaultSpecError(f"fault '{text}': {kind} needs {allowed}")
        return cls(kind, param)

    def __str__(self) -> str:
        return f"{self.kind}:{self.param:g}"


@dataclass
class Window:
    """A planned span of simulated time (epoch millis) with what happened inside it."""

    kind: str
    start_ms: int
    end_ms: int
    records_during: int = 0
    executed: bool = False


@dataclass(frozen=True)
class ClockSkew:
    """A device clock off by ``offset_ms`` until ``corrected_ms`` (true time), then right."""

    offset_ms: int
    corrected_ms: int


@dataclass(frozen=True)
class Event:
    at_ms: int
    action: str  # pause | resume | broker-stop | broker-start
    window: Window


def _rng(seed: int, stream: int, unit: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, unit)))


@dataclass
class FaultPlan:
    """Where and when faults strike in one run; identical for identical inputs."""

    seed: int
    specs: tuple[FaultSpec, ...] = ()
    windows: list[Window] = field(default_factory=list)
    skews: dict[int, ClockSkew] = field(default_factory=dict)  # by device (unit) index
    malformed_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    _streams: dict[tuple[int, int], np.random.Generator] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, specs: Sequence[FaultSpec], seed: int, start_ms: int, duration_ms: int, units: int) -> FaultPlan:
        """Plan ``specs`` for a run of ``units`` devices from ``start_ms`` lasting ``duration_ms``.

        Raises:
            FaultSpecError: a rate or skew fault is given twice.
        """
        for kind in _ONCE:
            if sum(s.kind == kind for s in specs) > 1:
                raise FaultSpecError(f"fault '{kind}' given more than once: give it once with the value you want")
        plan = cls(seed, tuple(specs))
        rng = _rng(seed, _PLAN, _FLEET_UNIT)
        for spec in specs:
            if spec.kind in ("network-drop", "broker-restart"):
                # strike after the fleet has warmed up, early enough that the run sees the recovery
                begin = start_ms + int(rng.uniform(0.1, 0.6) * duration_ms)
                plan.windows.append(Window(spec.kind, begin, begin + int(spec.param * 1000)))
            elif spec.kind == "malformed":
                plan.malformed_fraction = spec.param
            elif spec.kind == "duplicates":
                plan.duplicate_fraction = spec.param
            elif spec.kind == "clock-skew":
                count = max(1, round(SKEWED_SHARE * units))
                chosen = sorted(int(u) for u in rng.choice(units, size=count, replace=False))
                for i, unit in enumerate(chosen):
                    sign = 1 if i % 2 == 0 else -1  # ahead clocks step back at correction: visible disorder
                    offset = sign * int(spec.param * 60_000 * rng.uniform(0.5, 1.0))
                    plan.skews[unit] = ClockSkew(offset, start_ms + int(rng.uniform(0.3, 0.8) * duration_ms))
        return plan

    def timeline(self) -> list[Event]:
        """Pause/resume and broker stop/start events in time order."""
        events = []
        for w in self.windows:
            begin, end = ("pause", "resume") if w.kind == "network-drop" else ("broker-stop", "broker-start")
            events += [Event(w.start_ms, begin, w), Event(w.end_ms, end, w)]
        return sorted(events, key=lambda e: e.at_ms)

    def device_ts(self, unit: int, ts: int, event_ms: int) -> int:
        """The timestamp a device writes, given its clock's skew at true time ``event_ms``."""
        skew = self.skews.get(unit)
        if skew is None or event_ms >= skew.corrected_ms:
            return ts
        return ts + skew.offset_ms

    def _stream(self, stream: int, unit: int) -> np.random.Generator:
        key = (stream, unit)
        if key not in self._streams:
            self._streams[key] = _rng(self.seed, stream, unit)
        return self._streams[key]

    def malformed_kind(self, unit: int) -> str | None:
        """Whether the device's next record is replaced by junk, and which kind."""
        if not self.malformed_fraction:
            return None
        rng = self._stream(_MALFORMED, unit)
        if rng.random() >= self.malformed_fraction:
            return None
        return MALFORMED_KINDS[int(rng.integers(len(MALFORMED_KINDS)))]

    def duplicate(self, unit: int) -> bool:
        """Whether the device's record just accepted is also sent again."""
        return bool(self.duplicate_fraction) and self._stream(_DUPLICATES, unit).random() < self.duplicate_fraction

    def junk_rng(self, unit: int) -> np.random.Generator:
        return self._stream(_JUNK, unit)

    def describe(self, device_ids: Mapping[int, Sequence[str]]) -> list[dict[str, Any]]:
        """The planned faults as plain data, in the order they were given."""
        out: list[dict[str, Any]] = []
        windows = iter(self.windows)
        for spec in self.specs:
            entry: dict[str, Any] = {"kind": spec.kind, "param": spec.param, "unit": PARAM_UNITS[spec.kind]}
            if spec.kind in ("network-drop", "broker-restart"):
                w = next(windows)
                entry.update(start_ts=w.start_ms, end_ts=w.end_ms, executed=w.executed, records_during=w.records_during)
            elif spec.kind == "clock-skew":
                entry["devices"] = {
                    device: {"offset_s": skew.offset_ms / 1000, "corrected_ts": skew.corrected_ms}
                    for unit, skew in sorted(self.skews.items())
                    for device in device_ids[unit]
                }
            out.append(entry)
        return out


# Junk ---------------------------------------------------------------------------------
def junk_bytes(kind: str, record: Mapping[str, Any], schema: RegisteredSchema, rng: np.random.Generator) -> bytes:
    """Bytes no SDK would produce: a cut-off payload or one naming an unknown writer schema."""
    good = encode(record, schema)
    if kind == "truncated":
        return good[: int(rng.integers(1, len(good)))]
    if kind == "unknown-fingerprint":
        fp = rng.bytes(8)
        while fp == schema.fingerprint:  # pragma: no cover - 1 in 2**64
            fp = rng.bytes(8)
        return MAGIC + fp + good[HEADER_LEN:]
    raise ValueError(f"'{kind}' is not a byte-level junk kind ({', '.join(sorted(BYTE_KINDS))})")


def junk_record(
    kind: str, record: Mapping[str, Any], schema: RegisteredSchema, device_id: str, rng: np.random.Generator
) -> dict[str, Any]:
    """A record that still matches its schema but is wrong: NaN, far-future time, or huge."""
    out = copy.deepcopy(dict(record))
    if kind == "nan":
        slots = [(k, None) for k, v in out.items() if isinstance(v, float)]
        slots += [
            (k, i) for k, v in out.items() if isinstance(v, list) for i, x in enumerate(v) if isinstance(x, float)
        ]
        key, index = slots[int(rng.integers(len(slots)))]
        if index is None:
            out[key] = math.nan
        else:
            out[key][index] = math.nan
    elif kind == "future-ts":
        key = "ts" if "ts" in out else "window_start"
        out[key] += int(rng.integers(5, 50)) * 365 * 86_400_000
    elif kind == "oversized":
        strings = {f["name"] for f in schema.parsed["fields"] if f["type"] == "string"}
        names = [k for k, v in out.items() if k in strings and v != device_id]
        key = names[int(rng.integers(len(names)))]
        out[key] = out[key] + "#" * OVERSIZED_BYTES
    else:
        raise ValueError(f"'{kind}' is not a record-level junk kind")
    return out
