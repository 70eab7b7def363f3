"""Topic admin: one Kafka topic per data contract, created and kept as the contracts say.

``apply_topics`` is idempotent: missing topics are created; existing ones keep their
partition count (adding partitions would move a device's key to another partition and
break its ordering, so a mismatch is reported, not "fixed") and get their retention
aligned. Secret streams get no topic at all: raw secret records never leave the site, so
there is nothing in the cloud for them to land in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fieldloop.classes import DataClass
from fieldloop.contracts import DataContract

logger = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
# Kafka is the buffer, bronze is the record: keep a week on the broker at most.
MAX_BROKER_RETENTION_DAYS = 7


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    contract_id: str


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: str  # created | retention-updated | unchanged | partitions-differ | skipped-secret
    detail: str = ""


def topic_specs(contracts: Iterable[DataContract], partitions: int = 3) -> list[TopicSpec]:
    """The topics the contracts call for (none for secret streams)."""
    specs = []
    for c in contracts:
        if c.data_class is DataClass.SECRET:
            continue
        retention_days = min(c.retention_days, MAX_BROKER_RETENTION_DAYS)
        specs.append(TopicSpec(c.topic, partitions, retention_days * DAY_MS, c.id))
    return sorted(specs, key=lambda s: s.name)


def apply_topics(admin: Any, contracts: Mapping[str, DataContract], partitions: int = 3) -> list[TopicChange]:
    """Make the broker's topics match the contracts.

    Args:
        admin: a ``kafka.KafkaAdminClient``.
        contracts: the validated contracts, by id.
        partitions: partitions of newly created topics.
    """
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    changes: list[TopicChange] = [
        TopicChange(c.topic, "skipped-secret", "raw secret data never leaves the site")
        for c in contracts.values()
        if c.data_class is DataClass.SECRET
    ]
    specs = topic_specs(contracts.values(), partitions)
    existing = set(admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing:
        with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently: fine, checked below
            admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        s.partitions,
                        1 if _single_broker(admin) else 3,
                        topic_configs={"retention.ms": str(s.retention_ms)},
                    )
                    for s in missing
                ]
            )
        changes += [
            TopicChange(s.name, "created", f"{s.partitions} partitions, retention {s.retention_ms // DAY_MS} d")
            for s in missing
        ]
    present = [s for s in specs if s.name in existing]
    if present:
        described = {t["name"]: t for t in admin.describe_topics([s.name for s in present])}
        resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
        configs = {
            name: (entries.get("retention.ms") or {}).get("value")
            for name, entries in admin.describe_configs(resources).get("topic", {}).items()
        }
        for spec in present:
            have_parts = len(described[spec.name]["partitions"])
            if have_parts != spec.partitions:
                changes.append(
                    TopicChange(
                        spec.name,
                        "partitions-differ",
                        f"has {have_parts}, contracts ask {spec.partitions}; left as is to keep per-device order",
                    )
                )
            if configs.get(spec.name) != str(spec.retention_ms):
                admin.alter_configs(
                    [
                        ConfigResource(
                            ConfigResourceType.TOPIC, spec.name, configs={"retention.ms": str(spec.retention_ms)}
                        )
                    ]
                )
                changes.append(TopicChange(spec.name, "retention-updated", f"{spec.retention_ms // DAY_MS} d"))
            elif have_parts == spec.partitions:
                changes.append(TopicChange(spec.name, "unchanged"))
    return sorted(changes, key=lambda c: c.topic)


def apply_configured_topics(cfg: Any, partitions: int = 3) -> list[TopicChange]:
    """:func:`apply_topics` for the configured broker and contracts.

    Raises:
        StackError: the broker cannot be reached.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from fieldloop.contracts import load_contracts
    from fieldloop.errors import StackError

    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    try:
        admin = KafkaAdminClient(**cfg.kafka.client_options(), request_timeout_ms=15000)
    except (KafkaError, OSError) as e:
        raise StackError(
            f"cannot reach Kafka at {cfg.kafka.bootstrap_servers} ({e}); is the stack up? (`fieldloop stack up`)"
        ) from e
    try:
        return apply_topics(admin, contracts, partitions)
    finally:
        admin.close()


def _single_broker(admin: Any) -> bool:
    try:
        return len(admin.describe_cluster()["brokers"]) < 3
    except Exception:  # an old broker without DescribeCluster: assume the embedded one
        return True
