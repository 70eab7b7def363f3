"""Component fixtures: a lake of the test's own, and bronze written by the real bronze job.

``write_bronze`` takes what a simulated fleet sent (:mod:`tests.fleet_rows`) and writes it
with ``BronzeJob.process_batch``, the code path ``fieldloop ingest`` runs, without a broker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import load_contracts
from fieldloop.residency import ResidencyGuard
from fieldloop.wire import default_registry
from ingestion.cloud.bronze import BronzeJob
from ingestion.simulator import SentRecord
from tests.fleet_rows import KAFKA_SCHEMA, kafka_rows, subscribed
from tests.tiers import mark_tier


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
        rows = kafka_rows(subscribed(sent, contracts, job.by_topic), contracts, offsets["next"])
        offsets["next"] += len(rows)
        job.process_batch(spark.createDataFrame(rows, KAFKA_SCHEMA), batch_id)

    return write


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this tier is marked ``component``."""
    mark_tier(items, Path(__file__).parent, "component")
