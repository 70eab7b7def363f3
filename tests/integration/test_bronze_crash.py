"""The streaming job is SIGKILLed mid-batch several times and restarted: bronze ends exact.

`fieldloop ingest --follow` runs as its own process group (Python driver and Spark JVM)
on a private broker and lake, while records keep arriving; the whole group is killed
with SIGKILL (no chance to clean up) three times, restarted each time, and finally
drained with the default --available-now. Bronze must hold every produced (device, seq)
exactly once, and the duplicates count must hold only the resends we made on purpose,
not the batches Spark replayed after each kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deltalake import DeltaTable
from kafka import KafkaAdminClient, KafkaProducer

from fieldloop.catalog import duplicates_dropped
from fieldloop.contracts import load_contracts
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, default_registry, encode
from ingestion.cloud.topics import apply_topics
from tests.stacks import PrivateKafka

FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")
CONTRACT = load_contracts()["fleet-telemetry"]
SCHEMA = default_registry().get("telemetry")
DEVICES = 8
PER_ROUND = 1500  # records per production round, spread over the devices
RESENT_PER_ROUND = 20


def _record(device: int, seq: int) -> bytes:
    return encode(
        {
            "device_id": f"dev-{device}",
            "model_name": "fieldloop.vehicle-longitudinal",
            "model_version": "7",
            "ts": int(time.time() * 1000),
            "latency_ms": 0.4,
            "ood_score": 0.1,
            "disagreement": 0.01,
            "intervention": False,
        },
        SCHEMA,
    )


def _produce(producer: KafkaProducer, start: int, count: int) -> None:
    for n in range(start, start + count):
        device, seq = n % DEVICES, n // DEVICES
        producer.send(
            CONTRACT.topic,
            key=f"dev-{device}".encode(),
            value=_record(device, seq),
            headers=[
                (H_CLASS, b"public"),
                (H_CONTRACT, CONTRACT.id.encode()),
                (H_DEVICE, f"dev-{device}".encode()),
                (H_SEQ, str(seq).encode()),
            ],
        )
    for n in range(start, start + RESENT_PER_ROUND):  # a device re-sending after a reconnect
        device, seq = n % DEVICES, n // DEVICES
        producer.send(
            CONTRACT.topic,
            key=f"dev-{device}".encode(),
            value=_record(device, seq),
            headers=[
                (H_CLASS, b"public"),
                (H_CONTRACT, CONTRACT.id.encode()),
                (H_DEVICE, f"dev-{device}".encode()),
                (H_SEQ, str(seq).encode()),
            ],
        )
    producer.flush()


def _commits(table: Path) -> int:
    log = table / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


def test_sigkill_mid_batch_then_restart_lands_everything_exactly_once(
    private_kafka: PrivateKafka, tmp_path: Path
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=private_kafka.bootstrap)
    apply_topics(admin, {CONTRACT.id: CONTRACT}, partitions=2)
    admin.close()
    lake = tmp_path / "lake"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FIELDLOOP_")},
        "FIELDLOOP_HOME": str(private_kafka.cfg.home),
        "FIELDLOOP_LAKE_URI": str(lake),
        "FIELDLOOP_KAFKA_BOOTSTRAP": private_kafka.bootstrap,
        "FIELDLOOP_KAFKA_PORT": str(private_kafka.cfg.kafka.port),
        "FIELDLOOP_KAFKA_CONTROLLER_PORT": str(private_kafka.cfg.kafka.controller_port),
        "FIELDLOOP_SPARK_MASTER": "local[2]",
    }
    producer = KafkaProducer(bootstrap_servers=private_kafka.bootstrap, acks="all", linger_ms=5)
    bronze = lake / "bronze" / "fleet_telemetry"
    produced = 0
    for kill in range(3):
        _produce(producer, produced, PER_ROUND)
        produced += PER_ROUND
        log = open(tmp_path / f"ingest-{kill}.log", "w")  # noqa: SIM115 - the killed job's output, closed below
        job = subprocess.Popen(
            [FIELDLOOP, "ingest", "--follow", "--trigger-seconds", "1", "--max-offsets", "400"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        before = _commits(bronze)
        deadline = time.monotonic() + 180
        # kill once at least one new batch committed, i.e. mid-stream with more batches to go
        while _commits(bronze) <= before and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert job.poll() is None, (tmp_path / f"ingest-{kill}.log").read_text()[-3000:]
        time.sleep(0.7 * kill)  # vary where in the next batch the kill lands
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        log.close()

    drain = subprocess.run([FIELDLOOP, "ingest"], env=env, capture_output=True, text=True, timeout=600)
    assert drain.returncode == 0, drain.stdout[-2000:] + drain.stderr[-3000:]

    table = DeltaTable(str(bronze))
    rows = table.to_pyarrow_table(columns=["_device_id", "_seq"]).to_pylist()
    keys = [(r["_device_id"], r["_seq"]) for r in rows]
    expected = {(f"dev-{n % DEVICES}", n // DEVICES) for n in range(produced)}
    assert len(keys) == len(set(keys)), "duplicates in bronze"
    assert set(keys) == expected, f"missing {len(expected - set(keys))}, unexpected {len(set(keys) - expected)}"
    # replayed batches are not double-counted: only the deliberate resends are duplicates
    assert duplicates_dropped(table.history()) == 3 * RESENT_PER_ROUND
