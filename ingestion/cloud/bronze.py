"""Kafka -> bronze: every valid record lands exactly once, every other one in quarantine with a reason.

The job reads as three steps (read the stream -> build the transformation -> write):

1. **read**: Spark's Kafka source over the topics the contracts define, with headers.
2. **transform** (per micro-batch, :mod:`ingestion.cloud.checks`): attribute each record
   to its contract by topic; check the headers against the contract (class, tenant,
   contract id, device, sequence) and the single-object header; decode the Avro body
   natively with ``from_avro`` using the writer schema its fingerprint names, resolved to
   the stream's latest schema; reject non-finite numbers, implausible timestamps and
   records already past their contract's retention (``expired``). The first failing
   check becomes the record's quarantine ``reason``.
3. **write**: per contract, valid records whose ``(_device_id, _seq)`` bronze does not
   hold yet are appended to ``bronze/<table>`` (duplicates - resends, replays - are
   dropped), invalid ones appended to ``quarantine/<table>`` with their raw bytes
   unless quarantine holds their Kafka coordinates already. A record whose headers label
   it secret never stays raw outside the site: quarantine keeps its reason, headers,
   size and a keyed digest (HMAC-SHA256 with its tenant's key, computed on the driver),
   never its bytes; of an ``expired`` record, past the time its contract allows any
   copy, it keeps the reason, headers, size and event time.

Exactly once: a batch's bronze and quarantine commits record, as their ``userMetadata``,
the batch id and the Kafka offset ranges it covers, how many records it brought and how
many it inserted. A batch replayed after a crash finds its commit and writes nothing,
and the key checks make records read again harmless: re-sent ones, or every record
still in Kafka when a query on a new checkpoint (batch ids from 0 again) starts from the
earliest offset. The number of duplicates dropped is read from the Delta log itself and
can never disagree with the data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fieldloop.catalog import find_table, open_table
from fieldloop.classes import DataClass
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import DataContract
from fieldloop.errors import ResidencyError
from fieldloop.keys import KeyRing, PseudonymKey, configured_key_ring
from fieldloop.lineage import TableGovernance
from fieldloop.residency import ResidencyGuard
from fieldloop.retention import file_retention_properties
from fieldloop.spark import create_table
from fieldloop.wire import SchemaRegistry
from ingestion.cloud.checks import RecordChecks, record_column
from ingestion.errors import IngestionError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.types import StructType

logger = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1 << 20
KAFKA_COLUMNS = ["_kafka_topic", "_kafka_partition", "_kafka_offset", "_kafka_timestamp"]
QUARANTINE_KEY = tuple(KAFKA_COLUMNS)  # a quarantined record is known by where Kafka held it
# What a keyed digest of a quarantined payload is computed over, before the payload: the
# tenant's keys also make pseudonyms, and no digest may ever equal one of them.
DIGEST_CONTEXT = b"fieldloop quarantine payload v1\x00"
BRONZE_PROPERTIES = {
    # Refinement reads exactly the rows each bronze commit added, by version.
    "delta.enableChangeDataFeed": "true",
    # A streaming table commits every few seconds. Writing a Delta checkpoint took 2-5 s
    # here against 0.3 s for the append, so at the default of every 10 commits it was
    # the slowest batch of every ten; readers replay at most 99 small JSON commits instead.
    "delta.checkpointInterval": "100",
}


def table_name(contract: DataContract) -> str:
    """``vehicle-frames-public`` -> ``vehicle_frames_public``: one bronze table per contract."""
    return contract.table


def bronze_columns(stream: str) -> list[str]:
    """What a bronze row of ``stream`` holds, selected from classified rows: the record's fields
    flattened, then the device key, Kafka's coordinates, headers and schema version."""
    return [f"{record_column(stream)}.*", "_device_id", "_seq", *KAFKA_COLUMNS, "_headers", "_schema_version"]


@dataclass(frozen=True)
class BronzeTarget:
    contract: DataContract
    bronze_path: str
    quarantine_path: str

    @property
    def name(self) -> str:
        return table_name(self.contract)


@dataclass
class BatchReport:
    """What one micro-batch did, for logs and progress lines."""

    batch_id: int
    consumed: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    read_seconds: float = 0.0  # of ``seconds``: reading Kafka, decoding, checking and counting


def targets(cfg: FieldloopConfig, contracts: Mapping[str, DataContract]) -> list[BronzeTarget]:
    """The bronze/quarantine table pair of every contract whose data may enter the cloud."""
    lake = cfg.lake.rstrip("/")
    return [
        BronzeTarget(c, f"{lake}/bronze/{table_name(c)}", f"{lake}/quarantine/{table_name(c)}")
        for c in sorted(contracts.values(), key=lambda c: c.id)
        if c.data_class is not DataClass.SECRET
    ]


def checkpoint_path(cfg: FieldloopConfig) -> str:
    return f"{cfg.lake.rstrip('/')}/_checkpoints/bronze"


def kafka_source_options(cfg: FieldloopConfig) -> dict[str, str]:
    """Spark Kafka source options, security included (secrets only in the JAAS option)."""
    k = cfg.kafka
    opts = {
        "kafka.bootstrap.servers": k.bootstrap_servers,
        "kafka.security.protocol": k.security_protocol,
        # Spark reads bounded offset ranges, and each task's last fetch reaches the end of
        # its partition, where the broker holds it for fetch.max.wait.ms (500 ms by default)
        # hoping for more: that wait was most of a small micro-batch's time.
        "kafka.fetch.max.wait.ms": "20",
    }
    if k.sasl_mechanism:
        opts["kafka.sasl.mechanism"] = k.sasl_mechanism
        module = (
            "org.apache.kafka.common.security.scram.ScramLoginModule"
            if k.sasl_mechanism.startswith("SCRAM")
            else "org.apache.kafka.common.security.plain.PlainLoginModule"
        )
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        opts["kafka.sasl.jaas.config"] = f'{module} required username="{k.sasl_username}" password="{password}";'
    if k.ssl_cafile:
        opts["kafka.ssl.truststore.type"] = "PEM"
        opts["kafka.ssl.truststore.location"] = str(k.ssl_cafile)
    return opts


class BronzeJob:
    """The Kafka -> bronze streaming job.

    Args:
        cfg: effective config (lake, Kafka).
        spark: a session from :func:`fieldloop.spark.spark_session`.
        contracts: validated contracts by id.
        registry: the Avro schemas.
        guard: the residency guard; every table and the checkpoint pass it before the start.
        max_offsets_per_trigger: bounds a micro-batch (records).
        max_record_bytes: larger payloads are quarantined as ``oversized``.
        keys: the site's HMAC keys for the digests of secret-labelled records; default:
            loaded from ``cfg.key_source`` when a batch first holds such a record.
    """

    def __init__(
        self,
        cfg: FieldloopConfig,
        spark: SparkSession,
        contracts: Mapping[str, DataContract],
        registry: SchemaRegistry,
        guard: ResidencyGuard,
        max_offsets_per_trigger: int = 200_000,
        max_record_bytes: int = MAX_RECORD_BYTES,
        keys: KeyRing | None = None,
    ) -> None:
        self.cfg = cfg
        self.spark = spark
        self.registry = registry
        self._residency: dict[str, str] = {}
        self.refused: dict[str, str] = {}  # contract id -> why this lake may not hold its stream
        self._refused_topics: dict[str, str] = {}
        self.targets = self._placed(targets(cfg, contracts), guard)
        self._tenants = [c.tenant for c in contracts.values()]  # whose keys a default key ring is created with
        self._keys = keys
        self.by_topic = {t.contract.topic: t for t in self.targets}
        secret = [c.id for c in contracts.values() if c.data_class is DataClass.SECRET]
        self.checks = RecordChecks(
            spark, registry, {topic: t.contract for topic, t in self.by_topic.items()}, secret, max_record_bytes
        )
        self.max_offsets_per_trigger = max_offsets_per_trigger
        self.reports: list[BatchReport] = []
        self._ready: set[str] = set()
        # Duplicate header keys must not fail a whole batch: the last one wins, like Kafka clients.
        spark.conf.set("spark.sql.mapKeyDedupPolicy", "LAST_WIN")

    def _placed(self, candidates: list[BronzeTarget], guard: ResidencyGuard) -> list[BronzeTarget]:
        """The targets whose contract lets this lake hold them; the others' topics are not read.

        Every location is checked before the first byte: one outside the deployment's regions
        (the lake, or the checkpoint, which holds offsets only) is an error; a stream whose own
        contract narrows the regions so that this lake may not hold it is left in Kafka, with
        the reason in :attr:`refused`, and the other streams land.
        """
        self._residency[checkpoint_path(self.cfg)] = guard.check(checkpoint_path(self.cfg)).region
        placed = []
        for target in candidates:
            locations = (target.bronze_path, target.quarantine_path)
            for location in locations:
                guard.check(location)
            try:
                regions = {loc: guard.check(loc, [target.contract]).region for loc in locations}
            except ResidencyError as e:
                self.refused[target.contract.id] = self._refused_topics[target.contract.topic] = str(e)
                logger.warning("bronze: %s is not read into this lake: %s", target.contract.topic, e)
                continue
            self._residency.update(regions)
            placed.append(target)
        if not placed:
            raise ResidencyError(f"this lake may hold no stream's data: {'; '.join(self.refused.values())}")
        return placed

    # 1. read ---------------------------------------------------------------------------
    def read(self) -> DataFrame:
        reader = self.spark.readStream.format("kafka")
        for key, value in kafka_source_options(self.cfg).items():
            reader = reader.option(key, value)
        return (
            reader.option("subscribe", ",".join(sorted(self.by_topic)))
            .option("startingOffsets", "earliest")
            .option("includeHeaders", "true")
            .option("maxOffsetsPerTrigger", str(self.max_offsets_per_trigger))
            .load()
        )

    # 2. transform ------------------------------------------------------------------------
    def classify(self, batch: DataFrame, now: datetime | None = None) -> DataFrame:
        """Raw Kafka rows -> rows with ``_reason`` (null when valid) and each stream's decoded record
        (:meth:`ingestion.cloud.checks.RecordChecks.classify`)."""
        return self.checks.classify(batch, now)

    # 3. write ----------------------------------------------------------------------------
    def process_batch(self, batch: DataFrame, batch_id: int) -> BatchReport:
        """foreachBatch body: classify, then write bronze and quarantine idempotently for ``batch_id``.

        The batch is read from Kafka once: every topic is classified in one pass, the
        result cached, and one aggregate over it gives each topic's counts per reason and
        each partition's offset range. Topics are then written one after the other.
        """
        from pyspark.sql import functions as F

        t0 = time.monotonic()
        report = BatchReport(batch_id)
        # Cached, and not only to decode once: a filter on ``_reason`` over uncached rows is
        # pushed into the checks and inlines them many times over (measured: a 300k-record
        # batch took 100 s instead of 7).
        rows = self.classify(batch, datetime.now(UTC)).persist()
        try:
            # Per topic, the records per reason (None: valid) and the offset range of each
            # partition: with the batch id, the ranges identify the batch, so a replay after
            # a crash is recognised.
            reasons: dict[str, dict[str | None, int]] = {}
            offsets: dict[str, dict[str, list[int]]] = {}
            secret: dict[str, int] = {}  # per topic, the records labelled secret (all of them quarantined)
            for r in (
                rows.groupBy("_kafka_topic", "_kafka_partition", "_reason")
                .agg(
                    F.count(F.lit(1)).alias("n"),
                    F.min("_kafka_offset").alias("lo"),
                    F.max("_kafka_offset").alias("hi"),
                    F.count_if("_secret").alias("secret"),
                )
                .collect()
            ):
                topic, part = r["_kafka_topic"], str(r["_kafka_partition"])
                by_reason = reasons.setdefault(topic, {})
                by_reason[r["_reason"]] = by_reason.get(r["_reason"], 0) + r["n"]
                secret[topic] = secret.get(topic, 0) + r["secret"]
                lo, hi = offsets.setdefault(topic, {}).get(part, [r["lo"], r["hi"]])
                offsets[topic][part] = [min(lo, r["lo"]), max(hi, r["hi"])]
            unknown = sorted(set(reasons) - set(self.by_topic))
            if unknown:  # nothing written: the stream stops here and its offsets stay unconsumed
                unnamed = [t for t in unknown if t not in self._refused_topics]
                refused = [self._refused_topics[t] for t in unknown if t in self._refused_topics]
                parts = []
                if unnamed:
                    parts.append(f"topics no contract names: {', '.join(unnamed)}")
                if refused:
                    parts.append(f"topics this lake may not hold ({'; '.join(refused)})")
                raise IngestionError(
                    f"batch {batch_id} holds records of {'; and of '.join(parts)}; "
                    "the job subscribes only to the others, so check its subscription"
                )
            report.consumed = sum(n for by_reason in reasons.values() for n in by_reason.values())
            report.read_seconds = time.monotonic() - t0

            def one_topic(topic: str) -> BatchReport:
                part = BatchReport(batch_id)
                self._write(
                    rows.where(F.col("_kafka_topic") == topic),
                    self.by_topic[topic],
                    batch_id,
                    part,
                    offsets[topic],
                    reasons[topic],
                    secret[topic],
                )
                return part

            # One topic after the other: the topics' writes share the cached plan, and
            # planning them from several threads raced inside Spark's from_avro (an
            # IndexOutOfBoundsException in one bench run of three).
            for part in map(one_topic, sorted(reasons)):
                report.inserted.update(part.inserted)
                report.duplicates.update(part.duplicates)
                report.quarantined.update(part.quarantined)
                for reason, n in part.reasons.items():
                    report.reasons[reason] = report.reasons.get(reason, 0) + n
        finally:
            rows.unpersist()
        report.seconds = time.monotonic() - t0
        self.reports.append(report)
        # The split tells a slow broker or decode (read) from a slow lake (write).
        logger.info(
            "bronze batch %d: %d consumed, %d inserted, %d duplicates, %d quarantined %s in %.1fs "
            "(read, decode and check %.1fs; key check and writes %.1fs)",
            batch_id,
            report.consumed,
            sum(report.inserted.values()),
            sum(report.duplicates.values()),
            sum(report.quarantined.values()),
            report.reasons or "",
            report.seconds,
            report.read_seconds,
            report.seconds - report.read_seconds,
        )
        return report

    def _write(
        self,
        rows: DataFrame,
        target: BronzeTarget,
        batch_id: int,
        report: BatchReport,
        offsets: Mapping[str, list[int]],
        counts: Mapping[str | None, int],
        n_secret: int = 0,
    ) -> None:
        """Write one topic's classified rows: the invalid ones to quarantine, the new valid ones to bronze.

        ``counts`` holds the topic's records per reason, None for the valid ones;
        ``n_secret`` how many of the invalid ones are labelled secret.
        """
        from pyspark.sql import functions as F

        ingested = F.current_timestamp().alias("_ingested_at")
        reasons = {reason: n for reason, n in counts.items() if reason is not None}
        n_good = counts.get(None, 0)
        meta = {"batch": batch_id, "offsets": dict(offsets)}
        if reasons:
            bad = rows.where(F.col("_reason").isNotNull())
            if n_secret:
                bad = bad.join(F.broadcast(self._digests(bad, target)), ["_kafka_partition", "_kafka_offset"], "left")
                digest = [F.col("_value_hmac"), F.col("_hmac_key_id")]
            else:
                digest = [F.lit(None).cast("string").alias(c) for c in ("_value_hmac", "_hmac_key_id")]
            # Not kept: the bytes of a record labelled secret, and of one its contract no longer allows.
            raw = ~F.col("_secret") & (F.col("_reason") != "expired")
            quarantine = bad.select(
                *KAFKA_COLUMNS,
                F.when(raw, F.col("_key")).alias("_key"),
                F.when(raw, F.col("_value")).alias("_value"),
                "_headers",
                "_device_id",
                "_seq",
                F.length("_value").alias("_size"),
                *digest,
                "_event_ts",
                F.col("_reason").alias("reason"),
                ingested,
                F.lit(batch_id).alias("_batch_id"),
            )
            self._ensure_table(target.quarantine_path, quarantine.schema, target, "quarantine")
            inserted = self._quarantine_new(quarantine, target, meta)
            report.quarantined[target.name] = inserted
            report.duplicates[target.name] = sum(reasons.values()) - inserted
            for reason, n in reasons.items():
                report.reasons[reason] = report.reasons.get(reason, 0) + n
        if n_good == 0:
            return

        bronze = rows.where(F.col("_reason").isNull()).select(*bronze_columns(target.contract.stream), ingested)
        self._ensure_table(target.bronze_path, bronze.schema, target, "bronze")
        inserted = self._insert_new(bronze, target, meta)
        report.inserted[target.name] = inserted
        report.duplicates[target.name] = report.duplicates.get(target.name, 0) + n_good - inserted

    def _digests(self, bad: DataFrame, target: BronzeTarget) -> DataFrame:
        """``_kafka_partition``, ``_kafka_offset``, ``_value_hmac`` and ``_hmac_key_id`` of the
        secret-labelled records among ``bad`` (one topic's).

        Keyed with the active key of the topic's tenant, on the driver, from the collected
        payloads (a handful: such records are rare and never valid); only the digests go
        back to Spark, so the key enters no plan, log or table.
        """
        from pyspark.sql import functions as F

        key = self._key(target.contract.tenant)
        labelled = bad.where(F.col("_secret")).select("_kafka_partition", "_kafka_offset", "_value").collect()
        digests = [
            (
                r["_kafka_partition"],
                r["_kafka_offset"],
                *((None, None) if r["_value"] is None else payload_digest(key, r["_value"])),
            )
            for r in labelled
        ]
        return self.spark.createDataFrame(
            digests, "_kafka_partition INT, _kafka_offset LONG, _value_hmac STRING, _hmac_key_id STRING"
        )

    def _key(self, tenant: str | None) -> PseudonymKey:
        """The active key of ``tenant``; the key ring is loaded the first time one is needed."""
        if self._keys is None:
            self._keys = configured_key_ring(self.cfg, self._tenants)
        return self._keys.active(tenant)

    def _quarantine_new(self, source: DataFrame, target: BronzeTarget, meta: dict[str, Any]) -> int:
        """Append the invalid records quarantine does not hold yet; returns how many.

        A quarantined record is known by its Kafka coordinates (topic, partition, offset and
        timestamp: a topic created again restarts its offsets, never at the same instant).
        As for bronze, the commit's ``userMetadata`` names the batch id and its offset
        ranges, so a batch replayed after a crash finds its commit and writes nothing. A
        query started on a new checkpoint numbers its batches from 0 again and reads Kafka
        from the earliest offset: its records are new unless quarantine holds their
        coordinates, which it then counts as duplicates. (A Delta ``txnAppId`` keyed by
        the batch id took a new checkpoint's batches for ones already written and dropped
        their records.)
        """
        from pyspark.sql import functions as F

        table = open_table(self.cfg, target.quarantine_path)
        done = _committed(table, meta)
        if done is not None:
            logger.info(
                "quarantine of batch %d of %s was committed before a restart; not written again",
                meta["batch"],
                target.name,
            )
            return int(done["inserted"])
        batch = source.select(*QUARANTINE_KEY).toArrow()
        held = _held_coordinates(table, batch)
        new = source
        if held.num_rows:
            new = new.join(F.broadcast(self.spark.createDataFrame(held)), list(QUARANTINE_KEY), "left_anti")
        inserted = batch.num_rows - held.num_rows
        writer = (
            new.write.format("delta")
            .mode("append")
            .option("mergeSchema", "true")  # a newer schema adds optional columns
            .option("userMetadata", json.dumps({**meta, "quarantined": batch.num_rows, "inserted": inserted}))
        )
        if inserted == 0:  # a commit all the same, for the count of duplicates (see _insert_new)
            writer = writer.option("txnAppId", f"fieldloop-quarantine-empty:{target.name}").option(
                "txnVersion", table.version() + 1
            )
        writer.save(target.quarantine_path)
        return inserted

    def _insert_new(self, source: DataFrame, target: BronzeTarget, meta: dict[str, Any]) -> int:
        """Append the (device, seq) pairs bronze does not hold yet, each once; returns how many.

        The keys are checked outside Spark: the batch's keys are collected as Arrow, which
        also tells whether the batch holds a key twice, and matched against the table's two
        key columns read by ``deltalake`` (tens of milliseconds for 400k rows, where a Spark
        scan of the same files cost a second, most of it rebuilding the snapshot). Usually
        no key repeats and none is held, and the append needs neither a shuffle nor a join.

        Exactly once: the commit's ``userMetadata`` names the batch id and its Kafka offset
        ranges. A batch replayed after a crash finds its own commit among the table's newest
        and writes nothing; otherwise its keys are all held and it would insert nothing
        anyway, but would count its records as duplicates a second time. This replaces
        Delta's ``txnAppId``, whose check rebuilt the snapshot's state on every commit.
        """
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        table = open_table(self.cfg, target.bronze_path)
        done = _committed(table, meta)
        if done is not None:
            logger.info(
                "bronze batch %d of %s was committed before a restart; not written again", meta["batch"], target.name
            )
            return int(done["inserted"])
        keys = ["_device_id", "_seq"]
        batch_keys = source.select(*keys).toArrow()
        distinct = batch_keys.group_by(keys).aggregate([])
        new = source
        if distinct.num_rows < batch_keys.num_rows:  # a key twice in the batch: its first copy is kept
            first = Window.partitionBy(*keys).orderBy("_kafka_partition", "_kafka_offset")
            new = new.withColumn("_rank", F.row_number().over(first)).where("_rank = 1").drop("_rank")
        held = _held_keys(table, distinct)
        if held.num_rows:
            new = new.join(F.broadcast(self.spark.createDataFrame(held)), keys, "left_anti")
        inserted = distinct.num_rows - held.num_rows
        writer = (
            new.write.format("delta")
            .mode("append")
            .option("mergeSchema", "true")  # a newer schema adds optional columns (Avro resolution only adds)
            .option(
                "userMetadata",
                json.dumps(
                    {
                        **meta,
                        "valid": distinct.num_rows,
                        "in_batch_duplicates": batch_keys.num_rows - distinct.num_rows,
                        "inserted": inserted,
                    }
                ),
            )
        )
        if inserted == 0:
            # Delta skips an append that adds no file, and with it the record of this
            # batch's duplicates; a transaction marker makes it a commit.
            writer = writer.option("txnAppId", f"fieldloop-bronze-empty:{target.name}").option(
                "txnVersion", table.version() + 1
            )
        writer.save(target.bronze_path)
        return inserted

    def _ensure_table(self, path: str, schema: StructType, target: BronzeTarget, layer: str) -> None:
        """Create the Delta table with its governance properties on first use.

        Existence and properties are read from the log with ``deltalake``: through Spark
        this check cost most of a second on every scheduled run.
        """
        if path in self._ready:
            return
        table = find_table(self.cfg, path)
        # VACUUM removes the files of rows deleted at the contract's retention after this grace.
        wanted = file_retention_properties(target.contract)
        if layer == "bronze":
            wanted.update(BRONZE_PROPERTIES)
        if table is not None:
            # a table from before these properties existed gets them once
            props = table.metadata().configuration
            missing = {k: v for k, v in wanted.items() if props.get(k) != v}
            if missing:
                assignments = ", ".join(f"{k} = {v}" for k, v in missing.items())
                self.spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({assignments})")
            self._ready.add(path)
            return
        gov = TableGovernance(
            target.contract.data_class,
            target.contract.id,
            self._residency[path],
            appi_level="raw",
            tenant=target.contract.tenant,
            contract_version=target.contract.version,
        )
        props = {
            **gov.to_delta_properties(),
            "fieldloop.layer": layer,
            "fieldloop.stream": target.contract.stream,
            **wanted,
        }
        create_table(self.spark, path, schema, props)
        self._ready.add(path)

    # run ---------------------------------------------------------------------------------
    def start(self, available_now: bool = True, trigger_seconds: int = 5) -> StreamingQuery:
        """Start the query; ``available_now`` drains what is in Kafka and stops."""
        writer = (
            self.read()
            .writeStream.queryName("fieldloop-bronze")
            .foreachBatch(self.process_batch)
            .option("checkpointLocation", checkpoint_path(self.cfg))
        )
        writer = (
            writer.trigger(availableNow=True)
            if available_now
            else writer.trigger(processingTime=f"{trigger_seconds} seconds")
        )
        return writer.start()


def payload_digest(key: PseudonymKey, payload: bytes) -> tuple[str, str]:
    """(HMAC-SHA256 of ``payload`` under ``key`` as hex, the key's id): what quarantine keeps
    of a record it may not keep raw. Whoever holds the record at the site and the key can
    tell it is this one; nobody can learn its bytes from the digest."""
    return hmac.new(key.secret, DIGEST_CONTEXT + bytes(payload), hashlib.sha256).hexdigest(), key.id


def _committed(table: Any, meta: Mapping[str, Any], depth: int = 20) -> dict[str, Any] | None:
    """The ``userMetadata`` of this very batch's commit, if the table holds it; else None.

    The newest bronze-job commit is the only one that can be this batch's: a stream's batch
    ids only grow, and Spark replays nothing older than the last unfinished batch. Batch id
    *and* offsets must match, so a new checkpoint (whose ids start again at 0) is never
    mistaken for the old one. Commits of other writers (table upkeep) carry no offsets
    and are passed over.
    """
    for commit in table.history(depth):
        try:
            prior = json.loads(commit.get("userMetadata") or "null")
        except ValueError:
            continue
        if isinstance(prior, dict) and "offsets" in prior:
            same = prior.get("batch") == meta["batch"] and prior["offsets"] == meta["offsets"]
            return prior if same else None
    return None


def _held_keys(table: Any, batch_keys: Any) -> Any:
    """The rows of ``batch_keys`` (``_device_id``, ``_seq``) that the bronze table already holds.

    Only the key columns are read, and only from files whose ``_seq`` range reaches the
    batch's smallest sequence number (parquet statistics prune the rest).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    # Spark hands strings over as large_string, deltalake as string: one form for the join.
    key_schema = pa.schema([("_device_id", pa.string()), ("_seq", pa.int64())])
    batch_keys = batch_keys.cast(key_schema)
    if batch_keys.num_rows == 0:
        return batch_keys
    lowest = pc.min(batch_keys["_seq"]).as_py()
    held = table.to_pyarrow_dataset().to_table(columns=["_device_id", "_seq"], filter=pc.field("_seq") >= lowest)
    return batch_keys.join(held.cast(key_schema), ["_device_id", "_seq"], join_type="left semi")


def _held_coordinates(table: Any, batch: Any) -> Any:
    """The rows of ``batch`` (:data:`QUARANTINE_KEY`) whose record the quarantine table already holds.

    Only the key columns are read, and only from files whose offsets reach the batch's smallest.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    key_schema = pa.schema(
        [
            ("_kafka_topic", pa.string()),
            ("_kafka_partition", pa.int32()),
            ("_kafka_offset", pa.int64()),
            ("_kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ]
    )
    batch = batch.cast(key_schema)
    if batch.num_rows == 0:
        return batch
    lowest = pc.min(batch["_kafka_offset"]).as_py()
    held = table.to_pyarrow_dataset().to_table(columns=list(QUARANTINE_KEY), filter=pc.field("_kafka_offset") >= lowest)
    return batch.join(held.cast(key_schema), list(QUARANTINE_KEY), join_type="left semi")
