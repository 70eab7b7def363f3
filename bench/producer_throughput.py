"""Producer throughput on one broker: the edge SDK against plain clients, as ratios.

Every contestant sends the same number of records of the same size with ``acks=all``,
the same compression, linger and batch size, to a fresh topic of its own, and the clock
stops when the last record is acknowledged:

1. ``EdgeProducer`` (Avro encoding, contract checks, disk spool, sender thread), once per
   fsync policy (``always`` on fewer records: it fsyncs every one);
2. the same SDK with the sender paused: the device-side cost of ``send()`` alone;
3. plain kafka-python producing the already-encoded bytes (the baseline, ratio 1.00);
4. confluent-kafka with the same bytes, if it is importable;
5. Kafka's own ``org.apache.kafka.tools.ProducerPerformance`` (Java client, random
   payload of the same size, its own measurement, JVM start-up excluded).

Usage::

    .venv/bin/python bench/producer_throughput.py --bootstrap 127.0.0.1:9092 --records 50000 \\
        --jars-dir ~/.fieldloop/jars
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from fieldloop.contracts import load_contracts
from fieldloop.jvm import find_java
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, default_registry, encode
from ingestion import EdgeProducer, EdgeProducerConfig

CONTRACT = "vehicle-frames-public"
DEVICES = [f"JT{n:015d}" for n in range(16)]
LINGER_MS = 20
BATCH_BYTES = 256 * 1024
Payloads = list[tuple[bytes, bytes, list[tuple[str, bytes]]]]  # key, Avro value, headers


@dataclass
class Result:
    name: str
    records: int
    seconds: float
    value_bytes: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def frame(i: int) -> dict[str, Any]:
    vin = DEVICES[i % len(DEVICES)]
    return {
        "vin": vin,
        "driver_id": f"drv-{i % 7}",
        "ts": 1_700_000_000_000 + i * 100,
        "lat": 35.68 + i * 1e-6,
        "lon": 139.76 - i * 1e-6,
        "speed_mps": 12.5 + (i % 10) / 3,
        "accel_mps2": -0.4,
        "steering_deg": 3.0,
        "brake": 0.1,
        "yaw_rate_dps": 0.5,
        "perception": {"vehicles": i % 4, "pedestrians": 1, "cyclists": 0},
        "intervention": i % 50 == 0,
    }


def new_topic(bootstrap: str, label: str) -> str:
    topic = f"fieldloop.bench.{label}.{uuid.uuid4().hex[:8]}.v1"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        admin.close()
    return topic


def bench_sdk(bootstrap: str, records: list[dict[str, Any]], compression: str, fsync: str, paused: bool) -> Result:
    topic = new_topic(bootstrap, f"sdk-{fsync}")
    contract = load_contracts()[CONTRACT].model_copy(update={"topic_override": topic})
    spool_dir = Path(tempfile.mkdtemp(prefix="fieldloop-bench-spool-"))
    cfg = EdgeProducerConfig(
        bootstrap_servers=bootstrap,
        spool_dir=spool_dir,
        fsync=fsync,
        compression=compression,
        linger_ms=LINGER_MS,
        batch_size=BATCH_BYTES,
        send_batch=5000,
    )
    try:
        with EdgeProducer(cfg, {CONTRACT: contract}) as producer:
            if paused:
                producer.pause()
            start = time.perf_counter()
            for record in records:
                producer.send(CONTRACT, record["vin"], record)
            if not paused and not producer.flush(600):
                raise SystemExit("the SDK did not deliver everything within 600 s")
            seconds = time.perf_counter() - start
            size = producer.stats.accepted
        value_bytes = sum(len(encode(r, default_registry().get("vehicle_frames"))) for r in records[:100]) // 100
        name = "edge SDK send() only (paused)" if paused else f"edge SDK, fsync={fsync}"
        return Result(name, size, seconds, value_bytes, "spool only, no Kafka" if paused else "")
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)


def encoded(records: list[dict[str, Any]]) -> Payloads:
    schema = default_registry().get("vehicle_frames")
    out = []
    for i, record in enumerate(records):
        key = record["vin"].encode()
        headers = [(H_CLASS, b"public"), (H_CONTRACT, CONTRACT.encode()), (H_DEVICE, key), (H_SEQ, str(i).encode())]
        out.append((key, encode(record, schema), headers))
    return out


def bench_kafka_python(bootstrap: str, payloads: Payloads, compression: str | None) -> Result:
    topic = new_topic(bootstrap, "kafka-python")
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type=compression,
        linger_ms=LINGER_MS,
        batch_size=BATCH_BYTES,
    )
    try:
        producer.partitions_for(topic)  # metadata outside the clock, as the SDK has it warm too
        start = time.perf_counter()
        for key, value, headers in payloads:
            producer.send(topic, value=value, key=key, headers=headers)
        producer.flush()
        seconds = time.perf_counter() - start
    finally:
        producer.close()
    return Result("kafka-python, pre-encoded", len(payloads), seconds, len(payloads[0][1]), "baseline")


def bench_confluent(bootstrap: str, payloads: Payloads, compression: str) -> Result | str:
    try:
        from confluent_kafka import Producer  # type: ignore[import-not-found]
    except ImportError:
        return "confluent-kafka: skipped (not installed in this venv)"
    topic = new_topic(bootstrap, "confluent")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": compression,
            "linger.ms": LINGER_MS,
            "batch.size": BATCH_BYTES,
        }
    )
    start = time.perf_counter()
    for key, value, headers in payloads:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush()
    seconds = time.perf_counter() - start
    return Result("confluent-kafka, pre-encoded", len(payloads), seconds, len(payloads[0][1]))


def bench_java(bootstrap: str, count: int, record_size: int, compression: str, jars_dir: Path) -> Result | str:
    jars = jars_dir / "kafka"
    if not any(jars.glob("kafka-tools-*.jar")):
        return f"ProducerPerformance: skipped (no kafka-tools jar in {jars})"
    topic = new_topic(bootstrap, "java-perf")
    cmd = [
        find_java(),
        "-Xmx256m",
        "-cp",
        f"{jars}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--num-records",
        str(count),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--command-property",
        "acks=all",
        "enable.idempotence=true",
        f"compression.type={compression}",
        f"linger.ms={LINGER_MS}",
        f"batch.size={BATCH_BYTES}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    summary = [line for line in proc.stdout.splitlines() if "records sent" in line]
    match = re.search(r"(\d+) records sent, ([\d.]+) records/sec", summary[-1]) if summary else None
    if proc.returncode != 0 or not match:
        return f"ProducerPerformance: failed ({proc.stderr.strip().splitlines()[-1:] or proc.returncode})"
    sent, rate = int(match[1]), float(match[2])
    return Result("Java ProducerPerformance", sent, sent / rate, record_size, "random payload, own clock")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="broker host:port (a broker of your own, not a shared one)")
    parser.add_argument("--records", type=int, default=50_000, help="records per contestant")
    parser.add_argument(
        "--jars-dir",
        type=Path,
        default=Path("~/.fieldloop/jars").expanduser(),
        help="directory holding kafka/*.jar (the stack's resolved jars)",
    )
    parser.add_argument("--compression", default="zstd", choices=["zstd", "gzip", "lz4", "none"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    compression = None if args.compression == "none" else args.compression

    records = [frame(i) for i in range(args.records)]
    payloads = encoded(records)
    size = sum(len(v) for _, v, _ in payloads) // len(payloads)
    always_count = max(1000, args.records // 10)
    print(
        f"{args.records} records of ~{size} bytes (Avro) + 4 headers, 16 devices, 3 partitions, acks=all, "
        f"idempotent, compression={args.compression}, linger.ms={LINGER_MS}, batch.size={BATCH_BYTES}"
    )

    results: list[Result] = []
    skipped: list[str] = []
    baseline = bench_kafka_python(args.bootstrap, payloads, compression)
    results.append(baseline)
    for fsync in ("batch", "never"):
        results.append(bench_sdk(args.bootstrap, records, args.compression, fsync, paused=False))
    results.append(bench_sdk(args.bootstrap, records[:always_count], args.compression, "always", paused=False))
    results.append(bench_sdk(args.bootstrap, records, args.compression, "batch", paused=True))
    for outcome in (
        bench_confluent(args.bootstrap, payloads, args.compression),
        bench_java(args.bootstrap, args.records, size, args.compression, args.jars_dir),
    ):
        (results.append if isinstance(outcome, Result) else skipped.append)(outcome)  # type: ignore[arg-type]

    print(f"\n{'client':<32} {'records':>8} {'seconds':>8} {'records/s':>10} {'MB/s':>6} {'vs kafka-python':>16}  note")
    for r in results:
        mb = r.rate * r.value_bytes / 1e6
        print(
            f"{r.name:<32} {r.records:>8} {r.seconds:>8.2f} {r.rate:>10.0f} {mb:>6.2f} "
            f"{r.rate / baseline.rate:>15.2f}x  {r.note}"
        )
    for line in skipped:
        print(line)


if __name__ == "__main__":
    main()
