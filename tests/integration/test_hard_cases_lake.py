"""Hard cases from a device into gold: agent -> real broker -> bronze job -> ``refine`` -> gold.

A consortium car follows a campaign that fires on every frame, 3 windows an hour, 12 frames
up to the trigger's and 5 after. Its windows hold 6, 12 and 17 frames (the device had seen
fewer at first): the first two are too short for a ``vehicle-longitudinal`` row (15 frames),
the third gives rows at its frames 9, 10 and 11 (the trigger's). All three go through the
real broker and the bronze job (``available_now``) into the lake, and ``refine`` (the
function ``fieldloop refine`` runs) takes them to silver and the hard-case gold table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from actuation.agent import Agent, DeviceConfig, provision
from actuation.agent.sources import simulated_frames
from actuation.agent.telemetry import producer
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import load_contracts
from fieldloop.keys import load_key_ring
from fieldloop.residency import ResidencyGuard
from fieldloop.wire import default_registry
from ingestion.cloud.bronze import BronzeJob
from ingestion.cloud.topics import apply_topics
from refinement.run import refine
from tests.release_fixtures import running_campaign
from tests.stacks import PrivateKafka, started_private_kafka
from tests.tuf_repository import BASE_URL, MemoryFetcher, ReleaseRepository, tiny_model

FLEET = "public-cars"
GOLD = "hard_cases_vehicle_longitudinal_public"


@pytest.fixture()
def broker(tmp_path: Path, cfg: FieldloopConfig) -> Iterator[PrivateKafka]:
    with started_private_kafka(tmp_path, cfg) as b:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            apply_topics(admin, load_contracts(), partitions=1)
        finally:
            admin.close()
        yield b


def test_a_devices_hard_cases_reach_gold_as_the_tasks_rows(spark, broker: PrivateKafka, tmp_path: Path) -> None:
    repo = ReleaseRepository(tmp_path / "cloud", fleets=(FLEET,))
    repo.release(FLEET, 1, tiny_model())
    repo.campaigns(running_campaign(FLEET, f"{FLEET}-lake", 12, 5))
    config = DeviceConfig(device_id="car-lake-1", fleet=FLEET, repo_url=BASE_URL, task="vehicle-longitudinal")
    device = provision(tmp_path / "car-lake-1", config, repo.root_bytes)
    sink = producer(broker.bootstrap, device.spool, None)
    try:
        agent = Agent(device, telemetry=sink, fetcher=MemoryFetcher(repo))
        assert agent.update().state == "updated"
        agent.run(itertools.islice(simulated_frames("vehicle-longitudinal", 5.0), 24), paced=False)
        assert agent.collector.sent == 3
        assert sink.flush(30)
    finally:
        sink.close()

    lake_cfg = load_config(
        {
            "FIELDLOOP_HOME": str(broker.cfg.home),
            "FIELDLOOP_LAKE_URI": str(tmp_path / "lake"),
            "FIELDLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "FIELDLOOP_REFINE_KEY_SOURCE": f"file:{tmp_path / 'keys.json'}",
        }
    )
    contracts = load_contracts()
    load_key_ring(lake_cfg.key_source, create_for=[c.tenant for c in contracts.values()])
    bronze = BronzeJob(lake_cfg, spark, contracts, default_registry(), ResidencyGuard.from_config(lake_cfg))
    bronze.start(available_now=True).awaitTermination(300)

    result = refine(lake_cfg, streams=["hard-cases-public"], spark=spark)
    [silver] = [r for r in result.reports if r.table == "hard_cases_public"]
    assert silver.rows_in == 3 and silver.rows_out == 3 and silver.reconciles
    [gold] = [g for g in result.gold if g.table == GOLD]
    assert gold.windows == {"windows": 3, "used": 1, "too_short": 2, "unfit": 0, "missing": 0}
    rows = spark.read.format("delta").load(gold.path).orderBy("frame").collect()
    assert [r["frame"] for r in rows] == [-2, -1, 0] and [r["is_trigger"] for r in rows] == [False, False, True]
    for row in rows:
        assert row["_device"] != "car-lake-1" and len(row["features"]) == 53 and row["target"] is not None
        assert (row["campaign_id"], row["trigger"], row["model_version"]) == (f"{FLEET}-lake", "speed_mps>=0", "1")
        assert row["model_name"] == "fieldloop.vehicle-longitudinal" and len(row["outputs"]) == len(row["output_names"])
