"""Bronze tables written by the real bronze job from a simulated fleet, without a broker.

The fleet simulator sends through an in-memory sink that admits records as the edge SDK
does; each sent record becomes a row shaped like Spark's Kafka source, and
``BronzeJob.process_batch`` writes it - the same code path ``fieldloop ingest`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import DataContract, load_contracts
from fieldloop.residency import ResidencyGuard
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, default_registry
from ingestion.cloud.bronze import BronzeJob
from ingestion.simulator import FleetSpec, MemoryRawSender, MemorySink, SentRecord, Simulation
from tests.tiers import mark_tier

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


@pytest.fixture
def lake_cfg(cfg: FieldloopConfig, tmp_path: Path) -> FieldloopConfig:
    """The effective config with a lake and a key ring of this test's own."""
    return load_config(
        {
            "FIELDLOOP_HOME": str(cfg.home),
            "FIELDLOOP_LAKE_URI": str(tmp_path / "lake"),
            "FIELDLOOP_REFINE_KEY_SOURCE": f"file:{tmp_path / 'keys.json'}",
        }
    )


@pytest.fixture
def write_bronze(spark, lake_cfg: FieldloopConfig) -> Callable[[list[SentRecord], int], None]:
    """``write_bronze(sent, batch_id)``: one bronze micro-batch of these records (one commit per table)."""
    contracts = load_contracts()
    job = BronzeJob(lake_cfg, spark, contracts, default_registry(), ResidencyGuard.from_config(lake_cfg))
    offsets = {"next": 0}

    def write(sent: list[SentRecord], batch_id: int) -> None:
        rows = kafka_rows(sent, contracts, offsets["next"])
        offsets["next"] += len(rows)
        job.process_batch(spark.createDataFrame(rows, KAFKA_SCHEMA), batch_id)

    return write


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this tier is marked ``component``."""
    mark_tier(items, Path(__file__).parent, "component")
