"""Step 2 of the bronze job: the checks every Kafka record passes, as Spark column expressions.

:class:`RecordChecks` turns raw Kafka rows of any of the job's topics into rows with a
``_reason`` (null when the record is valid) and, per stream, the decoded record in
:func:`record_column`: the envelope checks against the topic's contract (size, class,
tenant, contract id, device and sequence, the single-object header and a known writer
fingerprint), then the Avro decode with the writer schema resolved to the stream's latest,
non-finite numbers, implausible timestamps and records past their contract's retention
(``expired``). The first failing check is the reason. :mod:`ingestion.cloud.bronze` reads
the stream and writes what this module classifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fieldloop.classes import DataClass
from fieldloop.contracts import DataContract
from fieldloop.retention import cutoff, event_time_field
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, HEADER_LEN, SchemaRegistry

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

MAX_FUTURE_SECONDS = 24 * 3600  # device clocks drift; a day ahead is a broken clock
EARLIEST_PLAUSIBLE = "2000-01-01 00:00:00"


def record_column(stream: str) -> str:
    """The column :meth:`BronzeJob.classify` decodes ``stream``'s records into."""
    return f"_record_{stream}"


class RecordChecks:
    """The checks every record of the job's topics passes, built as Spark column expressions.

    Args:
        spark: the session (schemas' Spark types are probed with it).
        registry: the Avro schemas.
        by_topic: the contract of each topic the job reads.
        secret_contracts: ids of the secret contracts (of every stream, read or not).
        max_record_bytes: larger payloads are ``oversized``.
    """

    def __init__(
        self,
        spark: SparkSession,
        registry: SchemaRegistry,
        by_topic: Mapping[str, DataContract],
        secret_contracts: Sequence[str],
        max_record_bytes: int,
    ) -> None:
        self.spark = spark
        self.registry = registry
        self.by_topic = dict(by_topic)
        self.max_record_bytes = max_record_bytes
        self.secret_contracts = sorted(secret_contracts)  # naming one makes a record secret, whatever its class says
        self._types: dict[bytes, Any] = {}

    def classify(self, batch: DataFrame, now: datetime | None = None) -> DataFrame:
        """Raw Kafka rows of any of the job's topics -> rows with ``_reason`` (null when valid)
        and, per stream, the decoded record in :func:`record_column`.

        Every topic is classified in the same pass, by its own contract, so a micro-batch is
        read from Kafka once whatever topics it spans. Built as a chain of projections and
        nothing else. Each step reads the columns the previous one computed, so the header
        map and the Avro decode run once per row. A filter would not: Spark pushes it below
        the projections and inlines the expressions they name, so a ``where`` on ``_reason``
        made it rebuild the header map for every header it checked and tripled the batch's
        time.

        ``now`` (default: the current time) bounds plausible timestamps and decides which
        records are past their contract's retention. A batch passes one fixed value, so a
        recomputed partition classifies its records exactly as before.
        """
        from pyspark.sql import functions as F

        # A cast, not ``transform`` with a lambda: higher-order functions are interpreted
        # row by row, outside whole-stage code generation.
        headers = F.map_from_entries("headers").cast("map<string,string>")
        rows = batch.select(
            F.col("topic").alias("_kafka_topic"),
            F.col("partition").alias("_kafka_partition"),
            F.col("offset").alias("_kafka_offset"),
            F.col("timestamp").alias("_kafka_timestamp"),
            F.col("key").alias("_key"),
            F.col("value").alias("_value"),
            F.coalesce(headers, F.create_map().cast("map<string,string>")).alias("_headers"),
        )
        h = F.col("_headers")
        rows = rows.select(
            "*",
            h[H_CLASS].alias("_h_class"),
            h[H_TENANT].alias("_h_tenant"),
            h[H_CONTRACT].alias("_h_contract"),
            F.coalesce(h[H_DEVICE], F.col("_key").cast("string")).alias("_device_id"),
            h[H_SEQ].try_cast("long").alias("_seq"),
            F.lower(F.hex(F.substring("_value", 3, 8))).alias("_fingerprint"),
        )
        reason = F
        for topic, contract in sorted(self.by_topic.items()):
            reason = reason.when(F.col("_kafka_topic") == topic, self._envelope_reason(contract))
        rows = rows.select(
            "*",
            # no contract names the topic: never valid (process_batch refuses such a batch)
            reason.otherwise(F.lit("unknown-topic")).alias("_reason"),
            self._secret_label().alias("_secret"),
        )
        rows = self._decode(rows, now or datetime.now(UTC))
        return rows.drop("_h_class", "_h_tenant", "_h_contract", "_fingerprint")

    def _secret_label(self) -> Column:
        """True when a record's headers label it secret, whatever else is wrong with it.

        Its class header says ``secret`` (in any case or padding), or its contract header
        names a secret contract. Such a record is never valid here (raw secret data never
        leaves the site) and whatever reason quarantines it - ``raw-secret``, or a check
        that comes first such as ``oversized`` - its bytes are not kept.
        """
        from pyspark.sql import functions as F

        labelled = F.lower(F.trim(F.col("_h_class"))) == "secret"
        if self.secret_contracts:
            labelled = labelled | F.lower(F.trim(F.col("_h_contract"))).isin(self.secret_contracts)
        return F.coalesce(labelled, F.lit(False))

    def _envelope_reason(self, c: DataContract) -> Column:
        """The first check a record of contract ``c`` fails before decoding, or null."""
        from pyspark.sql import functions as F

        known_classes = [str(x) for x in DataClass]
        size = F.length("_value")
        klass, tenant, contract = F.col("_h_class"), F.col("_h_tenant"), F.col("_h_contract")
        device, seq = F.col("_device_id"), F.col("_seq")
        return (
            F.when(F.col("_value").isNull(), "empty")
            .when(size > self.max_record_bytes, "oversized")
            .when(klass.isNull() | ~klass.isin(known_classes), "unknown-class")
            .when(klass == "secret", "raw-secret")
            .when(klass != str(c.data_class), "class-mismatch")
            .when(F.lit(c.data_class is DataClass.RESTRICTED) & tenant.isNull(), "missing-tenant")
            .when(F.coalesce(tenant, F.lit("")) != F.lit(c.tenant or ""), "tenant-mismatch")
            .when(contract.isNull() | (contract != c.id), "contract-mismatch")
            .when(device.isNull() | seq.isNull() | (seq < 0), "missing-sequence")
            .when(size < HEADER_LEN, "truncated")
            .when(F.substring("_value", 1, 2) != F.unhex(F.lit("C301")), "bad-magic")
            .when(~F.col("_fingerprint").isin(list(self._writers(c.stream))), "unknown-fingerprint")
        )

    def _writers(self, stream: str) -> dict[str, Any]:
        """The registered schemas of ``stream`` by fingerprint (hex)."""
        return {s.fingerprint.hex(): s for s in self.registry.all() if s.stream == stream}

    def _decode(self, rows: DataFrame, now: datetime) -> DataFrame:
        """Decode each record with the writer schema its fingerprint names, resolved to its stream's latest schema.

        One ``CASE`` per stream over that stream's fingerprints, evaluated only for rows
        with no reason yet, so every record is decoded once and by its own writer schema.
        Fingerprints are unique across streams, and the envelope checks already refused a
        fingerprint foreign to the topic's stream. ``_event_ts`` is the decoded record's
        event time (see :func:`fieldloop.retention.event_time_field`).
        """
        from pyspark.sql import functions as F
        from pyspark.sql.avro.functions import from_avro

        body = F.expr(f"substring(_value, {HEADER_LEN + 1}, length(_value) - {HEADER_LEN})")
        topics: dict[str, list[str]] = {}
        for topic, contract in sorted(self.by_topic.items()):
            topics.setdefault(contract.stream, []).append(topic)
        version = F.lit(None).cast("int")  # a CASE over every fingerprint of every stream
        event = F.lit(None).cast("timestamp")
        reason = F.when(F.col("_reason").isNotNull(), F.col("_reason"))
        for stream, stream_topics in sorted(topics.items()):
            writers = self._writers(stream)
            if not writers:  # no schema registered for the stream: nothing decodes (unknown-fingerprint)
                rows = rows.withColumn(record_column(stream), F.lit(None))
                continue
            reader = self.registry.get(stream)
            reader_type = _all_nullable(self._spark_type(reader))
            # Decoded in a projection of its own, then resolved field by field from that
            # column. Resolving ``from_avro(...)`` directly had Spark inline the decode
            # into every field it read: nine decodes per record for an eight-field schema.
            record = F
            for fp_hex, writer in sorted(writers.items()):
                hit = F.col("_reason").isNull() & (F.col("_fingerprint") == fp_hex)
                raw = from_avro(body, writer.json, {"mode": "PERMISSIVE"})
                rows = rows.withColumn(f"_avro_{fp_hex}", F.when(hit, raw))
                record = record.when(hit, self._resolve(F.col(f"_avro_{fp_hex}"), writer, reader))
                version = F.when(hit, F.lit(writer.version)).otherwise(version)
            rows = rows.withColumn(record_column(stream), record).drop(*(f"_avro_{fp}" for fp in writers))
            decoded = F.col(record_column(stream))
            ours = F.col("_kafka_topic").isin(stream_topics)
            # PERMISSIVE from_avro turns a malformed body into a struct of nulls, and no valid
            # record has a null in a field whose Avro type is not a union with null.
            broken = decoded.isNull()
            for name in (f["name"] for f in reader.parsed["fields"] if not _nullable(f["type"])):
                broken = broken | decoded[name].isNull()
            reason = reason.when(ours & broken, "undecodable").when(
                ours & _non_finite(reader_type, decoded), "non-finite"
            )
            if "ts" in reader_type.fieldNames():
                ts = decoded["ts"]
                reason = reason.when(
                    ours & (ts > F.lit(now) + F.expr(f"INTERVAL {MAX_FUTURE_SECONDS} SECONDS")), "future-timestamp"
                ).when(ours & (ts < F.to_timestamp(F.lit(EARLIEST_PLAUSIBLE))), "implausible-timestamp")
            field = event_time_field(reader.parsed)
            if field is not None:
                event = F.when(ours, decoded[field]).otherwise(event)
                # Retention is the contract's, and a stream's topics may belong to different contracts.
                for topic in stream_topics:
                    oldest = cutoff(self.by_topic[topic], now)
                    reason = reason.when((F.col("_kafka_topic") == topic) & (decoded[field] < F.lit(oldest)), "expired")
        return rows.withColumns({"_schema_version": version, "_reason": reason, "_event_ts": event})

    def _resolve(self, record: Column, writer: Any, reader: Any) -> Column:
        """Avro resolution at column level: reader fields from the writer, or the reader's default.

        The result always has the all-nullable form of the reader's type, so the branches
        of every fingerprint agree (casts may only widen nullability).
        """
        from pyspark.sql import functions as F

        reader_type = _all_nullable(self._spark_type(reader))
        writer_fields = set(self._spark_type(writer).fieldNames())
        defaults = {f["name"]: f.get("default") for f in reader.parsed["fields"]}
        cols = []
        for fld in reader_type.fields:
            if fld.name in writer_fields:
                cols.append(record[fld.name].cast(fld.dataType).alias(fld.name))
            else:
                cols.append(F.lit(defaults.get(fld.name)).cast(fld.dataType).alias(fld.name))
        return F.when(record.isNull(), F.lit(None)).otherwise(F.struct(*cols))

    def _spark_type(self, schema: Any) -> StructType:
        """The Spark struct type ``from_avro`` produces for a schema (cached per fingerprint)."""
        if schema.fingerprint not in self._types:
            from pyspark.sql import functions as F
            from pyspark.sql.avro.functions import from_avro

            probe = self.spark.range(0).select(from_avro(F.lit(b"").cast("binary"), schema.json).alias("r"))
            self._types[schema.fingerprint] = probe.schema["r"].dataType
        return self._types[schema.fingerprint]


def _all_nullable(dtype: Any) -> Any:
    """``dtype`` with every nested field and element nullable."""
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType

    if isinstance(dtype, StructType):
        return StructType([StructField(f.name, _all_nullable(f.dataType), True) for f in dtype.fields])
    if isinstance(dtype, ArrayType):
        return ArrayType(_all_nullable(dtype.elementType), True)
    if isinstance(dtype, MapType):
        return MapType(dtype.keyType, _all_nullable(dtype.valueType), True)
    return dtype


def _nullable(avro_type: Any) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type


def _non_finite(dtype: DataType, col: Column) -> Column:
    """A condition true when any double/float inside ``col`` (structs, arrays) is NaN or infinite."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, StructType

    def bad(t: DataType, c: Column) -> Column | None:
        if isinstance(t, (DoubleType, FloatType)):
            return F.isnan(c) | (F.abs(c) == F.lit(float("inf")))
        if isinstance(t, StructType):
            conds = [x for x in (bad(f.dataType, c[f.name]) for f in t.fields) if x is not None]
            if not conds:
                return None
            out = conds[0]
            for x in conds[1:]:
                out = out | x
            return out
        if isinstance(t, ArrayType) and bad(t.elementType, c[0]) is not None:
            return F.exists(c, lambda x: bad(t.elementType, x))
        return None

    cond = bad(dtype, col)
    return F.coalesce(cond, F.lit(False)) if cond is not None else F.lit(False)
