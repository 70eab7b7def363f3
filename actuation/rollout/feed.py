"""Device telemetry as it arrives: the fleet telemetry topic read from a point in time on.

The controller judges a stage on the records since the stage began, so it needs no consumer
group and commits no offset: it seeks every partition to the stage's start (Kafka's time
index, a few seconds early for clock skew between the devices and the broker) and reads
forward. A controller restarted mid-stage reads the same records again and reaches the same
figures; that is what makes a resume from the audit table exact.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fieldloop.wire import WireError, decode, default_registry

logger = logging.getLogger(__name__)

TELEMETRY_TOPIC = "fieldloop.fleet.telemetry.v1"
SKEW_MS = 10_000  # devices' clocks against the broker's: read this much before the stage began


class TelemetryFeed:
    """Decoded telemetry records from ``since`` on (see the module docstring).

    Args:
        kafka: a :class:`fieldloop.config.KafkaConfig`.
        since: the earliest record time wanted (records' ``ts`` are filtered by the caller).
        topic: the telemetry topic.
    """

    def __init__(self, kafka: Any, since: datetime, topic: str = TELEMETRY_TOPIC) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.topic, self.undecodable = topic, 0
        self._registry = default_registry()
        self._consumer = KafkaConsumer(
            **kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            client_id="fieldloop-rollout",
            max_poll_records=5000,
            fetch_max_wait_ms=200,
        )
        partitions = self._consumer.partitions_for_topic(topic) or set()
        if not partitions:
            self._consumer.close()
            from actuation.errors import ReleaseError

            raise ReleaseError(
                f"the telemetry topic {topic} does not exist on {kafka.bootstrap_servers}: "
                "run `fieldloop topics apply` (or `fieldloop stack up`)"
            )
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        start_ms = int(since.timestamp() * 1000) - SKEW_MS
        offsets = self._consumer.offsets_for_times(dict.fromkeys(assigned, start_ms))
        for tp in assigned:
            found = offsets.get(tp)
            if found is None:  # nothing that recent yet: from the end
                self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek(tp, found.offset)

    def poll(self, timeout_s: float = 0.5) -> list[dict[str, Any]]:
        """The records that arrived since the last poll (at most a few thousand), decoded."""
        out = []
        for batch in self._consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for message in batch:
                try:
                    out.append(decode(message.value, self._registry))
                except WireError as e:  # bronze quarantines it; the controller only counts it
                    self.undecodable += 1
                    logger.debug("telemetry record at offset %d not decodable: %s", message.offset, e)
        return out

    def drain(self, timeout_s: float = 0.2, max_rounds: int = 50) -> list[dict[str, Any]]:
        """Everything available now (polls until a poll comes back empty)."""
        out: list[dict[str, Any]] = []
        for _ in range(max_rounds):
            got = self.poll(timeout_s)
            if not got:
                break
            out.extend(got)
        return out

    def close(self) -> None:
        self._consumer.close()
