"""The edge producer against a real broker: nothing lost, nothing reordered, nothing refused leaks.

Each test routes the packaged contracts to topics of its own (same class, tenant and
stream; a per-test topic name), creates them first (the broker does not auto-create),
and reads them back to the end with a plain kafka-python consumer.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from fieldloop.contracts import DataContract, load_contracts
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, decode, default_registry
from ingestion import EdgeProducer, EdgeProducerConfig, RefusedError
from ingestion._internal.spool import DiskSpool, SpoolConfig
from tests.kafka_topics import read_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
PYTHON = sys.executable  # this venv, wherever the checkout is
T0 = 1_700_000_000_000


def routed(run: str) -> dict[str, DataContract]:
    """The packaged contracts, each sent to a topic of this test run."""
    return {
        cid: c.model_copy(update={"topic_override": f"fieldloop.test.{run}.{cid}.v{c.schema_version}"})
        for cid, c in load_contracts().items()
    }


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        admin.close()


def distinct_in_order(records: list[Any]) -> tuple[dict[str, list[int]], int]:
    """Per device, its sequence numbers in log order after dropping repeats; and the repeat count.

    This is what the cloud does: drop duplicates by (device, seq), keep the first.
    """
    seen: set[tuple[str, int]] = set()
    per_device: dict[str, list[int]] = {}
    duplicates = 0
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        headers = dict(record.headers)
        device, seq = headers[H_DEVICE].decode(), int(headers[H_SEQ])
        if (device, seq) in seen:
            duplicates += 1
            continue
        seen.add((device, seq))
        per_device.setdefault(device, []).append(seq)
    return per_device, duplicates


def frame(vin: str, i: int) -> dict[str, Any]:
    return {
        "vin": vin,
        "driver_id": f"drv-{i % 7}",
        "ts": T0 + i * 100,
        "lat": 35.68 + i * 1e-5,
        "lon": 139.76,
        "speed_mps": 12.5 + (i % 10),
        "accel_mps2": -0.4,
        "steering_deg": 3.0,
        "brake": 0.1,
        "yaw_rate_dps": 0.5,
        "perception": {"vehicles": i % 4, "pedestrians": 1, "cyclists": 0},
        "intervention": i % 50 == 0,
    }


def reading(sensor: str, i: int) -> dict[str, Any]:
    return {
        "site": "kimitsu",
        "line": "bf-2",
        "sensor_id": sensor,
        "ts": T0 + i * 1000,
        "value": 1450.0 + i / 10,
        "unit": "Cel",
        "quality": "GOOD",
    }


def telemetry(device: str, i: int) -> dict[str, Any]:
    return {
        "device_id": device,
        "model_name": "fieldloop.vehicle-longitudinal",
        "model_version": "7",
        "ts": T0 + i,
        "latency_ms": 4.2,
        "ood_score": 0.05,
        "disagreement": 0.01,
        "intervention": False,
    }


def config(bootstrap: str, spool_dir: Path, **kw: Any) -> EdgeProducerConfig:
    # short timeouts keep outage tests in seconds; production defaults are longer
    defaults: dict[str, Any] = {
        "send_timeout_s": 3.0,
        "connect_timeout_s": 1.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 1.0,
        "linger_ms": 5,
    }
    return EdgeProducerConfig(bootstrap_servers=bootstrap, spool_dir=spool_dir, **{**defaults, **kw})


@pytest.fixture()
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture()
def contracts(run_id: str) -> dict[str, DataContract]:
    return routed(run_id)


def test_round_trip_keeps_every_record_its_headers_and_per_device_order(
    kafka_bootstrap: str, contracts: dict[str, DataContract], tmp_path: Path
) -> None:
    frames, plant, fleet = (
        contracts[c] for c in ("vehicle-frames-public", "plant-sensors-acme-steel", "fleet-telemetry")
    )
    create_topics(kafka_bootstrap, {frames.topic: 3, plant.topic: 2, fleet.topic: 1})
    vins = [f"JT{n:015d}" for n in range(5)]
    sent: dict[tuple[str, int], dict[str, Any]] = {}
    with EdgeProducer(config(kafka_bootstrap, tmp_path / "spool"), contracts) as producer:
        for i in range(300):
            for vin in vins:
                record = frame(vin, i)
                sent[(vin, producer.send("vehicle-frames-public", vin, record))] = record
            if i % 3 == 0:
                producer.send("plant-sensors-acme-steel", "ts-104", reading("ts-104", i))
                producer.send("fleet-telemetry", vins[0], telemetry(vins[0], i))
        assert producer.flush(30)
        stats = producer.stats
    assert stats.acked == stats.accepted == 1700 and stats.pending == 0 and stats.refused == {}

    registry = default_registry()
    records = read_all(kafka_bootstrap, frames.topic)
    partitions_of: dict[str, set[int]] = {}
    last_seq: dict[tuple[int, str], int] = {}
    for record in records:
        headers = dict(record.headers)
        vin, seq = headers[H_DEVICE].decode(), int(headers[H_SEQ])
        assert record.key == vin.encode()
        assert headers[H_CLASS] == b"public" and headers[H_CONTRACT] == b"vehicle-frames-public"
        assert H_TENANT not in headers  # public data has no tenant
        expected = sent[(vin, seq)]
        # the record has no driver_note (as a device on schema v1 would send): the optional field reads as null
        assert decode(record.value, registry) == {
            **expected,
            "driver_note": None,
            "ts": datetime.fromtimestamp(expected["ts"] / 1000, UTC),
        }
        assert seq > last_seq.get((record.partition, vin), 0), "a device's records must stay in order"
        last_seq[(record.partition, vin)] = seq
        partitions_of.setdefault(vin, set()).add(record.partition)
    assert {(dict(r.headers)[H_DEVICE].decode(), int(dict(r.headers)[H_SEQ])) for r in records} == set(sent)
    assert len(records) == len(sent)  # no outage, so no duplicates either
    assert all(len(p) == 1 for p in partitions_of.values())  # key = device: one partition each
    assert len(set().union(*partitions_of.values())) > 1  # and the devices do spread over partitions

    plant_records = read_all(kafka_bootstrap, plant.topic)
    assert len(plant_records) == 100
    assert {dict(r.headers)[H_TENANT] for r in plant_records} == {b"acme-steel"}
    assert {dict(r.headers)[H_CLASS] for r in plant_records} == {b"restricted"}
    assert [int(dict(r.headers)[H_SEQ]) for r in plant_records] == list(range(1, 101))
    assert len(read_all(kafka_bootstrap, fleet.topic)) == 100


def test_broker_outage_loses_nothing_and_keeps_order(
    private_kafka: Any, contracts: dict[str, DataContract], tmp_path: Path
) -> None:
    bootstrap = private_kafka.bootstrap
    topic = contracts["plant-sensors-acme-steel"].topic
    create_topics(bootstrap, {topic: 2})
    sensors = [f"ts-{n}" for n in range(4)]
    count = 0

    def burst(producer: EdgeProducer, n: int) -> None:
        nonlocal count
        for _ in range(n):
            sensor = sensors[count % len(sensors)]
            producer.send("plant-sensors-acme-steel", sensor, reading(sensor, count))
            count += 1

    with EdgeProducer(config(bootstrap, tmp_path / "spool"), contracts) as producer:
        burst(producer, 200)
        assert producer.flush(30)
        private_kafka.stop()
        burst(producer, 300)  # the device keeps working while the broker is gone
        assert not producer.flush(2)
        assert producer.stats.pending >= 300
        private_kafka.start()
        burst(producer, 100)
        assert producer.flush(60), "the spool must drain once the broker is back"
        stats = producer.stats

    assert stats.outages >= 1 and stats.failed_rounds >= 1 and stats.pending == 0
    per_device, duplicates = distinct_in_order(read_all(bootstrap, topic))
    assert {d: len(s) for d, s in per_device.items()} == dict.fromkeys(sensors, 150)
    for sensor, seqs in per_device.items():
        assert seqs == list(range(1, 151)), f"{sensor}: order changed or records lost"
    assert duplicates <= stats.resends  # a duplicate can only come from a re-send
    print(f"outage: {duplicates} duplicates dropped, {stats.resends} re-sends, {stats.failed_rounds} failed rounds")


DEVICE_SCRIPT = textwrap.dedent("""
    # A device process: `kill` spools records while offline and waits to be SIGKILLed;
    # `drain` starts on the same spool, sends a few more and flushes.
    import json, sys, time
    from pathlib import Path
    from fieldloop.contracts import load_contracts
    from ingestion import EdgeProducer, EdgeProducerConfig

    mode, bootstrap, spool_dir, run, delivered, spooled = sys.argv[1:7]
    contracts = {cid: c.model_copy(update={"topic_override": f"fieldloop.test.{run}.{cid}.v{c.schema_version}"})
                 for cid, c in load_contracts().items()}
    cfg = EdgeProducerConfig(bootstrap_servers=bootstrap, spool_dir=Path(spool_dir), send_timeout_s=5,
                             backoff_max_s=1, linger_ms=5)
    producer = EdgeProducer(cfg, contracts)

    def send(n, i0):
        return [producer.send("fleet-telemetry", "edge-7", {
            "device_id": "edge-7", "model_name": "fieldloop.vehicle-longitudinal", "model_version": "7",
            "ts": 1_700_000_000_000 + i, "latency_ms": 4.2, "ood_score": 0.1, "disagreement": 0.0,
            "intervention": False}) for i in range(i0, i0 + n)]

    first = send(int(delivered), 0)
    assert producer.flush(30)
    if mode == "kill":
        producer.pause()  # offline: what follows only reaches the spool
        print(json.dumps({"delivered": first, "spooled": send(int(spooled), 1000)}), flush=True)
        time.sleep(600)
    else:
        print(json.dumps({"delivered": first, "pending_at_exit": producer.stats.pending}), flush=True)
        producer.close()
""")


def test_a_killed_device_process_loses_nothing_and_never_reuses_a_sequence(
    kafka_bootstrap: str, run_id: str, contracts: dict[str, DataContract], tmp_path: Path
) -> None:
    topic = contracts["fleet-telemetry"].topic
    create_topics(kafka_bootstrap, {topic: 1})
    script = tmp_path / "device.py"
    script.write_text(DEVICE_SCRIPT)
    spool_dir = tmp_path / "spool"

    def device(mode: str, delivered: int, spooled: int = 0) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(PYTHON), str(script), mode, kafka_bootstrap, str(spool_dir), run_id, str(delivered), str(spooled)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )

    first = device("kill", delivered=5, spooled=40)
    try:
        line = first.stdout.readline() if first.stdout else ""
        assert line, "the device process died before spooling"
        before = json.loads(line)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert before == {"delivered": list(range(1, 6)), "spooled": list(range(6, 46))}
    with DiskSpool(SpoolConfig(directory=spool_dir)) as spool:  # the kill left them on disk, not in Kafka
        assert spool.pending_count() == 40
    assert len(read_all(kafka_bootstrap, topic)) == 5

    second = device("drain", delivered=5)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0
    after = json.loads(out)
    assert after == {"delivered": list(range(46, 51)), "pending_at_exit": 0}  # sequences continue, none reused

    per_device, _ = distinct_in_order(read_all(kafka_bootstrap, topic))
    assert per_device == {"edge-7": list(range(1, 51))}


def test_refused_records_never_reach_the_spool_or_kafka(
    kafka_bootstrap: str, contracts: dict[str, DataContract], tmp_path: Path
) -> None:
    audio, robot, camera, frames = (
        contracts[c]
        for c in (
            "worker-audio-acme-steel",
            "robot-joints-kansai-robotics",
            "camera-meta-public",
            "vehicle-frames-public",
        )
    )
    create_topics(kafka_bootstrap, {audio.topic: 1, robot.topic: 1, camera.topic: 1, frames.topic: 1})
    joints = {
        "robot_id": "arm-3",
        "operator_id": "op-12",
        "ts": T0,
        "joint_pos_rad": [0.1, 0.2, 1.3],
        "joint_torque_nm": [1.0, 2.0, 0.5],
        "gripper_pos": 0.4,
        "gripper_closed": False,
    }
    detections = [{"label": "pedestrian", "score": 0.91}] * 400  # about 8 KiB encoded
    camera_meta = {
        "camera_id": "cam-1",
        "vin": "JT000000000000001",
        "ts": T0,
        "frame_no": 1,
        "width": 1920,
        "height": 1080,
        "exposure_ms": 8.0,
        "detections": detections,
    }
    audio_features = {"site": "kimitsu", "worker_id": "w-88", "ts": T0, "db_level": 82.0, "mfcc": [1.0, 2.0]}
    good = frame("JT000000000000009", 1)
    cases = [
        ("raw-secret", "worker-audio-acme-steel", "mic-1", audio_features),
        ("no-contract", "vehicle-frames-unknown", "JT000000000000009", good),
        ("non-finite", "robot-joints-kansai-robotics", "arm-3", {**joints, "joint_torque_nm": [1.0, math.nan, 0.5]}),
        ("non-finite", "vehicle-frames-public", "JT000000000000009", {**good, "speed_mps": math.inf}),
        ("oversized", "camera-meta-public", "cam-1", camera_meta),
        ("schema-mismatch", "vehicle-frames-public", "JT000000000000009", {**good, "speed_mps": "fast"}),
        (
            "schema-mismatch",
            "vehicle-frames-public",
            "JT000000000000009",
            {**good, "perception": {"vehicles": 1.5, "pedestrians": 0, "cyclists": 0}},
        ),  # would be truncated to 1
        ("schema-mismatch", "vehicle-frames-public", "JT000000000000009", {**good, "intervention": 1}),
        (
            "schema-mismatch",
            "vehicle-frames-public",
            "JT000000000000009",
            {k: v for k, v in good.items() if k != "lat"},
        ),
        ("schema-mismatch", "vehicle-frames-public", "JT000000000000009", {**good, "plate": "品川300あ1234"}),
        ("schema-mismatch", "robot-joints-kansai-robotics", "arm-3", {**joints, "joint_pos_rad": "0.1,0.2"}),
        ("bad-device", "vehicle-frames-public", "", good),
    ]
    with EdgeProducer(config(kafka_bootstrap, tmp_path / "spool", max_record_bytes=4096), contracts) as producer:
        for reason, contract_id, device, record in cases:
            with pytest.raises(RefusedError) as err:
                producer.send(contract_id, device, record)
            assert err.value.reason == reason, f"{reason}: {err.value}"
        assert "品川" not in str(err.value)  # refusal messages never echo record values
        assert producer.stats.pending == 0 and producer.stats.accepted == 0
        # the device's sequence did not advance for refused records
        assert producer.send("vehicle-frames-public", "JT000000000000009", good) == 1
        assert producer.send("robot-joints-kansai-robotics", "arm-3", joints) == 1
        assert producer.flush(30)
        stats = producer.stats
    assert stats.refused == {
        "raw-secret": 1,
        "no-contract": 1,
        "non-finite": 2,
        "oversized": 1,
        "schema-mismatch": 6,
        "bad-device": 1,
    }
    assert stats.accepted == 2
    assert read_all(kafka_bootstrap, audio.topic) == []
    assert read_all(kafka_bootstrap, camera.topic) == []
    assert [int(dict(r.headers)[H_SEQ]) for r in read_all(kafka_bootstrap, frames.topic)] == [1]
    assert [int(dict(r.headers)[H_SEQ]) for r in read_all(kafka_bootstrap, robot.topic)] == [1]


def test_accepted_count_reconciles_with_distinct_records_on_kafka(
    kafka_bootstrap: str, contracts: dict[str, DataContract], tmp_path: Path
) -> None:
    topic = contracts["vehicle-frames-public"].topic
    create_topics(kafka_bootstrap, {topic: 3})
    vins = [f"JT{n:015d}" for n in range(8)]
    spool_dir = tmp_path / "spool"

    def send(producer: EdgeProducer, start: int, n: int) -> None:
        for i in range(start, start + n):
            producer.send("vehicle-frames-public", vins[i % len(vins)], frame(vins[i % len(vins)], i))

    with EdgeProducer(config(kafka_bootstrap, spool_dir, send_batch=50), contracts) as first:
        send(first, 0, 600)
        assert first.flush(30)
        accepted = first.stats.accepted
    # The cursor is not fsynced in "batch" mode, so a power loss may roll it back; losing it
    # entirely is the worst case: the next start re-sends every record still in the spool.
    (spool_dir / "cursor.json").unlink()
    with EdgeProducer(config(kafka_bootstrap, spool_dir, send_batch=50), contracts) as second:
        assert second.stats.pending == 600
        send(second, 600, 600)
        assert second.flush(30)
        stats = second.stats
    accepted += stats.accepted

    per_device, duplicates = distinct_in_order(read_all(kafka_bootstrap, topic))
    assert accepted == sum(len(s) for s in per_device.values()) == 1200
    assert duplicates == 600  # the re-sent records, and nothing else, arrived twice
    assert stats.sent == 1200 and stats.acked == 1200 and stats.pending == 0
    assert all(seqs == list(range(1, 151)) for seqs in per_device.values())


@pytest.fixture()
def unreachable(tmp_path: Path) -> Iterator[str]:
    """host:port where nothing listens (a port we bound and released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"127.0.0.1:{port}"


def test_a_device_that_starts_offline_spools_and_reports_it(
    unreachable: str, contracts: dict[str, DataContract], tmp_path: Path
) -> None:
    cfg = config(unreachable, tmp_path / "spool")
    started = time.monotonic()
    producer = EdgeProducer(cfg, contracts)  # no broker: construction must not block or fail
    try:
        assert time.monotonic() - started < 1.0
        seqs = [producer.send("fleet-telemetry", "edge-1", telemetry("edge-1", i)) for i in range(20)]
        assert seqs == list(range(1, 21))
        assert not producer.flush(2.5)
        stats = producer.stats
        assert stats.pending == 20 and stats.acked == 0 and stats.outages == 1 and stats.failed_rounds >= 1
    finally:
        producer.close(timeout_s=0.5)
    with DiskSpool(SpoolConfig(directory=tmp_path / "spool")) as spool:
        assert spool.pending_count() == 20 and spool.last_seq("edge-1") == 20


def test_a_full_spool_refuses_with_a_retriable_error_and_keeps_what_it_has(
    unreachable: str, contracts: dict[str, DataContract], tmp_path: Path
) -> None:
    from ingestion import SpoolFullError

    cfg = config(unreachable, tmp_path / "spool", spool_max_bytes=64 * 1024, max_record_bytes=16 * 1024)
    with EdgeProducer(cfg, contracts) as producer:
        accepted = 0
        with pytest.raises(SpoolFullError) as err:
            for i in range(10_000):
                producer.send("fleet-telemetry", "edge-2", telemetry("edge-2", i))
                accepted += 1
        assert err.value.retriable
        stats = producer.stats
        assert 100 < accepted < 10_000
        assert stats.accepted == stats.pending == accepted and stats.spool_full == 1 and stats.dropped_oldest == 0
        producer.pause()  # nothing to wait for at close
    with DiskSpool(SpoolConfig(directory=tmp_path / "spool")) as spool:
        assert spool.last_seq("edge-2") == accepted  # the refused record did not use up a sequence number


def test_config_mirrors_the_kafka_section_and_rejects_what_it_cannot_use(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from fieldloop.config import KafkaConfig

    kafka = KafkaConfig(
        bootstrap="broker-1.example.jp:9096,broker-2.example.jp:9096",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="edge",
        sasl_password="s3cret",
    )
    cfg = EdgeProducerConfig.from_kafka_config(kafka, spool_dir=tmp_path, linger_ms=50)
    options = cfg.kafka_options()
    assert options["bootstrap_servers"] == ["broker-1.example.jp:9096", "broker-2.example.jp:9096"]
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert options["sasl_plain_password"] == "s3cret" and "s3cret" not in repr(cfg)
    assert options["acks"] == "all" and options["enable_idempotence"] is True and options["linger_ms"] == 50
    assert cfg.compression == "zstd"  # zstandard is installed in this venv
    assert cfg.spool_max_bytes == 256 * 1024 * 1024 and cfg.spool_full_policy == "reject" and cfg.fsync == "batch"
    with pytest.raises(ValidationError, match="linger"):
        EdgeProducerConfig.from_kafka_config(kafka, spool_dir=tmp_path, linger="50")
    with pytest.raises(ValidationError, match="needs sasl_username"):
        EdgeProducerConfig(
            bootstrap_servers="b:9096", spool_dir=tmp_path, security_protocol="SASL_SSL", sasl_mechanism="PLAIN"
        )
    with pytest.raises(ValidationError, match="spool_segment_bytes"):
        EdgeProducerConfig(
            bootstrap_servers="b:9096",
            spool_dir=tmp_path,
            spool_max_bytes=4 * 1024 * 1024,
            spool_segment_bytes=4 * 1024 * 1024,
        )
    assert list(tmp_path.iterdir()) == []  # validation happens before the spool is opened
