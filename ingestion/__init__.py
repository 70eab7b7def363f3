"""Ingestion: device fleets to bronze Delta. This package's root is the edge SDK a device embeds.

``EdgeProducer.send(contract_id, device_id, record)`` refuses what may not leave the device,
writes the rest to a crash-safe disk spool and returns the device's sequence number; a
sender thread drains the spool to Kafka in order (``acks=all``, idempotent), retrying from
the spool through outages::

    from fieldloop.contracts import load_contracts
    from ingestion import EdgeProducer, EdgeProducerConfig

    config = EdgeProducerConfig(bootstrap_servers="kafka.example:9093", spool_dir=Path("/var/lib/fieldloop/spool"))
    with EdgeProducer(config, load_contracts()) as producer:
        seq = producer.send("vehicle-frames-public", "JT123456789012345", frame)  # or RefusedError

Importing it needs only pydantic, fastavro, kafka-python and the kernel's contracts and wire
format. The rest of the stage lives in rooms a device never imports:
:mod:`ingestion.simulator` (the fleet simulator and its faults) and :mod:`ingestion.cloud`
(topic admin and the Kafka -> bronze streaming job).
"""

from ingestion.errors import (
    IngestionError,
    RefusedError,
    SpoolBusyError,
    SpoolCorruptError,
    SpoolFullError,
)
from ingestion.producer import EdgeProducer, EdgeProducerConfig, ProducerStats

__all__ = [
    "EdgeProducer",
    "EdgeProducerConfig",
    "IngestionError",
    "ProducerStats",
    "RefusedError",
    "SpoolBusyError",
    "SpoolCorruptError",
    "SpoolFullError",
]
