"""One simulation run: the fleet's records, the fault plan applied, sent through a sink."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from fieldloop.contracts import DataContract
from fieldloop.errors import FieldloopError
from fieldloop.wire import RegisteredSchema, SchemaRegistry, encode
from ingestion.errors import SimulationError
from ingestion.simulator.device import Item
from ingestion.simulator.faults import (
    BYTE_KINDS,
    JUNK_SEQ_BASE,
    Event,
    FaultPlan,
    FaultSpec,
    Window,
    junk_bytes,
    junk_record,
)
from ingestion.simulator.fleet import Fleet, FleetSpec
from ingestion.simulator.layout import FleetLayout
from ingestion.simulator.raw import RawSender
from ingestion.simulator.report import Counts, SimulationReport
from ingestion.simulator.sink import Sink


class Broker(Protocol):
    """The broker the ``broker-restart`` fault stops and starts."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


class Simulation:
    """One fleet, one fault plan, sent through a sink.

    Args:
        spec: the fleet's size, duration, rate and seed.
        faults: the faults to inject.
        contracts: the loaded data contracts, by id.
        registry: the Avro schemas records are encoded with.
        layout: who the devices belong to; default the fleet file shipped with the simulator.

    Raises:
        SimulationError: the spec is invalid or a stream the fleet writes has no contract.
        FaultSpecError: the faults are inconsistent.
    """

    def __init__(
        self,
        spec: FleetSpec,
        faults: Sequence[FaultSpec],
        contracts: Mapping[str, DataContract],
        registry: SchemaRegistry,
        layout: FleetLayout | None = None,
    ) -> None:
        self.spec = spec
        self.fleet = Fleet(spec, layout)
        missing = sorted(self.fleet.contract_ids() - set(contracts))
        if missing:
            raise SimulationError(
                f"the fleet writes under contract(s) {', '.join(missing)}, which are not loaded: "
                "restore them in the contracts directory (or fix their ids in the fleet file)"
            )
        self.contracts, self.registry = contracts, registry
        self.plan = FaultPlan.build(faults, spec.seed, spec.start_ms, int(spec.seconds * 1000), spec.devices)

    def _schema(self, contract_id: str) -> RegisteredSchema:
        """What the SDK encodes with: the stream's latest schema (duplicates must be byte-identical)."""
        return self.registry.get(self.contracts[contract_id].stream)

    def run(
        self,
        sink: Sink,
        raw: RawSender,
        broker: Broker | None = None,
        on_progress: Callable[[int], None] | None = None,
        flush_timeout_s: float = 30.0,
    ) -> SimulationReport:
        """Generate every record, apply the faults and send; always leaves the sink resumed and the broker up.

        Args:
            sink: the edge SDK (or a fake).
            raw: the path around the SDK for junk and duplicates.
            broker: what ``broker-restart`` stops and starts; None: the fault is planned but not executed.
            on_progress: called with the number of items done, every few hundred items.
            flush_timeout_s: how long to wait for delivery at the end (s).
        """
        t0 = time.monotonic()
        spec, fleet, plan = self.spec, self.fleet, self.plan
        report = SimulationReport(
            seed=spec.seed,
            devices=spec.devices,
            rate_hz=spec.rate_hz,
            seconds=spec.seconds,
            start=datetime.fromtimestamp(spec.start_ms / 1000, UTC).isoformat(),
            device_mix=fleet.mix(),
            topics={c: self.contracts[c].topic for c in sorted(fleet.contract_ids())},
            streams={c: Counts() for c in sorted(fleet.contract_ids())},
            per_device={i: Counts() for d in fleet.devices for i in d.device_ids},
        )
        state = _RunState(sink, raw, broker)
        events = plan.timeline()
        try:
            for n, item in enumerate(fleet.items(), 1):
                while events and events[0].at_ms <= item.event_ms:
                    state.fire(events.pop(0))
                for w in state.active:
                    w.records_during += 1
                self._send(item, state, report)
                if on_progress and n % 500 == 0:
                    on_progress(n)
        finally:
            # close what is open (uplink back, broker up), even after an error; never start new faults
            for event in events:
                if event.window in state.active and event.action in ("resume", "broker-start"):
                    state.fire(event)
        if on_progress:
            on_progress(fleet.expected_items())
        report.flushed = sink.flush(flush_timeout_s) & raw.flush(flush_timeout_s)
        report.refused_reasons = dict(sorted(state.reasons.items()))
        report.malformed = {k: dict(v) for k, v in sorted(state.malformed.items())}
        report.duplicates_sent = state.duplicates
        report.faults = plan.describe({d.unit: d.device_ids for d in fleet.devices})
        report.anomalies = state.close_anomalies()
        report.wall_seconds = round(time.monotonic() - t0, 3)
        return report

    def _send(self, item: Item, state: _RunState, report: SimulationReport) -> None:
        plan = self.plan
        record = item.record
        ts = plan.device_ts(item.unit, record["ts"], item.event_ms)
        if ts != record["ts"]:
            record = {**record, "ts": ts}
        state.track_anomaly(item, ts)
        stream, device = report.streams[item.contract_id], report.per_device[item.device_id]
        for c in (stream, device):
            c.generated += 1
        junk = plan.malformed_kind(item.unit)
        if junk:
            state.malformed.setdefault(junk, {"injected": 0, "accepted": 0, "refused": 0, "raw_sent": 0})
            state.malformed[junk]["injected"] += 1
        if junk in BYTE_KINDS:
            for c in (stream, device):
                c.bypassed += 1
            payload = junk_bytes(junk, record, self._schema(item.contract_id), plan.junk_rng(item.unit))
            state.send_raw(item, state.junk_seq(item.device_id), payload, junk, stream, device)
            return
        if junk:
            record = junk_record(junk, record, self._schema(item.contract_id), item.device_id, plan.junk_rng(item.unit))
        try:
            seq = state.sink.send(item.contract_id, item.device_id, record)
        except FieldloopError as e:
            for c in (stream, device):
                c.refused += 1
            reason = getattr(e, "reason", None) or type(e).__name__
            state.reasons[reason] = state.reasons.get(reason, 0) + 1
            if junk:  # the cloud's quarantine must see what a broken device would push anyway
                state.malformed[junk]["refused"] += 1
                payload = encode(record, self._schema(item.contract_id))
                state.send_raw(item, state.junk_seq(item.device_id), payload, junk, stream, device)
            return
        for c in (stream, device):
            c.accepted += 1
        if junk:
            state.malformed[junk]["accepted"] += 1
        elif plan.duplicate(item.unit):
            state.duplicates += 1
            state.send_raw(item, seq, encode(record, self._schema(item.contract_id)), "duplicate", stream, device)


class _RunState:
    """Mutable state of one run: connections, fault state, tallies."""

    def __init__(self, sink: Sink, raw: RawSender, broker: Broker | None) -> None:
        self.sink, self.raw, self.broker = sink, raw, broker
        self.active: list[Window] = []  # fault windows in force
        self.paused = 0
        self.broker_down = False
        self.deferred: list[tuple[str, str, int, bytes, str]] = []  # raw sends waiting for the uplink
        self.junk_seqs: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.malformed: dict[str, dict[str, int]] = {}
        self.duplicates = 0
        self.open_anomalies: dict[str, dict[str, Any]] = {}
        self.anomalies: list[dict[str, Any]] = []

    def fire(self, event: Event) -> None:
        w = event.window
        if event.action == "pause":
            self.active.append(w)
            self.paused += 1
            if self.paused == 1:
                self.sink.pause()
            w.executed = True
        elif event.action == "resume":
            self.active.remove(w)
            self.paused -= 1
            if self.paused == 0:
                self.sink.resume()
                for args in self.deferred:
                    self.raw.send_raw(*args)
                self.deferred.clear()
        elif event.action == "broker-stop":
            self.active.append(w)
            if self.broker is not None and not self.broker_down:
                self.broker.stop()
                self.broker_down = True
                w.executed = True
        elif event.action == "broker-start":
            self.active.remove(w)
            if self.broker_down and not any(a.kind == "broker-restart" for a in self.active):
                self.broker_down = False
                self.broker.start()

    def junk_seq(self, device_id: str) -> int:
        self.junk_seqs[device_id] = self.junk_seqs.get(device_id, JUNK_SEQ_BASE) + 1
        return self.junk_seqs[device_id]

    def send_raw(self, item: Item, seq: int, payload: bytes, kind: str, *counts: Counts) -> None:
        for c in counts:
            c.raw_sent += 1
        if kind != "duplicate":
            self.malformed[kind]["raw_sent"] += 1
        args = (item.contract_id, item.device_id, seq, payload, kind)
        if self.paused:  # the device is offline: nothing leaves it, not even junk
            self.deferred.append(args)
        else:
            self.raw.send_raw(*args)

    def track_anomaly(self, item: Item, ts: int) -> None:
        current = self.open_anomalies.get(item.device_id)
        if current and current["kind"] != item.truth:
            self.anomalies.append(self.open_anomalies.pop(item.device_id))
            current = None
        if item.truth and current:
            current["end_ts"] = ts
            current["records"] += 1
        elif item.truth:
            self.open_anomalies[item.device_id] = {
                "device_id": item.device_id,
                "kind": item.truth,
                "start_ts": ts,
                "end_ts": ts,
                "records": 1,
            }

    def close_anomalies(self) -> list[dict[str, Any]]:
        out = self.anomalies + list(self.open_anomalies.values())
        return sorted(out, key=lambda a: (a["start_ts"], a["device_id"]))
