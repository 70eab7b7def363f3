"""The edge producer SDK: what a vehicle, robot or plant device embeds to send records to Kafka.

Workflow. :meth:`EdgeProducer.send` checks a record against its stream's data contract
and Avro schema and refuses, before anything is stored, what may not or cannot leave
the device (no contract, raw secret data, bad device id, schema mismatch, NaN/inf,
oversized; :mod:`ingestion._internal.admission`). It then gives the record the device's
next sequence number, encodes it (Avro single-object, see :mod:`fieldloop.wire`) and
appends it to the device's disk spool (:mod:`ingestion._internal.spool`); when ``send``
returns, a process crash can no longer lose the record.

A background sender drains the spool in order: it reads a batch at the spool's cursor,
hands it to an idempotent kafka-python producer (``acks=all``, compressed), waits for
every acknowledgement and only then commits the cursor. Any failure (broker down,
timeout, a refused batch) leaves the batch in the spool: the sender drops its Kafka
client, backs off exponentially and retries from the cursor. A record may therefore
reach Kafka twice, never out of order for its device (the key is the device id, so a
device stays in one partition); the cloud drops duplicates by (device, seq).

Example::

    cfg = EdgeProducerConfig.from_kafka_config(fieldloop_cfg.kafka, spool_dir=Path("/var/lib/fieldloop/spool"))
    with EdgeProducer(cfg, load_contracts()) as producer:
        seq = producer.send("vehicle-frames-public", "JT123456789012345", frame)
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fieldloop.config import KafkaConfig
from fieldloop.contracts import DataContract
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, SchemaRegistry, default_registry
from ingestion._internal.admission import admit
from ingestion._internal.spool import MIB, DiskSpool, FsyncPolicy, FullPolicy, SpoolConfig, SpoolEntry
from ingestion.errors import IngestionError, RefusedError, SpoolCorruptError

logger = logging.getLogger(__name__)

Compression = Literal["zstd", "gzip", "lz4", "snappy", "none"]


def _default_compression() -> Compression:
    """zstd when its codec is installed (best ratio for telemetry), else gzip (always available)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return "gzip"
    return "zstd"


def _codec_available(name: Compression) -> bool:
    from kafka import codec

    return {
        "zstd": codec.has_zstd,
        "gzip": codec.has_gzip,
        "lz4": codec.has_lz4,
        "snappy": codec.has_snappy,
        "none": lambda: True,
    }[name]()


class EdgeProducerConfig(BaseModel):
    """Everything an :class:`EdgeProducer` needs; validated before anything connects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Kafka connection (mirrors fieldloop.config.KafkaConfig)
    bootstrap_servers: str = Field(description="Kafka host:port list, comma-separated")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="client security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (redacted in output)")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates (file path)")
    client_id: str = Field("fieldloop-edge", description="Kafka client id, shown in broker logs and quotas")
    # spool
    spool_dir: Path = Field(description="directory of the disk spool; one producer per directory")
    spool_max_bytes: int = Field(256 * MIB, ge=64 * 1024, description="disk budget of the spool (bytes)")
    spool_segment_bytes: int | None = Field(
        None, ge=4096, description="spool segment size (bytes); default min(16 MiB, spool_max_bytes/8)"
    )
    spool_full_policy: FullPolicy = Field(
        "reject", description="when the spool is full: 'reject' (send raises SpoolFullError) or 'drop_oldest' (counted)"
    )
    fsync: FsyncPolicy = Field(
        "batch", description="'always': fsync each record; 'batch': once per delivery round and on flush; 'never'"
    )
    # records
    max_record_bytes: int = Field(1 * MIB, ge=64, description="largest encoded record send() accepts (bytes)")
    # delivery
    linger_ms: int = Field(20, ge=0, description="how long Kafka batches wait to fill (milliseconds)")
    batch_size: int = Field(256 * 1024, ge=1024, description="Kafka batch size per partition (bytes)")
    compression: Compression = Field(
        default_factory=_default_compression,
        description="Kafka batch compression; default zstd if installed, else gzip",
    )
    send_batch: int = Field(2000, ge=1, description="records the sender reads from the spool per round (count)")
    send_timeout_s: float = Field(30.0, gt=0, description="a round not fully acknowledged by then is retried (seconds)")
    connect_timeout_s: float = Field(5.0, gt=0, description="how long one attempt to reach the brokers lasts (seconds)")
    request_timeout_s: float = Field(10.0, gt=0, description="Kafka request timeout (seconds)")
    backoff_initial_s: float = Field(0.25, gt=0, description="first wait after a failed round (seconds)")
    backoff_max_s: float = Field(30.0, gt=0, description="longest wait between retries during an outage (seconds)")

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{server}' is not host:port (e.g. 127.0.0.1:9092)")
        return value

    @field_validator("compression")
    @classmethod
    def _codec(cls, value: Compression) -> Compression:
        if not _codec_available(value):
            raise ValueError(f"the {value} codec is not installed on this device; pick another compression")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EdgeProducerConfig:
        if self.security_protocol.startswith("SASL"):
            if not self.sasl_mechanism:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if self.sasl_mechanism == "OAUTHBEARER":
                raise ValueError(
                    "sasl_mechanism OAUTHBEARER needs a token provider, which this config cannot carry; "
                    "use SCRAM or PLAIN over SASL_SSL"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password")
        if self.max_record_bytes * 4 > self.spool_max_bytes:
            raise ValueError(
                f"max_record_bytes ({self.max_record_bytes}) must be at most a quarter of spool_max_bytes "
                f"({self.spool_max_bytes})"
            )
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        if self.spool_segment_bytes is not None and self.spool_segment_bytes > self.spool_max_bytes // 2:
            raise ValueError(
                f"spool_segment_bytes ({self.spool_segment_bytes}) must be at most half of "
                f"spool_max_bytes ({self.spool_max_bytes}): the spool frees space by whole segments"
            )
        return self

    @classmethod
    def from_kafka_config(cls, kafka: KafkaConfig, *, spool_dir: Path, **overrides: Any) -> EdgeProducerConfig:
        """The producer config for the brokers and credentials of a :class:`~fieldloop.config.KafkaConfig`.

        Args:
            kafka: the ``kafka`` section of the effective fieldloop config.
            spool_dir: where this device keeps its spool.
            **overrides: any other field of this model.

        Raises:
            pydantic.ValidationError: a value is invalid or a key unknown.
        """
        return cls.model_validate(
            {
                "bootstrap_servers": kafka.bootstrap_servers,
                "security_protocol": kafka.security_protocol,
                "sasl_mechanism": kafka.sasl_mechanism,
                "sasl_username": kafka.sasl_username,
                "sasl_password": kafka.sasl_password,
                "ssl_cafile": kafka.ssl_cafile,
                "spool_dir": spool_dir,
                **overrides,
            }
        )

    def spool_config(self) -> SpoolConfig:
        """The spool part of this config."""
        return SpoolConfig(
            directory=self.spool_dir,
            max_bytes=self.spool_max_bytes,
            segment_bytes=self.spool_segment_bytes,
            full_policy=self.spool_full_policy,
            fsync=self.fsync,
        )

    def kafka_options(self) -> dict[str, Any]:
        """Keyword arguments for ``kafka.KafkaProducer`` (contains the SASL password in clear)."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if self.compression == "none" else self.compression,
            "linger_ms": self.linger_ms,
            "batch_size": self.batch_size,
            # room for one maximal record plus key, headers and batch overhead
            "max_request_size": max(1 * MIB, self.max_record_bytes + 64 * 1024),
            "request_timeout_ms": int(self.request_timeout_s * 1000),
            # Batches must never expire inside the client: an expired batch followed by a later
            # one that succeeds would leave a gap, i.e. reorder a device's records after the
            # retry. The round timeout (send_timeout_s) abandons the whole client first.
            "delivery_timeout_ms": int((2 * self.send_timeout_s + self.request_timeout_s + 30) * 1000),
            "max_block_ms": int(min(self.send_timeout_s, 10.0) * 1000),
            "bootstrap_timeout_ms": int(self.connect_timeout_s * 1000),
            # a broker that comes back should be found within a round, not after 30 s
            "reconnect_backoff_max_ms": 2000,
            # topics are created by the platform (auto-creation is off), never by devices
            "allow_auto_create_topics": False,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.ssl_cafile:
            options["ssl_cafile"] = str(self.ssl_cafile)
        return options


@dataclass(frozen=True)
class ProducerStats:
    """A snapshot of what a producer did since it started (spool figures: over the spool's life).

    Attributes:
        accepted: records ``send()`` accepted into the spool.
        refused: records ``send()`` refused, by reason (see :class:`~ingestion.errors.RefusedError`).
        spool_full: ``send()`` calls that raised SpoolFullError.
        sent: record sends handed to Kafka, re-sends included.
        acked: records Kafka acknowledged and the spool committed.
        resends: records handed to Kafka again after a failed round (possible duplicates).
        pending: records in the spool waiting for Kafka, earlier runs' included.
        dropped_oldest: records the spool's ``drop_oldest`` policy dropped undelivered.
        corrupt_skipped: records lost to a corrupt spool segment (storage failure).
        failed_rounds: delivery rounds that failed and were retried.
        outages: distinct periods in which Kafka could not be reached.
    """

    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    spool_full: int = 0
    sent: int = 0
    acked: int = 0
    resends: int = 0
    pending: int = 0
    dropped_oldest: int = 0
    corrupt_skipped: int = 0
    failed_rounds: int = 0
    outages: int = 0


class _RoundFailed(Exception):
    """A delivery round failed; its records stay in the spool."""


class _RoundAbandoned(Exception):
    """A delivery round was given up on purpose (pause or close)."""


class _Round:
    """Acknowledgement bookkeeping of one delivery round; callbacks run on kafka-python's I/O thread."""

    def __init__(self, producer: Any, expected: int) -> None:
        self._producer = producer
        self._lock = threading.Lock()
        self.expected = expected
        self.acked = 0
        self.failure: BaseException | None = None
        self.event = threading.Event()

    def ok(self, _metadata: object) -> None:
        with self._lock:
            self.acked += 1
            if self.acked >= self.expected:
                self.event.set()

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = error
        # Stop the client's I/O thread right here, before it drains the next batch of this
        # partition: after a permanent failure kafka-python bumps the producer epoch and would
        # send later records, leaving a gap that the retry fills out of order.
        self._producer._sender.force_close()
        self.event.set()


def _discard(producer: Any) -> None:
    """Close a kafka-python producer now, aborting whatever it has not delivered.

    kafka-python 3.0.12's ``close(timeout)`` flushes first and raises KafkaTimeoutError,
    leaving its I/O thread running, when records cannot be delivered (dpkp/kafka-python
    PR #2537), so abort them the way ``close`` itself does after a timeout.
    """
    from kafka.errors import KafkaError

    sender = producer._sender
    sender.force_close()
    sender.join(5.0)
    try:
        producer.close(timeout=0)
    except KafkaError as e:  # pragma: no cover - only if the I/O thread did not stop in 5 s
        logger.debug("closing an abandoned Kafka client: %s", e)


class EdgeProducer:
    """Sends a device's records to Kafka through a disk spool, never losing one.

    Args:
        config: connection, spool and delivery settings.
        contracts: data contracts by id (usually :func:`fieldloop.contracts.load_contracts`).
        registry: Avro schemas (default: the ones shipped with fieldloop).

    Raises:
        SpoolBusyError: another producer has ``config.spool_dir`` open.
        SpoolCorruptError: the spool on disk cannot be trusted.
    """

    def __init__(
        self, config: EdgeProducerConfig, contracts: Mapping[str, DataContract], registry: SchemaRegistry | None = None
    ) -> None:
        self._cfg = config
        self._contracts = dict(contracts)
        self._registry = registry or default_registry()
        self._kafka_options = config.kafka_options()
        self._spool = DiskSpool(config.spool_config())

        self._send_lock = threading.Lock()  # sequence number and append happen as one step
        self._stats_lock = threading.Lock()
        self._accepted = 0
        self._refused: Counter[str] = Counter()
        self._spool_full = 0
        self._sent = 0
        self._acked = 0
        self._resends = 0
        self._failed_rounds = 0
        self._outages = 0
        self._sent_high = -1  # highest spool position ever handed to Kafka by this process

        self._closed = False
        self._close_lock = threading.Lock()
        self._paused = False
        self._stopping = threading.Event()
        self._work = threading.Event()  # new records (wakes an idle sender), resume, close
        self._kick = threading.Event()  # pause, resume, close: ends a paused wait or a backoff early
        self._round: _Round | None = None
        self._progress = threading.Condition()  # notified after every commit, for flush()
        self._producer: Any = None
        self._outage_since: float | None = None

        self._thread = threading.Thread(target=self._run, name="fieldloop-edge-sender", daemon=True)
        self._thread.start()
        pending = self._spool.pending_count()
        if pending:
            logger.info("edge producer: %d records from an earlier run wait in spool %s", pending, config.spool_dir)

    # -- public API ------------------------------------------------------------------
    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int:
        """Check, sequence, encode and spool one record; it is sent in the background.

        Args:
            contract_id: id of the stream's data contract, e.g. ``vehicle-frames-public``.
            device_id: the sending device; Kafka key, so the device's records stay in order.
            record: the record, matching the stream's latest Avro schema.

        Returns:
            The record's sequence number for ``device_id`` (1, 2, ...; never reused).

        Raises:
            RefusedError: the record may not or cannot be sent; ``reason`` says why.
                Nothing was spooled.
            SpoolFullError: the spool is full (policy ``reject``); retry later.
            IngestionError: the producer is closed.
        """
        if self._closed:
            raise IngestionError("this edge producer is closed; create a new one (the spool keeps unsent records)")
        try:
            contract, value = admit(
                self._contracts, self._registry, contract_id, device_id, record, self._cfg.max_record_bytes
            )
        except RefusedError as e:
            with self._stats_lock:
                self._refused[e.reason] += 1
            raise
        key = device_id.encode("utf-8")
        headers = [(H_CLASS, str(contract.data_class).encode())]
        if contract.tenant:
            headers.append((H_TENANT, contract.tenant.encode()))
        headers += [(H_CONTRACT, contract.id.encode()), (H_DEVICE, key)]
        with self._send_lock:
            seq = self._spool.last_seq(key) + 1
            entry = SpoolEntry(contract.topic, value, key, (*headers, (H_SEQ, str(seq).encode())), seq)
            try:
                self._spool.append(entry)
            except IngestionError as e:
                if e.retriable:
                    with self._stats_lock:
                        self._spool_full += 1
                raise
        with self._stats_lock:
            self._accepted += 1
        if not self._work.is_set():  # set() takes the condition lock and notifies; skip when pointless
            self._work.set()
        return seq

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every record spooled before this call is acknowledged by Kafka.

        Also makes the spool durable (unless ``fsync="never"``). Records dropped by the
        ``drop_oldest`` policy meanwhile count as done; see :attr:`stats`.

        Returns:
            True if all were acknowledged within ``timeout_s``; False otherwise (they
            stay in the spool, nothing is lost). Always False while paused with records pending.
        """
        target = self._spool.next_position
        self._spool.sync()
        deadline = time.monotonic() + timeout_s
        with self._progress:
            while self._spool.committed_position < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.25))
        return True

    def pause(self) -> None:
        """Stop talking to Kafka (as when the device goes offline); ``send`` keeps spooling.

        A round in flight is abandoned; its records stay in the spool and are sent again
        after :meth:`resume`.
        """
        self._paused = True
        self._interrupt()

    def resume(self) -> None:
        """Start delivering again after :meth:`pause`."""
        self._paused = False
        self._interrupt()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stats(self) -> ProducerStats:
        """What this producer did so far (see :class:`ProducerStats`)."""
        with self._stats_lock:
            return ProducerStats(
                accepted=self._accepted,
                refused=dict(self._refused),
                spool_full=self._spool_full,
                sent=self._sent,
                acked=self._acked,
                resends=self._resends,
                pending=self._spool.pending_count(),
                dropped_oldest=self._spool.dropped_count(),
                corrupt_skipped=self._spool.corrupt_count(),
                failed_rounds=self._failed_rounds,
                outages=self._outages,
            )

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush for up to ``timeout_s`` (unless paused), stop the sender and close the spool.

        Records not acknowledged by then stay in the spool and are sent by the next
        producer that opens the same ``spool_dir``. Idempotent.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if not self._paused and timeout_s > 0:
            self.flush(timeout_s)
        self._stopping.set()
        self._interrupt()
        self._thread.join(self._kafka_options["max_block_ms"] / 1000 + 10)
        if self._thread.is_alive():
            logger.warning("edge producer: the sender did not stop in time; closing the spool under it")
        pending = self._spool.pending_count()
        self._spool.close()
        if pending:
            logger.info(
                "edge producer closed; %d records stay in spool %s for the next start", pending, self._cfg.spool_dir
            )

    def __enter__(self) -> EdgeProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sender thread ---------------------------------------------------------------
    def _interrupt(self) -> None:
        self._work.set()
        self._kick.set()
        current = self._round
        if current is not None:
            current.event.set()

    def _run(self) -> None:
        backoff = self._cfg.backoff_initial_s
        try:
            while not self._stopping.is_set():
                try:
                    backoff = self._step(backoff)
                except Exception as e:
                    if self._stopping.is_set() and isinstance(e, IngestionError):
                        break  # close() closed the spool under a late round
                    # A device must not stop delivering for good because of one surprise:
                    # log it, keep the records in the spool and try again.
                    logger.exception(
                        "edge producer: unexpected error in the sender; records stay in the spool, retrying in %.1f s",
                        backoff,
                    )
                    self._drop_client()
                    backoff = self._wait_backoff(backoff)
        finally:
            self._drop_client()

    def _step(self, backoff: float) -> float:
        """One turn of the sender: idle, or deliver one round; returns the next backoff."""
        if self._paused:
            self._drop_client()
            # not woken by new records: a paused device spools at full speed
            self._kick.wait(1.0)
            self._kick.clear()
            return backoff
        self._work.clear()
        try:
            batch = self._spool.read(self._cfg.send_batch)
        except SpoolCorruptError as e:
            logger.error("edge producer: %s", e)
            self._spool.quarantine()
            return backoff
        if not batch:
            self._work.wait(1.0)
            return backoff
        try:
            self._deliver(batch)
        except _RoundAbandoned:
            self._drop_client()
            return backoff
        except _RoundFailed as e:
            self._drop_client()
            self._on_failure(e.__cause__ or e)
            return self._wait_backoff(backoff)
        self._spool.commit(batch[-1][0])
        with self._stats_lock:
            self._acked += len(batch)
        with self._progress:
            self._progress.notify_all()
        if self._outage_since is not None:
            logger.warning(
                "edge producer: Kafka at %s reachable again after %.1f s; %d records still spooled",
                self._cfg.bootstrap_servers,
                time.monotonic() - self._outage_since,
                self._spool.pending_count(),
            )
            self._outage_since = None
        return self._cfg.backoff_initial_s

    def _wait_backoff(self, backoff: float) -> float:
        """Sleep ``backoff`` (cut short by pause, resume or close); returns the next, doubled and capped."""
        self._kick.clear()
        # jitter keeps a fleet that lost the same broker from retrying in lockstep
        self._kick.wait(backoff * random.uniform(0.8, 1.2))
        return min(backoff * 2, self._cfg.backoff_max_s)

    def _deliver(self, batch: list[tuple[int, SpoolEntry]]) -> None:
        """Hand one round to Kafka and wait for every ack; raise if any record is not acknowledged."""
        from kafka import KafkaProducer
        from kafka.errors import KafkaError, KafkaTimeoutError

        if self._producer is None:
            try:
                self._producer = KafkaProducer(**self._kafka_options)
            except (KafkaError, OSError) as e:
                raise _RoundFailed(f"cannot connect: {e}") from e
        current = _Round(self._producer, len(batch))
        self._round = current
        send = self._producer.send
        handed = resent = 0
        try:
            try:
                for position, entry in batch:
                    if current.failure is not None or self._paused or self._stopping.is_set():
                        break
                    try:
                        future = send(
                            entry.topic,
                            value=entry.value,
                            key=entry.key,
                            headers=list(entry.headers),
                            timestamp_ms=entry.timestamp_ms,
                        )
                    except (KafkaError, OSError) as e:
                        raise _RoundFailed(str(e)) from e
                    future.add_callback(current.ok)
                    future.add_errback(current.failed)
                    handed += 1
                    resent += position <= self._sent_high
            finally:
                # counted once per round: a lock per record contends with the client's I/O thread
                with self._stats_lock:
                    self._sent += handed
                    self._resends += resent
                if handed:  # positions grow within a round
                    self._sent_high = max(self._sent_high, batch[handed - 1][0])
            deadline = time.monotonic() + self._cfg.send_timeout_s
            while True:
                if current.failure is not None:
                    raise _RoundFailed(str(current.failure)) from current.failure
                if self._paused or self._stopping.is_set():
                    raise _RoundAbandoned()
                if current.acked >= current.expected:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = KafkaTimeoutError(
                        f"{current.expected - current.acked} of {current.expected} records "
                        f"not acknowledged within {self._cfg.send_timeout_s} s"
                    )
                    raise _RoundFailed(str(error)) from error
                current.event.wait(min(remaining, 1.0))
        finally:
            self._round = None

    def _on_failure(self, error: BaseException | str) -> None:
        with self._stats_lock:
            self._failed_rounds += 1
            first = self._outage_since is None
            if first:
                self._outages += 1
        if first:
            self._outage_since = time.monotonic()
            # once per outage, not per record or retry: a device may be offline for hours
            logger.warning(
                "edge producer: cannot deliver to Kafka at %s (%s); %d records stay in spool %s and are "
                "retried with backoff up to %.0f s",
                self._cfg.bootstrap_servers,
                error,
                self._spool.pending_count(),
                self._cfg.spool_dir,
                self._cfg.backoff_max_s,
            )
        else:
            logger.debug("edge producer: retry failed: %s", error)

    def _drop_client(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            _discard(producer)
