"""A kafka-python producer and consumer round-trip through the broker `stack up` started."""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic


def test_produce_and_consume_round_trip(kafka_bootstrap: str) -> None:
    topic = f"fieldloop.test.roundtrip.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()

    sent = [(f"device-{i % 3}".encode(), f"reading {i}".encode()) for i in range(50)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for key, value in sent:
        producer.send(topic, key=key, value=value, headers=[("fieldloop.class", b"public")])
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
        group_id=None,
    )
    received = []
    for record in consumer:
        received.append((record.key, record.value, dict(record.headers)))
        if len(received) == len(sent):
            break
    consumer.close()

    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    assert all(h == {"fieldloop.class": b"public"} for _, _, h in received)
    # per key, order is kept (one key -> one partition)
    for device in (b"device-0", b"device-1", b"device-2"):
        mine = [v for k, v, _ in received if k == device]
        assert mine == [v for k, v in sent if k == device]
