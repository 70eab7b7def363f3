"""Kafka -> bronze on a real broker and real Spark/Delta: exactly once, and every bad record explained.

Records are published the way devices and broken devices would: valid single-object
Avro with fieldloop headers, resends of the same (device, seq), and each kind of bad
input. The reconciliation the issue asks for must hold exactly:
published = bronze rows + quarantined rows + duplicates dropped.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from deltalake import DeltaTable
from kafka import KafkaAdminClient, KafkaProducer

from fieldloop.catalog import duplicates_dropped
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import load_contracts
from fieldloop.lineage import TableGovernance
from fieldloop.residency import ResidencyGuard
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, default_registry, encode
from ingestion.cloud.bronze import BronzeJob, checkpoint_path, targets
from ingestion.cloud.topics import apply_topics
from tests.stacks import PrivateKafka, started_private_kafka

CONTRACTS = load_contracts()
REG = default_registry()
FRAMES = CONTRACTS["vehicle-frames-public"]
PLANT = CONTRACTS["plant-sensors-acme-steel"]
NOW_MS = int(time.time() * 1000)


def frame(i: int, **over: object) -> dict:
    rec = {
        "vin": f"JT{i % 5:015d}",
        "driver_id": f"drv-{i % 5}",
        "ts": NOW_MS - 60_000 + i,
        "lat": 35.68,
        "lon": 139.76,
        "speed_mps": 10.0 + i % 7,
        "accel_mps2": 0.1,
        "steering_deg": 1.0,
        "brake": 0.0,
        "yaw_rate_dps": 0.2,
        "perception": {"vehicles": 2, "pedestrians": 0, "cyclists": 1},
        "intervention": False,
    }
    rec.update(over)
    return rec


def reading(i: int) -> dict:
    return {
        "site": "kimitsu",
        "line": "bf-2",
        "sensor_id": f"temp-{i % 3}",
        "ts": NOW_MS - 30_000 + i,
        "value": 1180.0 + i,
        "unit": "Cel",
        "quality": "GOOD",
    }


def headers(contract, device: str, seq: int | None, **over: str | None) -> list[tuple[str, bytes]]:
    h = {
        H_CLASS: str(contract.data_class),
        H_TENANT: contract.tenant,
        H_CONTRACT: contract.id,
        H_DEVICE: device,
        H_SEQ: None if seq is None else str(seq),
    }
    h.update(over)
    return [(k, v.encode()) for k, v in h.items() if v is not None]


class Publisher:
    def __init__(self, bootstrap: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20)
        self.sent = 0

    def __call__(self, contract, device: str, value: bytes, seq: int | None, **over: str | None) -> None:
        self.producer.send(
            contract.topic, key=device.encode(), value=value, headers=headers(contract, device, seq, **over)
        )
        self.sent += 1

    def flush(self) -> None:
        self.producer.flush()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, cfg: FieldloopConfig) -> Iterator[PrivateKafka]:
    with started_private_kafka(tmp_path_factory.mktemp("bronze-kafka"), cfg) as b:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        apply_topics(admin, CONTRACTS, partitions=2)
        admin.close()
        yield b


@pytest.fixture(scope="module")
def job_cfg(broker: PrivateKafka, tmp_path_factory: pytest.TempPathFactory) -> FieldloopConfig:
    lake = tmp_path_factory.mktemp("lake")
    return load_config(
        {
            "FIELDLOOP_HOME": str(broker.cfg.home),
            "FIELDLOOP_LAKE_URI": str(lake),
            "FIELDLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
        }
    )


def run_once(spark, job_cfg: FieldloopConfig, max_record_bytes: int = 8192) -> BronzeJob:
    job = BronzeJob(
        job_cfg, spark, CONTRACTS, REG, ResidencyGuard.from_config(job_cfg), max_record_bytes=max_record_bytes
    )
    job.start(available_now=True).awaitTermination(300)
    return job


def rows(path: str) -> list[dict]:
    return DeltaTable(path).to_pyarrow_table().to_pylist() if Path(path).exists() else []


def duplicates_in_log(path: str) -> int:
    """Duplicates dropped, read back from the bronze table's own commits."""
    return duplicates_dropped(DeltaTable(path).history()) or 0


def test_bronze_exactly_once_with_quarantine_and_reconciliation(spark, broker, job_cfg) -> None:
    publish = Publisher(broker.bootstrap)
    fr = REG.get("vehicle_frames")
    planted: Counter[str] = Counter()

    for i in range(40):  # valid, 5 vehicles
        publish(FRAMES, f"JT{i % 5:015d}", encode(frame(i), fr), seq=i)
    for i in range(0, 40, 4):  # resends of 10 of them
        publish(FRAMES, f"JT{i % 5:015d}", encode(frame(i), fr), seq=i)
    for i in range(12):  # a restricted stream of its tenant
        publish(PLANT, f"temp-{i % 3}", encode(reading(i), REG.get("plant_sensors")), seq=i)

    dev = "JT-BROKEN-DEVICE0"
    bad = [
        ("truncated", {"value": b"\xc3\x01\x00"}),
        ("bad-magic", {"value": b'{"vin": "JT1"}'}),
        ("unknown-fingerprint", {"value": b"\xc3\x01" + bytes(8) + b"\x02"}),
        ("undecodable", {"value": fr.header + b"\xff\xff\xff\xff\xff"}),  # wrong types: not a VehicleFrame body
        ("non-finite", {"value": encode(frame(100, speed_mps=float("nan")), fr)}),
        ("future-timestamp", {"value": encode(frame(101, ts=NOW_MS + 10 * 24 * 3600 * 1000), fr)}),
        ("oversized", {"value": encode(frame(102, driver_id="x" * 9000), fr)}),
        ("unknown-class", {"value": encode(frame(103), fr), "over": {H_CLASS: "confidential"}}),
        ("raw-secret", {"value": encode(frame(104), fr), "over": {H_CLASS: "secret"}}),
        ("missing-sequence", {"value": encode(frame(105), fr), "seq": None}),
        ("contract-mismatch", {"value": encode(frame(106), fr), "over": {H_CONTRACT: "someone-else"}}),
    ]
    for n, (reason, spec) in enumerate(bad):
        publish(FRAMES, dev, spec["value"], seq=spec.get("seq", 1000 + n), **spec.get("over", {}))
        planted[reason] += 1
    publish(PLANT, "temp-9", encode(reading(50), REG.get("plant_sensors")), seq=50, **{H_TENANT: None})
    planted["missing-tenant"] += 1
    publish.flush()

    job = run_once(spark, job_cfg)
    frames_t, plant_t = (next(t for t in targets(job_cfg, CONTRACTS) if t.contract.id == c.id) for c in (FRAMES, PLANT))

    bronze_frames = rows(frames_t.bronze_path)
    assert len(bronze_frames) == 40
    assert len({(r["_device_id"], r["_seq"]) for r in bronze_frames}) == 40
    assert {r["vin"] for r in bronze_frames} == {f"JT{i:015d}" for i in range(5)}
    assert len(rows(plant_t.bronze_path)) == 12

    quarantined = rows(frames_t.quarantine_path) + rows(plant_t.quarantine_path)
    assert Counter(r["reason"] for r in quarantined) == planted
    raw = {r["reason"]: r["_value"] for r in quarantined}
    assert raw["truncated"] == b"\xc3\x01\x00"  # raw bytes kept for forensics

    dups = duplicates_in_log(frames_t.bronze_path) + duplicates_in_log(plant_t.bronze_path)
    assert dups == 10
    total_landed = len(bronze_frames) + len(rows(plant_t.bronze_path)) + len(quarantined) + dups
    assert total_landed == publish.sent == sum(r.consumed for r in job.reports)

    # governance travels with the tables
    props = DeltaTable(plant_t.bronze_path).metadata().configuration
    gov = TableGovernance.from_delta_properties(props)
    assert (gov.data_class, gov.tenant, gov.contract_id, gov.residency_region) == (
        "restricted",
        "acme-steel",
        "plant-sensors-acme-steel",
        "ap-northeast-1",
    )
    assert props["fieldloop.layer"] == "bronze"

    # a second run with nothing new changes nothing; a late resend is dropped and counted
    version = DeltaTable(frames_t.bronze_path).version()
    run_once(spark, job_cfg)
    assert DeltaTable(frames_t.bronze_path).version() == version
    publish(FRAMES, "JT000000000000001", encode(frame(1), fr), seq=1)
    publish.flush()
    run_once(spark, job_cfg)
    assert len(rows(frames_t.bronze_path)) == 40
    assert duplicates_in_log(frames_t.bronze_path) + duplicates_in_log(plant_t.bronze_path) == 11


def own_lake(broker: PrivateKafka, tmp_path: Path, **extra: str) -> FieldloopConfig:
    """A config reading the module's broker into a lake (and checkpoint) of the test's own."""
    return load_config(
        {
            "FIELDLOOP_HOME": str(broker.cfg.home),
            "FIELDLOOP_LAKE_URI": str(tmp_path / "lake"),
            "FIELDLOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
            **extra,
        }
    )


def test_after_a_checkpoint_reset_every_bad_record_lands_in_quarantine_once(spark, broker, tmp_path) -> None:
    """The checkpoint is lost: the next run starts again at batch 0 and reads every topic from its
    earliest offset. The bad records sent since land, and none of the earlier ones twice."""
    cfg = own_lake(broker, tmp_path)
    publish = Publisher(broker.bootstrap)
    device = "JT-RESET-DEVICE00"
    for i in range(3):
        publish(FRAMES, device, b"\xc3\x01\x00" + bytes([i]), seq=5000 + i)  # truncated
    publish.flush()
    run_once(spark, cfg)
    [target] = [t for t in targets(cfg, CONTRACTS) if t.contract.id == FRAMES.id]
    before = rows(target.quarantine_path)
    assert sorted(r["_seq"] for r in before if r["_device_id"] == device) == [5000, 5001, 5002]

    shutil.rmtree(checkpoint_path(cfg))
    for i in range(4):
        publish(FRAMES, device, b"\xc3\x01\x01" + bytes([i]), seq=6000 + i)
    publish.flush()
    job = run_once(spark, cfg)

    after = rows(target.quarantine_path)
    assert sorted(r["_seq"] for r in after if r["_device_id"] == device) == [5000, 5001, 5002, 6000, 6001, 6002, 6003]
    coordinates = [(r["_kafka_topic"], r["_kafka_partition"], r["_kafka_offset"]) for r in after]
    assert len(coordinates) == len(set(coordinates)) == len(before) + 4
    assert min(r.batch_id for r in job.reports) == 0, "the reset query's batch ids started again at 0"


def test_a_record_labelled_secret_leaves_no_raw_byte_anywhere_in_the_lake(spark, broker, tmp_path) -> None:
    """Secret data never stays raw outside the site, not even in quarantine: a record whose headers
    label it secret keeps its reason, headers, size and a keyed digest, and none of its bytes."""
    import hashlib
    import hmac
    import json
    import secrets

    from fieldloop.keys import KeyRing
    from ingestion.cloud.bronze import DIGEST_CONTEXT

    keys = tmp_path / "keys.json"
    keys.write_text(KeyRing.generate([c.tenant for c in CONTRACTS.values()], "t"))
    cfg = own_lake(broker, tmp_path, FIELDLOOP_REFINE_KEY_SOURCE=f"file:{keys}")
    audio = REG.get("worker_audio")

    def worker_audio(mfcc: int) -> bytes:
        # random features: no run of their bytes compresses, so a raw byte scan finds any copy
        features = [secrets.SystemRandom().random() for _ in range(mfcc)]
        record = {
            "site": "JP-CHB-01",
            "worker_id": secrets.token_hex(16),
            "ts": NOW_MS,
            "db_level": 71.5,
            "mfcc": features,
        }
        return encode(record, audio)

    secret_audio = ("worker-audio-acme-steel", "acme-steel")
    labelled = {  # seq -> (topic's contract, payload, header overrides, the reason its first failing check gives)
        7000: (
            FRAMES,
            worker_audio(12),
            {H_CLASS: "secret", H_CONTRACT: secret_audio[0], H_TENANT: secret_audio[1]},
            "raw-secret",
        ),
        7001: (FRAMES, worker_audio(1100), {H_CLASS: "secret"}, "oversized"),  # size is checked before class
        7002: (PLANT, worker_audio(12), {H_CONTRACT: secret_audio[0]}, "contract-mismatch"),  # labelled by its contract
    }
    control = b"bad-magic:" + secrets.token_bytes(32)  # an ordinary bad record keeps its bytes
    device = "JT-SECRET-DEVICE0"
    publish = Publisher(broker.bootstrap)
    for seq, (contract, payload, over, _) in labelled.items():
        publish(contract, device, payload, seq=seq, **over)
    publish(FRAMES, device, control, seq=7003)
    publish.flush()
    run_once(spark, cfg)

    files = [p for p in Path(cfg.lake).rglob("*") if p.is_file()]
    assert any(p.match("*/_delta_log/*.json") for p in files) and any("_checkpoints" in p.parts for p in files)
    blobs = {p: p.read_bytes() for p in files}
    assert any(control in blob for blob in blobs.values()), "the scan finds a quarantined payload"
    for seq, (_, payload, _, _) in labelled.items():
        leaks = [str(p) for p, blob in blobs.items() if payload in blob or payload[-64:] in blob]
        assert not leaks, f"seq {seq}: raw bytes of a secret-labelled record in {leaks}"

    ring = json.loads(keys.read_text())["keys"]
    quarantined = {
        r["_seq"]: r
        for contract in (FRAMES, PLANT)
        for r in rows(next(t for t in targets(cfg, CONTRACTS) if t.contract.id == contract.id).quarantine_path)
        if r["_device_id"] == device
    }
    assert quarantined[7003]["_value"] == control
    for seq, (contract, payload, _, reason) in labelled.items():
        row = quarantined[seq]
        assert row["reason"] == reason and row["_value"] is None and row["_key"] is None
        assert row["_size"] == len(payload) and dict(row["_headers"])["fieldloop.seq"] == str(seq)
        key = next(k for k in ring if k["tenant"] == (contract.tenant or "_public") and k["active"])
        digest = hmac.new(base64.b64decode(key["secret_b64"]), DIGEST_CONTEXT + payload, hashlib.sha256).hexdigest()
        assert (row["_value_hmac"], row["_hmac_key_id"]) == (digest, key["id"])
