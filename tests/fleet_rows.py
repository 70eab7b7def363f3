"""A simulated fleet's records as Spark's Kafka source would give them, without a broker.

The fleet simulator sends through an in-memory sink that admits records as the edge SDK
does (:func:`simulate`); :func:`kafka_rows` shapes each sent record like a row of Spark's
Kafka source, for ``BronzeJob.process_batch``: the same code path ``fieldloop ingest`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from fieldloop.contracts import DataContract, load_contracts
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, default_registry
from ingestion.simulator import FleetSpec, MemoryRawSender, MemorySink, SentRecord, Simulation

KAFKA_SCHEMA = (
    "topic STRING, partition INT, offset LONG, timestamp TIMESTAMP, key BINARY, value BINARY, "
    "headers ARRAY<STRUCT<key: STRING, value: BINARY>>"
)


def kafka_rows(sent: Iterable[SentRecord], contracts: Mapping[str, DataContract], first_offset: int = 0) -> list[tuple]:
    """Rows as Spark's Kafka source would give them for ``sent``."""
    now = datetime.now(UTC)
    rows = []
    for i, s in enumerate(sent):
        c = contracts[s.contract_id]
        headers = {H_CLASS: str(c.data_class), H_CONTRACT: c.id, H_DEVICE: s.device_id, H_SEQ: str(s.seq)}
        if c.tenant:
            headers[H_TENANT] = c.tenant
        rows.append(
            (
                c.topic,
                0,
                first_offset + i,
                now,
                s.device_id.encode(),
                s.payload,
                [(k, v.encode()) for k, v in headers.items()],
            )
        )
    return rows


def simulate(spec: FleetSpec) -> list[SentRecord]:
    """What a simulated fleet sends (no faults)."""
    contracts, registry = load_contracts(), default_registry()
    sink = MemorySink(contracts, registry)
    Simulation(spec, [], contracts, registry).run(sink, MemoryRawSender())
    return sink.sent


def subscribed(
    sent: Iterable[SentRecord], contracts: Mapping[str, DataContract], topics: Iterable[str]
) -> list[SentRecord]:
    """What a bronze job subscribed to ``topics`` reads of ``sent``: a stream whose contract
    keeps it out of the lake (e.g. Osaka-only data and a Tokyo lake) stays in Kafka."""
    wanted = set(topics)
    return [s for s in sent if contracts[s.contract_id].topic in wanted]


def telemetry_record(device: str, ts: datetime, **changes: object) -> dict[str, object]:
    """One telemetry.v3 record of a car running a model, with ``changes`` applied."""
    return {
        "device_id": device,
        "model_name": "fieldloop.vehicle-longitudinal",
        "model_version": "3",
        "ts": ts,
        "latency_ms": 1.2,
        "ood_score": 0.1,
        "disagreement": 0.0,
        "intervention": False,
        "update_state": "up-to-date",
        "fleet": "public-cars",
        "shadow_version": None,
        "shadow_disagreement": None,
        "shadow_ood_score": None,
        "error": None,
    } | changes
