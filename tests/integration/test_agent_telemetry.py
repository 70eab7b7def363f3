"""The edge agent's telemetry reaches the real broker through the edge SDK's spool.

A device updated from the test's repository runs frames through its model and the safety
monitor; a plain KafkaConsumer reads ``fieldloop.fleet.telemetry.v1`` back and decodes each
record with the project's wire format (Avro single-object, the writer schema by fingerprint:
``telemetry.v3``, with the agent's update state and fleet).
"""

from __future__ import annotations

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
from tests.tuf_repository import BASE_URL, MemoryFetcher, ReleaseRepository, tiny_model

FRAMES = 30
MODEL = "fieldloop.vehicle-longitudinal"


def test_the_agents_telemetry_is_read_back_from_the_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = load_contracts()["fleet-telemetry"].topic
    assert topic == "fieldloop.fleet.telemetry.v1"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()

    repo = ReleaseRepository(tmp_path / "cloud")
    repo.release("public-cars", 1, tiny_model())
    device_id = f"agent-it-{uuid.uuid4().hex[:8]}"
    config = DeviceConfig(device_id=device_id, fleet="public-cars", repo_url=BASE_URL, task="vehicle-longitudinal")
    device = provision(tmp_path / "device", config, repo.root_bytes)
    sink = producer(kafka_bootstrap, device.spool)
    try:
        agent = Agent(device, telemetry=sink, fetcher=MemoryFetcher(repo))
        assert agent.update().state == "updated"
        agent.run(itertools.islice(simulated_frames("vehicle-longitudinal", 5.0), FRAMES), paced=False)
        assert sink.flush(30)
    finally:
        sink.close()

    registry = default_registry()
    ours = [r for r in read_all(kafka_bootstrap, topic) if r.key == device_id.encode()]
    assert len(ours) == FRAMES
    records = [decode(r.value, registry) for r in ours]
    assert [int(dict(r.headers)["fieldloop.seq"]) for r in ours] == list(range(1, FRAMES + 1))
    assert {(r["device_id"], r["model_name"], r["model_version"]) for r in records} == {(device_id, MODEL, "1")}
    assert {r["update_state"] for r in records} == {"updated"}  # telemetry.v2, written by the agent
    assert {(r["fleet"], r["shadow_version"], r["error"]) for r in records} == {("public-cars", None, None)}  # v3
    # the first 9 frames fill the feature window: the monitor commands the fallback
    assert [r["intervention"] for r in records[:9]] == [True] * 9
    assert all(0 <= r["ood_score"] < 0.8 and r["latency_ms"] > 0 for r in records)
