"""The bronze job's decode step on local Spark, without a broker: schema evolution and reasons.

Rows shaped like Spark's Kafka source are classified by ``BronzeJob.classify``: a record
written with v1 of vehicle_frames and one written with v3 (a test-only revision adding
two fields with defaults) both resolve to the newest schema, as Avro's rules say.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import load_contracts
from fieldloop.residency import ResidencyGuard
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, SchemaRegistry, encode
from ingestion.cloud.bronze import BronzeJob, record_column, targets
from ingestion.errors import IngestionError

FRAMES = load_contracts()["vehicle-frames-public"]
NOW = int(time.time() * 1000)
FRAME = {
    "vin": "JT123456789012345",
    "driver_id": "drv-7",
    "ts": NOW,
    "lat": 35.68,
    "lon": 139.76,
    "speed_mps": 12.5,
    "accel_mps2": -0.4,
    "steering_deg": 3.0,
    "brake": 0.1,
    "yaw_rate_dps": 0.5,
    "perception": {"vehicles": 3, "pedestrians": 1, "cyclists": 0},
    "intervention": False,
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> SchemaRegistry:
    folder = tmp_path_factory.mktemp("avro")
    root = Path(__file__).parents[2]
    for schema in (root / "fieldloop" / "schemas" / "avro").glob("*.avsc"):
        shutil.copy(schema, folder)
    shutil.copy(root / "tests" / "unit" / "data" / "avro" / "vehicle_frames.v3.avsc", folder)
    return SchemaRegistry.from_dir(folder)


def kafka_row(offset: int, value: bytes, seq: int, **headers: str) -> tuple:
    h = {H_CLASS: "public", H_CONTRACT: FRAMES.id, H_DEVICE: "JT123456789012345", H_SEQ: str(seq), **headers}
    return (
        FRAMES.topic,
        0,
        offset,
        datetime.now(UTC),
        b"JT123456789012345",
        value,
        [(k, v.encode()) for k, v in h.items()],
    )


def test_v1_and_v2_writers_resolve_to_the_newest_schema(
    spark, cfg: FieldloopConfig, registry: SchemaRegistry, tmp_path: Path
) -> None:
    job_cfg = load_config({"FIELDLOOP_HOME": str(cfg.home), "FIELDLOOP_LAKE_URI": str(tmp_path / "lake")})
    job = BronzeJob(job_cfg, spark, {FRAMES.id: FRAMES}, registry, ResidencyGuard.from_config(job_cfg))
    v1, v2 = registry.get("vehicle_frames", 1), registry.get("vehicle_frames", 3)
    rows = [
        kafka_row(0, encode(FRAME, v1), 0),
        kafka_row(1, encode({**FRAME, "gear": 4, "odometer_km": 12034.5}, v2), 1),
        kafka_row(2, encode({**FRAME, "speed_mps": float("inf")}, v1), 2),
        kafka_row(3, encode(FRAME, v1), 3, **{H_CLASS: "restricted"}),
        kafka_row(4, v1.header + b"\x02", 4),
    ]
    schema = (
        "topic STRING, partition INT, offset LONG, timestamp TIMESTAMP, key BINARY, value BINARY, "
        "headers ARRAY<STRUCT<key: STRING, value: BINARY>>"
    )
    batch = spark.createDataFrame(rows, schema)
    out = {r["_kafka_offset"]: r for r in job.classify(batch).collect()}

    assert out[0]["_reason"] is None and out[1]["_reason"] is None
    old, new = out[0][record_column("vehicle_frames")], out[1][record_column("vehicle_frames")]
    assert (old["gear"], old["odometer_km"]) == (0, None)  # v1 writer: the reader's defaults
    assert (new["gear"], new["odometer_km"]) == (4, 12034.5)
    assert (out[0]["_schema_version"], out[1]["_schema_version"]) == (1, 3)
    assert old["vin"] == new["vin"] == "JT123456789012345" and old["perception"]["vehicles"] == 3
    assert out[2]["_reason"] == "non-finite"
    assert out[3]["_reason"] == "class-mismatch"
    assert out[4]["_reason"] == "undecodable"


def test_a_replayed_batch_is_recognised_and_a_new_checkpoint_is_not_mistaken_for_one(
    spark, cfg: FieldloopConfig, registry: SchemaRegistry, tmp_path: Path
) -> None:
    """Replays are told apart by batch id *and* offsets; held keys are dropped and counted."""
    from deltalake import DeltaTable

    from fieldloop.catalog import duplicates_dropped

    job_cfg = load_config({"FIELDLOOP_HOME": str(cfg.home), "FIELDLOOP_LAKE_URI": str(tmp_path / "lake")})
    job = BronzeJob(job_cfg, spark, {FRAMES.id: FRAMES}, registry, ResidencyGuard.from_config(job_cfg))
    v1 = registry.get("vehicle_frames", 1)
    schema = (
        "topic STRING, partition INT, offset LONG, timestamp TIMESTAMP, key BINARY, value BINARY, "
        "headers ARRAY<STRUCT<key: STRING, value: BINARY>>"
    )

    def batch(offsets: range, seqs: list[int]):
        return spark.createDataFrame(
            [kafka_row(o, encode(FRAME, v1), s) for o, s in zip(offsets, seqs, strict=True)], schema
        )

    path = targets(job_cfg, {FRAMES.id: FRAMES})[0].bronze_path
    first = job.process_batch(batch(range(4), [0, 1, 2, 2]), 0)  # seq 2 twice in the batch
    assert first.inserted == {"vehicle_frames_public": 3} and first.duplicates == {"vehicle_frames_public": 1}
    version = DeltaTable(path).version()

    replay = job.process_batch(batch(range(4), [0, 1, 2, 2]), 0)  # same id, same offsets: after a crash
    assert DeltaTable(path).version() == version
    assert replay.inserted == {"vehicle_frames_public": 3}  # what batch 0 did, read from its commit

    # a new checkpoint starts at batch 0 again, on later offsets: written, with seq 1 and 2 resent
    fresh = job.process_batch(batch(range(4, 7), [1, 2, 3]), 0)
    assert fresh.inserted == {"vehicle_frames_public": 1} and fresh.duplicates == {"vehicle_frames_public": 2}
    assert sorted(r["_seq"] for r in spark.read.format("delta").load(path).collect()) == [0, 1, 2, 3]
    assert duplicates_dropped(DeltaTable(path).history()) == 1 + 2

    all_held = job.process_batch(batch(range(7, 9), [0, 3]), 1)  # nothing new: still a commit, for the count
    assert all_held.inserted == {"vehicle_frames_public": 0}
    assert duplicates_dropped(DeltaTable(path).history()) == 1 + 2 + 2


def test_one_batch_spanning_topics_is_classified_by_each_topics_contract(
    spark, cfg: FieldloopConfig, registry: SchemaRegistry, tmp_path: Path
) -> None:
    """Every topic of a batch is checked against its own contract and lands in its own table."""
    from deltalake import DeltaTable

    contracts = load_contracts()
    acme, telemetry = contracts["vehicle-frames-acme-mobility"], contracts["fleet-telemetry"]
    chosen = {c.id: c for c in (FRAMES, acme, telemetry)}
    job_cfg = load_config({"FIELDLOOP_HOME": str(cfg.home), "FIELDLOOP_LAKE_URI": str(tmp_path / "lake")})
    job = BronzeJob(job_cfg, spark, chosen, registry, ResidencyGuard.from_config(job_cfg))
    frame, probe = (
        encode(FRAME, registry.get("vehicle_frames", 1)),
        encode(
            {
                "device_id": "d1",
                "model_name": "m",
                "model_version": "1",
                "ts": NOW,
                "latency_ms": 0.4,
                "ood_score": 0.1,
                "disagreement": 0.0,
                "intervention": False,
            },
            registry.get("telemetry"),
        ),
    )

    def on(contract, offset: int, value: bytes, seq: int, **headers: str) -> tuple:
        h = {H_CLASS: str(contract.data_class), H_CONTRACT: contract.id, H_DEVICE: "d1", H_SEQ: str(seq), **headers}
        return (contract.topic, 0, offset, datetime.now(UTC), b"d1", value, [(k, v.encode()) for k, v in h.items()])

    schema = (
        "topic STRING, partition INT, offset LONG, timestamp TIMESTAMP, key BINARY, value BINARY, "
        "headers ARRAY<STRUCT<key: STRING, value: BINARY>>"
    )
    rows = [
        on(FRAMES, 0, frame, 0),
        on(FRAMES, 1, frame, 1),
        on(acme, 0, frame, 0, **{H_TENANT: "acme-mobility"}),
        on(acme, 1, frame, 1),  # restricted, but no tenant header
        on(telemetry, 0, probe, 0),
        on(telemetry, 1, frame, 1),  # a vehicle frame on the telemetry topic
    ]
    report = job.process_batch(spark.createDataFrame(rows, schema), 0)

    assert report.consumed == 6
    assert report.inserted == {"vehicle_frames_public": 2, "vehicle_frames_acme_mobility": 1, "fleet_telemetry": 1}
    assert report.reasons == {"missing-tenant": 1, "unknown-fingerprint": 1}
    by_name = {t.name: t for t in targets(job_cfg, chosen)}
    landed = DeltaTable(by_name["fleet_telemetry"].bronze_path).to_pyarrow_table()
    assert landed.column("model_name").to_pylist() == ["m"] and "vin" not in landed.column_names
    quarantined = DeltaTable(by_name["vehicle_frames_acme_mobility"].quarantine_path).to_pyarrow_table()
    assert quarantined.column("reason").to_pylist() == ["missing-tenant"]

    before = {name: DeltaTable(t.bronze_path).version() for name, t in by_name.items()}
    stray = [("fieldloop.public.unknown.v1", 0, 0, datetime.now(UTC), b"d1", frame, [])]
    with pytest.raises(IngestionError, match=r"topics no contract names: fieldloop\.public\.unknown\.v1"):
        job.process_batch(spark.createDataFrame(rows + stray, schema), 1)
    assert {name: DeltaTable(t.bronze_path).version() for name, t in by_name.items()} == before  # nothing written


def test_after_a_checkpoint_reset_every_bad_record_lands_in_quarantine_once(
    spark, cfg: FieldloopConfig, registry: SchemaRegistry, tmp_path: Path
) -> None:
    """A lost checkpoint restarts batch ids at 0 and reads Kafka again from the earliest offset:
    the new bad records land, the ones read again are not quarantined twice, and they count as
    duplicates, so consumed = bronze + quarantine + duplicates still holds."""
    from deltalake import DeltaTable

    from fieldloop.catalog import duplicates_dropped

    job_cfg = load_config({"FIELDLOOP_HOME": str(cfg.home), "FIELDLOOP_LAKE_URI": str(tmp_path / "lake")})
    v1 = registry.get("vehicle_frames", 1)
    schema = (
        "topic STRING, partition INT, offset LONG, timestamp TIMESTAMP, key BINARY, value BINARY, "
        "headers ARRAY<STRUCT<key: STRING, value: BINARY>>"
    )
    good = [kafka_row(o, encode(FRAME, v1), o) for o in range(3)]
    bad = [kafka_row(o, b"\xc3\x01\x00", o) for o in range(3, 6)]  # truncated
    [target] = targets(job_cfg, {FRAMES.id: FRAMES})

    first = BronzeJob(job_cfg, spark, {FRAMES.id: FRAMES}, registry, ResidencyGuard.from_config(job_cfg))
    first.process_batch(spark.createDataFrame(good + bad, schema), 0)
    assert len(DeltaTable(target.quarantine_path).to_pyarrow_table()) == 3

    # the checkpoint is lost: a new query, whose first batch is 0 again, reads every offset again
    later = [kafka_row(o, b"\xc3\x01\x00", o) for o in range(6, 10)]
    again = BronzeJob(job_cfg, spark, {FRAMES.id: FRAMES}, registry, ResidencyGuard.from_config(job_cfg))
    report = again.process_batch(spark.createDataFrame(good + bad + later, schema), 0)

    quarantined = DeltaTable(target.quarantine_path).to_pyarrow_table()
    assert sorted(quarantined.column("_kafka_offset").to_pylist()) == list(range(3, 10))
    assert report.quarantined == {"vehicle_frames_public": 4} and report.duplicates == {"vehicle_frames_public": 3 + 3}
    bronze = DeltaTable(target.bronze_path)
    dups = duplicates_dropped(bronze.history()) + duplicates_dropped(DeltaTable(target.quarantine_path).history())
    consumed = len(good + bad) + len(good + bad + later)  # the first query's batch, then the new one's
    assert consumed == len(bronze.to_pyarrow_table()) + len(quarantined) + dups

    # and a replay of that batch (a crash before the checkpoint recorded it) writes nothing
    version = DeltaTable(target.quarantine_path).version()
    again.process_batch(spark.createDataFrame(good + bad + later, schema), 0)
    assert DeltaTable(target.quarantine_path).version() == version
