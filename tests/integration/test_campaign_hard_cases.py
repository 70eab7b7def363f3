"""Hard cases reach the real broker on their tenant's topic, only as a signed campaign asks.

Two devices, a consortium car and an ACME van, each follow a campaign signed into its fleet's
role in the test's repository (trigger on every frame, 3 windows an hour); their windows go
through the edge SDK's spool to ``fieldloop.public.hard_cases.v1`` and
``fieldloop.restricted.acme-mobility.hard_cases.v1`` and are read back and decoded with the
project's wire format: each topic holds only its own tenant's device, within the budget.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from actuation.agent import Agent, DeviceConfig, provision
from actuation.agent.sources import simulated_frames
from actuation.agent.telemetry import producer
from fieldloop.contracts import load_contracts
from fieldloop.wire import decode, default_registry
from tests.kafka_topics import read_all
from tests.release_fixtures import running_campaign
from tests.tuf_repository import BASE_URL, MemoryFetcher, ReleaseRepository, tiny_model

FRAMES = 20
FLEETS = {"public-cars": None, "acme-vans": "acme-mobility"}


def test_hard_cases_land_on_their_tenants_topic_within_the_budget(kafka_bootstrap: str, tmp_path: Path) -> None:
    contracts = load_contracts()
    topics = {
        "public-cars": contracts["hard-cases-public"].topic,
        "acme-vans": contracts["hard-cases-acme-mobility"].topic,
    }
    assert topics == {
        "public-cars": "fieldloop.public.hard_cases.v1",
        "acme-vans": "fieldloop.restricted.acme-mobility.hard_cases.v1",
    }
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        for topic in [*topics.values(), contracts["fleet-telemetry"].topic]:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()

    repo = ReleaseRepository(tmp_path / "cloud", fleets=tuple(FLEETS))
    run = uuid.uuid4().hex[:8]
    devices = {}
    for fleet, tenant in FLEETS.items():
        repo.release(fleet, 1, tiny_model(), fleet_tenant=tenant)
        repo.campaigns(running_campaign(fleet, f"{fleet}-it", 4, 2))
        device_id = f"camp-it-{fleet}-{run}"
        config = DeviceConfig(
            device_id=device_id, fleet=fleet, tenant=tenant, repo_url=BASE_URL, task="vehicle-longitudinal"
        )
        device = provision(tmp_path / device_id, config, repo.root_bytes)
        sink = producer(kafka_bootstrap, device.spool, tenant)
        try:
            agent = Agent(device, telemetry=sink, fetcher=MemoryFetcher(repo))
            assert agent.update().state == "updated"
            assert [c.id for c in agent.collector.active()] == [f"{fleet}-it"]
            agent.run(itertools.islice(simulated_frames("vehicle-longitudinal", 5.0), FRAMES), paced=False)
            assert agent.collector.sent == 3 and agent.collector.skipped["budget"] > 0
            assert sink.flush(30)
        finally:
            sink.close()
        devices[fleet] = device_id

    registry = default_registry()
    for fleet, topic in topics.items():
        mine = [r for r in read_all(kafka_bootstrap, topic) if r.key and r.key.decode().endswith(run)]
        assert {r.key.decode() for r in mine} == {devices[fleet]}  # never the other tenant's device
        records = [decode(r.value, registry) for r in mine]
        assert len(records) == 3
        assert [len(r["frames"]) for r in records] == [3, 6, 6]
        for record in records:
            assert (record["fleet"], record["campaign_id"], record["trigger"]) == (fleet, f"{fleet}-it", "speed_mps>=0")
            # up to 4 frames to the trigger's (fewer at start: the device had seen fewer), then 2
            assert len(record["frames"]) == record["trigger_index"] + 1 + 2 and record["trigger_index"] <= 3
            assert record["signals"][0] == "speed_mps" and record["model_version"] == "1"
