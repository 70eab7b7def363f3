"""The raw path: payloads sent around the edge SDK, with the headers the SDK would set.

Faults need it twice: junk the SDK refuses (or could never encode) is pushed anyway so the
cloud's quarantine sees it, and duplicates are resent byte-identical with the same
(device, seq) so the cloud's de-duplication is exercised. :class:`MemoryRawSender` keeps
them in memory for tests and dry runs; :class:`KafkaRawSender` writes them to the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT
from ingestion.errors import RawSendError
from ingestion.simulator.faults import OVERSIZED_BYTES

if TYPE_CHECKING:
    from fieldloop.config import KafkaConfig
    from fieldloop.contracts import DataContract

logger = logging.getLogger(__name__)


class RawSender(Protocol):
    """Sends payloads around the SDK, with the headers the SDK would set."""

    def send_raw(self, contract_id: str, device_id: str, seq: int, payload: bytes, kind: str) -> None:
        """Send ``payload`` to the contract's topic; ``kind`` (junk kind or ``duplicate``) is for accounting only."""

    def flush(self, timeout_s: float) -> bool:
        """Wait for delivery; False if something is undelivered or failed."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class RawMessage:
    contract_id: str
    device_id: str
    seq: int
    payload: bytes
    kind: str


class MemoryRawSender:
    """A :class:`RawSender` that keeps messages in memory (``keep=False``: only counts them)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.messages: list[RawMessage] = []
        self.count = 0

    def send_raw(self, contract_id: str, device_id: str, seq: int, payload: bytes, kind: str) -> None:
        self.count += 1
        if self.keep:
            self.messages.append(RawMessage(contract_id, device_id, seq, payload, kind))

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


class KafkaRawSender:
    """A plain kafka-python producer that writes what the SDK would refuse, headers and all."""

    def __init__(self, kafka: KafkaConfig, contracts: Mapping[str, DataContract]) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self._contracts = contracts
        self.sent = 0
        self.failed = 0
        try:
            self._producer = KafkaProducer(
                client_id="fieldloop-fleet-sim-raw",
                acks="all",
                linger_ms=20,
                max_block_ms=10_000,  # a missing topic fails this message, not the whole run
                max_request_size=2 * OVERSIZED_BYTES,  # let the broker, not this client, judge oversized junk
                **kafka.client_options(),
            )
        except KafkaError as e:
            raise RawSendError(
                f"cannot reach Kafka at {kafka.bootstrap_servers} for the raw fault path ({type(e).__name__}); "
                "start it with `fieldloop stack up --only kafka` or use --dry-run"
            ) from e

    def send_raw(self, contract_id: str, device_id: str, seq: int, payload: bytes, kind: str) -> None:
        from kafka.errors import KafkaError

        contract = self._contracts[contract_id]
        headers = [
            (H_CLASS, str(contract.data_class).encode()),
            (H_CONTRACT, contract.id.encode()),
            (H_DEVICE, device_id.encode()),
            (H_SEQ, str(seq).encode()),
        ]
        if contract.tenant:
            headers.insert(1, (H_TENANT, contract.tenant.encode()))
        try:
            future = self._producer.send(contract.topic, value=payload, key=device_id.encode(), headers=headers)
        except KafkaError as e:
            self._failure(e, contract.topic, kind)
            return
        self.sent += 1
        future.add_errback(self._failure, contract.topic, kind)

    def _failure(self, error: BaseException, topic: str, kind: str) -> None:
        self.failed += 1
        if self.failed <= 5:
            logger.warning("raw %s message to %s failed: %s", kind, topic, type(error).__name__)

    def flush(self, timeout_s: float) -> bool:
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            return False
        return self.failed == 0

    def close(self) -> None:
        self._producer.close(timeout=5)
