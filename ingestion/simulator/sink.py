"""Where simulated devices hand their records: the :class:`Sink` protocol and its in-memory stand-in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fieldloop.contracts import DataContract
from fieldloop.wire import SchemaRegistry
from ingestion._internal.admission import admit


class Sink(Protocol):
    """Where devices hand their records: the edge SDK (:class:`ingestion.EdgeProducer`).

    ``send`` returns the device's sequence number, or raises a
    :class:`~fieldloop.errors.FieldloopError` (with a ``reason`` when it has one) to refuse
    the record at the device.
    """

    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int: ...

    def pause(self) -> None:
        """Stop sending (the uplink is down); keep accepting records into the spool."""

    def resume(self) -> None:
        """Send again, spool first."""

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything accepted is delivered; False on timeout."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SentRecord:
    contract_id: str
    device_id: str
    seq: int
    payload: bytes
    paused: bool


class MemorySink:
    """An in-memory :class:`Sink` that admits records by the edge SDK's own rule.

    What :class:`ingestion.EdgeProducer` refuses, it refuses with the same
    reason and message: both call :func:`ingestion._internal.admission.admit`.
    Sequence numbers count from 1 per device. ``keep=False`` only counts (dry runs).
    """

    def __init__(
        self,
        contracts: Mapping[str, DataContract],
        registry: SchemaRegistry,
        max_record_bytes: int = 1024 * 1024,
        keep: bool = True,
    ) -> None:
        self.contracts, self.registry = contracts, registry
        self.max_record_bytes, self.keep = max_record_bytes, keep
        self.sent: list[SentRecord] = []
        self.seqs: dict[str, int] = {}
        self.paused = False
        self.pauses = self.resumes = 0
        self.closed = False

    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int:
        payload = admit(self.contracts, self.registry, contract_id, device_id, record, self.max_record_bytes).payload
        seq = self.seqs.get(device_id, 0) + 1
        self.seqs[device_id] = seq
        if self.keep:
            self.sent.append(SentRecord(contract_id, device_id, seq, payload, self.paused))
        return seq

    def pause(self) -> None:
        self.paused, self.pauses = True, self.pauses + 1

    def resume(self) -> None:
        self.paused, self.resumes = False, self.resumes + 1

    def flush(self, timeout_s: float) -> bool:
        return not self.paused

    def close(self) -> None:
        self.closed = True
