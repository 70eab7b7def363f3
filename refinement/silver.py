"""Bronze -> silver: quality-checked, pseudonymized or anonymized, one run per new bronze versions.

A run of one contract reads as four steps:

1. **read** the rows bronze commits ``a+1 .. b`` added (Delta Change Data Feed), where
   ``a`` is the last bronze version every output table holds (kept in each silver
   commit's ``userMetadata``) and ``b`` bronze's current version; a first run reads the
   snapshot at ``b``. Rows already past the contract's retention are counted as expired
   and go no further: silver never writes a row that retention would delete;
2. **decide**, in one pass over the rows' keys and the columns the rules read: mark each
   row with the first quality rule it fails, count rows per rule, gather the distinct
   combinations of raw identifiers and scrub the free-text notes; for anonymized tables
   also walk the trips and gather the k-anonymity cells of the rows they keep. Failures go to
   ``quarantine/<table>_quality`` with the rule; too many fail the run before anything is
   written. Only the failing, noted and trip-end rows are kept (cached, by key, with the
   cells); the write reads the rows from bronze again;
3. **transform** per output table of the stream's policy: drop the failing rows and the
   trip ends, generalize, put the scrubbed notes back by key, key the pseudonyms (each
   distinct id once), and for anonymized tables enforce k-anonymity as decided on the cells;
4. **write** each output with ``replaceWhere`` on ``_bronze_version`` in ``(a, b]``: a run
   repeated over the same bronze versions replaces exactly what it wrote before, so
   retries and re-runs are idempotent, and a run with no new bronze versions writes
   nothing. A table's first write creates it, properties and all, in one commit. Before
   it, the rows earlier runs wrote that are now past retention are deleted
   (:func:`refinement.maintenance.expire`). A privacy report goes next to each table.

Every location passes the residency guard before the first read, so a run aimed outside
the allowed regions writes nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fieldloop.catalog import find_table, last_commit
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import DataContract
from fieldloop.keys import KeyRing
from fieldloop.lineage import TableGovernance
from fieldloop.residency import ResidencyGuard
from fieldloop.retention import cutoff, event_time_field, file_retention_properties
from fieldloop.spark import create_table_as
from fieldloop.wire import default_registry
from refinement import anonymize, quality
from refinement.errors import PrivacyCheckError, RefinementError
from refinement.maintenance import expire
from refinement.policy import MESH_COLUMN, PrivacyPolicy, TablePolicy
from refinement.pseudonym import KEY_ID_COLUMN, pseudonymize
from refinement.quality import RULE_COLUMN
from refinement.report import PrivacyReport, write_report
from refinement.text import PLACEHOLDER_TYPES, ScrubberConfig, redaction_sums, scrub_column

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Observation, SparkSession

logger = logging.getLogger(__name__)

VERSION_COLUMN = "_bronze_version"
DEVICE_COLUMN = "_device"
BRONZE_ONLY = [
    "_headers",
    "_kafka_topic",
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_timestamp",
    "_ingested_at",
    "_schema_version",
]


# Silver keeps file statistics (min, max, nulls) on the columns its readers filter by:
# device and time (Z-order, retention, gold's windows) and the bronze version (each run's
# replaceWhere). Delta's default, every one of the first 32 columns, costs a noticeable share
# of each write for statistics on sensor values that no query prunes by.
SKIPPING_COLUMNS = (DEVICE_COLUMN, "ts", "_seq", VERSION_COLUMN)

ROW_KEY = ("_device_id", "_seq")  # unique in bronze: its writer keeps one row per key
BROADCAST_ROWS = 200_000  # frames up to this size are sent whole to every task (tens of MB at most)


def by_size(keyed: DataFrame, rows: int) -> DataFrame:
    """``keyed`` marked for a broadcast join when it is small enough to send to every task.

    The frames joined back by key (failing rows, trimmed frames, scrubbed notes) are small
    beside the rows they join; broadcast, the rows need no shuffle to meet them.
    """
    from pyspark.sql import functions as F

    return F.broadcast(keyed) if rows <= BROADCAST_ROWS else keyed


def observed(observation: Observation) -> dict[str, Any]:
    """The metrics ``observation`` collected in the action that ran, or none.

    Adaptive execution replaces the part of a plan above a stage that came out empty (a
    run whose rows are all past retention: the filter leaves none for the shuffles of the
    first pass) by an empty relation, and with it every node observing rows below that
    stage: their metrics are lost, and PySpark's ``Observation.get`` fails on the empty
    metrics row.
    """
    if observation._jo is not None and observation._jo.getRow().length() == 0:
        return {}
    return observation.get


def within_retention(column: str, oldest: datetime) -> Column:
    """Rows whose ``column`` is not before ``oldest`` (or unknown: no rule of retention can apply)."""
    from pyspark.sql import functions as F

    return (F.col(column) >= F.lit(oldest)) | F.col(column).isNull()


# What Delta says when a change feed was not recorded for versions a run reads.
MISSING_CHANGE_FEED = frozenset({"DELTA_MISSING_CHANGE_DATA", "DELTA_CHANGE_DATA_FEED_NOT_ENABLED"})


def missing_change_feed(bronze: str, a: int, b: int, e: Exception) -> RefinementError:
    """The error for a bronze table whose change feed does not cover versions ``a+1 .. b``."""
    condition = getattr(e, "getCondition", lambda: None)()
    return RefinementError(
        f"{bronze} has no change data feed for versions {a + 1}..{b} ({condition}); it was created "
        "before fieldloop enabled it. Re-ingest into a new bronze table, or ALTER it with "
        "delta.enableChangeDataFeed=true and refine from a later version"
    )


def versions_window(a: int, b: int) -> str:
    """The rows of bronze versions ``a+1 .. b``: what one run reads, writes and replaces."""
    return f"{VERSION_COLUMN} > {a} AND {VERSION_COLUMN} <= {b}"


def generalized(tp: TablePolicy, column: str) -> Column:
    """Output column ``column`` of table ``tp`` as its generalization of the raw fields.

    One definition for the rows written and the k-anonymity cells gathered before the
    write, so the two agree on every value.
    """
    from pyspark.sql import functions as F

    if column == MESH_COLUMN:
        lat, lon = [n for n, a in tp.fields.items() if a.action == "mesh"]
        return anonymize.mesh_code(F.col(lat), F.col(lon), int(tp.fields[lat].level or 3))
    act = tp.fields[column]
    if act.action == "time_bucket":
        return anonymize.time_bucket(F.col(column), int(act.minutes or 1))
    if act.action == "band":
        return anonymize.band(F.col(column), float(act.width or 1))
    if act.action == "clip":
        return F.least(F.greatest(F.col(column), F.lit(act.min)), F.lit(act.max))
    if act.action == "keep":
        return F.col(column)
    raise ValueError(f"{column}: '{act.action}' is not a generalization")


def generalized_from(tp: TablePolicy) -> set[str]:
    """The raw fields an anonymized table's quasi-identifiers and sensitive attributes are made of."""
    mesh = {n for n, a in tp.fields.items() if a.action == "mesh"}
    return {f for c in (*tp.quasi_identifiers, *tp.sensitive) for f in (mesh if c == MESH_COLUMN else {c})}


@dataclass
class FirstPass:
    """What one pass over a run's rows decided before anything is written."""

    side: (
        DataFrame  # cached, by key: the rows failing a rule, holding a note or ending a trip, and the cells' first rows
    )
    rows_in: int  # rows within retention, which the rules judged
    failed: dict[str, int]  # rule -> rows failing it first
    ids: list[
        tuple[str | None, ...]
    ]  # the distinct combinations of the raw identifiers, as strings, in id_columns order
    noted: dict[str, int]  # note column -> rows passing the rules that hold a note in it
    placeholders: dict[
        str, dict[str, int]
    ]  # note column -> placeholder type -> how many the scrubber put in those notes
    id_columns: tuple[str, ...] = ()  # the identifier columns of any output, sorted
    trip_ends: int = 0  # rows passing the rules within the trim distance of a trip's start or end
    anonymized: dict[str, TablePolicy] = field(
        default_factory=dict
    )  # table -> policy, in the order the cells are numbered
    expired: int = 0  # rows read that were already past the contract's retention, left out

    def id_values(self, columns: Sequence[str]) -> set[tuple[str | None, ...]]:
        """The distinct combinations of the raw values of ``columns`` (some of :attr:`id_columns`)."""
        at = [self.id_columns.index(c) for c in columns]
        return {tuple(combo[i] for i in at) for combo in self.ids}

    def failing(self) -> DataFrame:
        """Key and first failed rule of the rows failing a rule."""
        return self.side.where(f"{RULE_COLUMN} IS NOT NULL").select(*ROW_KEY, RULE_COLUMN)

    def notes(self, column: str) -> DataFrame:
        """Key, scrubbed note and placeholder counts of the rows that pass the rules and hold a note in ``column``."""
        return self.side.where(f"{RULE_COLUMN} IS NULL AND {column} IS NOT NULL").select(
            *ROW_KEY, column, f"{column}_redactions"
        )

    def ends(self) -> DataFrame:
        """Key of the rows that pass the rules and lie within the trim distance of a trip's start or end."""
        return self.side.where(f"{RULE_COLUMN} IS NULL AND {anonymize.TRIP_END}").select(*ROW_KEY)

    def cells(self, table: str) -> DataFrame:
        """The k-anonymity cells of ``table``'s rows (as :func:`anonymize.cells_of`, device ``_device_id``)."""
        from pyspark.sql import functions as F

        i = list(self.anonymized).index(table)
        quasi, sensitive = self.anonymized[table].quasi_identifiers, self.anonymized[table].sensitive
        return self.side.where(f"_c{i}_rows IS NOT NULL").select(
            "_device_id",
            *[F.col(f"_c{i}_q{j}").alias(q) for j, q in enumerate(quasi)],
            F.col(f"_c{i}_rows").alias("_rows"),
            *[F.col(f"_c{i}_l{j}").alias(f"_l_{j}") for j in range(len(sensitive))],
        )


@dataclass(frozen=True)
class DeviceWalk:
    """One device's rows of a first pass in, its side rows out (run in the Python workers).

    In: the row key, the rule failed, the notes, ``ts``/``lat``/``lon`` when trips are
    trimmed, and per anonymized table ``i`` its quasi-identifier values ``_c{i}_q{j}`` and
    sensitive values ``_c{i}_s{j}`` as the table writes them. Out: the rows failing a rule,
    holding a note, ending a trip (``_trip_end``, walked among the passing rows by
    :func:`anonymize.trip_ends`) or heading a cell. A cell is the device's rows of one
    quasi-identifier combination among those the table keeps; its first row (lowest
    ``_seq``) carries its row count ``_c{i}_rows`` and sensitive values ``_c{i}_l{j}``.
    """

    notes: tuple[str, ...]
    trim: tuple[float, int] | None  # (trim_m, gap_s) when a table trims trips
    tables: tuple[tuple[int, int, bool], ...]  # per anonymized table: quasi-identifiers, sensitive attributes, trims

    def __call__(self, rows: Any) -> Any:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        def mask(values: Any) -> Any:
            return values.to_numpy(zero_copy_only=False)

        passing = mask(pc.is_null(rows[RULE_COLUMN]))
        side = ~passing
        out = {c: rows[c] for c in (*ROW_KEY, RULE_COLUMN, *self.notes)}
        for n in self.notes:
            side |= mask(pc.is_valid(rows[n]))
        ends = np.zeros(len(rows), dtype=bool)
        if self.trim is not None:
            ends = anonymize.trip_ends_among(rows, passing, "ts", "lat", "lon", *self.trim)
            side |= ends
            out[anonymize.TRIP_END] = pa.array(ends, mask=~passing)
        for i, (quasi, sensitive, trims) in enumerate(self.tables):
            written = passing & ~ends if trims else passing
            q = [f"_c{i}_q{j}" for j in range(quasi)]
            cells = (
                rows.filter(pa.array(written))
                .group_by(q, use_threads=False)
                .aggregate(
                    [("_seq", "min"), ("_seq", "count"), *[(f"_c{i}_s{j}", "distinct") for j in range(sensitive)]]
                )
            )
            head = pc.index_in(rows["_seq"], value_set=cells["_seq_min"].combine_chunks())  # _seq is unique per device
            side |= mask(pc.is_valid(head))
            out.update({c: rows[c] for c in q})
            out[f"_c{i}_rows"] = cells["_seq_count"].take(head)
            out.update({f"_c{i}_l{j}": cells[f"_c{i}_s{j}_distinct"].take(head) for j in range(sensitive)})
        return pa.table(out).filter(pa.array(side))


@dataclass(frozen=True)
class Output:
    name: str
    policy: TablePolicy
    path: str


class SilverJob:
    """Refines bronze tables into silver, per contract.

    Args:
        cfg: effective config (lake, k, trip trimming, failure threshold).
        spark: a session from :func:`fieldloop.spark.spark_session`.
        contracts: validated contracts by id.
        policies: validated privacy policies by contract id.
        keys: the pseudonym key ring, loaded once at job start.
        guard: the residency guard.
    """

    def __init__(
        self,
        cfg: FieldloopConfig,
        spark: SparkSession,
        contracts: Mapping[str, DataContract],
        policies: Mapping[str, PrivacyPolicy],
        keys: KeyRing,
        guard: ResidencyGuard,
    ) -> None:
        self.cfg, self.spark, self.contracts, self.policies = cfg, spark, contracts, policies
        self.keys, self.guard = keys, guard
        self.lake = cfg.lake.rstrip("/")
        self.notes = ScrubberConfig()  # how free text is scrubbed; named in each report

    def in_session(self, spark: SparkSession) -> SilverJob:
        """This job, running its Spark work in ``spark`` (another session of the same context)."""
        return SilverJob(self.cfg, spark, self.contracts, self.policies, self.keys, self.guard)

    def outputs(self, contract_id: str) -> list[Output]:
        policy = self.policies[contract_id]
        return [Output(name, tp, f"{self.lake}/silver/{name}") for name, tp in policy.output.items()]

    def time_column(self, contract: DataContract) -> str | None:
        """The column of ``contract``'s rows that retention counts from (its stream's event time)."""
        return event_time_field(default_registry().get(contract.stream).parsed)

    def bronze_path(self, contract: DataContract) -> str:
        return f"{self.lake}/bronze/{contract.table}"

    def quarantine_path(self, contract: DataContract) -> str:
        """Where rows failing the stream's quality rules go."""
        return f"{self.lake}/quarantine/{contract.table}_quality"

    def bronze_quarantine_path(self, contract: DataContract) -> str:
        """Where the bronze job quarantines the stream's invalid records."""
        return f"{self.lake}/quarantine/{contract.table}"

    # run ---------------------------------------------------------------------------------
    def run(
        self, contract_id: str, until: int | None = None, since: int | None = None, now: datetime | None = None
    ) -> list[PrivacyReport]:
        """Refine what bronze gained since the last run, up to bronze version ``until`` (default: latest).

        ``since`` overrides the last run's watermark: bronze versions after it are refined
        again and replace what earlier runs wrote for them (after a policy fix, say).
        ``now`` (default: the current time) decides which rows are past retention.

        Raises:
            ResidencyError: an output location is outside the allowed regions (nothing written).
            QualityError: too many rows fail quality rules (nothing written).
            KeyRingError: the tenant has no active pseudonym key (nothing written).
        """
        from pyspark.errors import AnalysisException

        contract, policy = self.contracts[contract_id], self.policies[contract_id]
        outputs = self.outputs(contract_id)
        bronze, quarantine = self.bronze_path(contract), self.quarantine_path(contract)
        regions = {p: self.guard.check(p, [contract]).region for p in [*(o.path for o in outputs), quarantine]}
        key = self.keys.active(contract.tenant) if any(o.policy.pseudonym_fields for o in outputs) else None
        now = now or datetime.now(UTC)
        time_column = self.time_column(contract)

        def expired_before_write() -> dict[str, int]:
            """Retention on the outputs, before this run writes: its report counts what went."""
            return {o.path: expire(self.spark, self.cfg, o.path, contract, time_column, now) for o in outputs}

        def empty(o: Output, deleted: Mapping[str, int]) -> PrivacyReport:
            return PrivacyReport(
                o.name,
                o.path,
                contract_id,
                o.policy.level,
                policy.version,
                None,
                fields=self._describe(o.policy),
                residency_region=regions[o.path],
                retention_deleted=deleted[o.path],
            )

        # Table metadata is read from the log with ``deltalake``: through Spark, each look
        # at a table's history rebuilt its snapshot (0.1-0.3 s apiece, several per run).
        bronze_table = find_table(self.cfg, bronze)
        if bronze_table is None:
            logger.info("%s: no bronze table yet at %s; nothing to refine", contract_id, bronze)
            deleted = expired_before_write()
            return [empty(o, deleted) for o in outputs]
        latest = bronze_table.version()
        b = latest if until is None else min(until, latest)
        a = min(self._watermark(o.path) for o in outputs) if since is None else since
        if a >= b:
            logger.info("%s: silver already holds bronze up to v%d; nothing to do", contract_id, b)
            deleted = expired_before_write()
            return [empty(o, deleted) for o in outputs]

        oldest = cutoff(contract, now) if time_column else None
        rows = self._read_new(bronze, a, b)
        try:
            first = self._first_pass(rows, policy, outputs, expired=(time_column, oldest) if oldest else None)
        except AnalysisException as e:
            # The change feed's versions are resolved by the pass's first action, not by a
            # probe of their own (a Spark job per stream and run).
            if e.getCondition() in MISSING_CHANGE_FEED:
                raise missing_change_feed(bronze, a, b, e) from e
            raise
        if oldest is not None:
            rows = rows.where(within_retention(time_column, oldest))  # the write's read: only what the pass judged
        try:
            quality.gate(first.rows_in, first.failed, self.cfg.refine.max_failure_rate, contract_id)
            deleted = expired_before_write()
            failing = by_size(first.failing(), sum(first.failed.values()))
            window = versions_window(a, b)
            # Without failures the write is only needed to clear what an earlier run of the
            # same versions quarantined; skipped when there is none (it costs a Spark job and
            # a commit).
            if first.failed or self._holds_window(quarantine, a, b):
                bad = rows.join(failing.withColumnRenamed(RULE_COLUMN, "reason"), list(ROW_KEY))
                self._replace(
                    bad,
                    quarantine,
                    window,
                    {"bronze_version": b, "from": a + 1},
                    self._properties(contract, "quarantine", "raw", policy.version, regions[quarantine], {}),
                )
            good = rows.join(failing, list(ROW_KEY), "left_anti") if first.failed else rows
            reports = []
            for o in outputs:
                report = self._refine_output(good, first, o, contract, policy, key, a, b, regions[o.path])
                report.rows_in, report.quarantined = first.rows_in + first.expired, first.failed
                report.expired_rows, report.retention_deleted = first.expired, deleted[o.path]
                write_report(self.spark, report)
                reports.append(report)
            return reports
        finally:
            first.side.unpersist()

    def _first_pass(
        self,
        rows: DataFrame,
        policy: PrivacyPolicy,
        outputs: list[Output],
        expired: tuple[str, datetime] | None = None,
    ) -> FirstPass:
        """One pass over the new rows for everything the write needs decided first.

        With ``expired`` = (time column, cutoff), the rows older than the cutoff are counted
        and left out before anything else looks at them.

        It marks each row with the first quality rule it fails, counts rows per rule, gathers
        the distinct combinations of raw identifiers to key, and scrubs the free-text notes,
        counting the placeholders put in the notes the write keeps. For anonymized tables it
        also walks the trips of the rows passing the rules and gathers their k-anonymity
        cells, one Arrow batch per device (:meth:`_walk_devices`), on the device partitions
        the monotonic-time rule has already shuffled the rows into, so neither reads bronze
        and shuffles of its own (what a pass of their own and Spark windows cost instead is
        in bench/README.md).

        Only the rows that fail a rule, hold a note or end a trip are kept, cached, by key,
        and each cell rides on its first row. The write reads the rows again from bronze,
        which reads the same at a fixed version. Caching whole rows for both passes cost
        more than that second read: a run took 2.5 copies of its rows, and a read is a
        fraction of one.
        """
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        id_columns = sorted({c for o in outputs for c in o.policy.pseudonym_fields})
        notes = sorted({n for o in outputs for n, act in o.policy.fields.items() if act.action == "scrub_text"})
        trims = any(o.policy.trim_trips for o in outputs)
        anonymized = {o.name: o.policy for o in outputs if o.policy.level == "anonymized"}
        walked = {"ts", "lat", "lon"} if trims else set()
        sources = sorted(walked | {c for tp in anonymized.values() for c in generalized_from(tp)})
        ids, tally, kept = Observation("identifiers"), Observation("quality"), Observation("kept")
        aged, read = Observation("expired"), rows
        if expired is not None:
            column, oldest = expired
            rows = rows.observe(aged, F.count_if(F.col(column) < F.lit(oldest)).alias("rows")).where(
                within_retention(column, oldest)
            )
        if id_columns:  # of all rows: keying a failing row's id too is harmless
            rows = rows.observe(
                ids, F.collect_set(F.struct(*[F.col(c).cast("string") for c in id_columns])).alias("ids")
            )
        verdicts = quality.rules_by_key(rows, policy.expect, ROW_KEY, carry=[*notes, *sources]).observe(
            tally,
            F.count(F.lit(1)).alias("rows"),
            *[F.count_if(F.col(RULE_COLUMN) == e.name).alias(e.name) for e in policy.expect],
        )
        passing = F.col(RULE_COLUMN).isNull()
        if trims or anonymized:
            side = self._walk_devices(verdicts, notes, trims, list(anonymized.values()))
        else:  # nothing to walk: the failing and noted rows, as they are
            on_side = [F.col(RULE_COLUMN).isNotNull(), *[F.col(n).isNotNull() for n in notes]]
            side = verdicts.where(F.greatest(*on_side) if len(on_side) > 1 else on_side[0])
        for n in notes:  # rows with no note pass through the scrubber untouched
            side = scrub_column(side, n, config=self.notes)
        # Of the notes the write keeps (those of rows passing the rules), and of the trip ends it trims.
        counted_on_side = [F.count_if(passing & F.col(n).isNotNull()).alias(n) for n in notes]
        counted_on_side += [
            agg for i, n in enumerate(notes) for agg in redaction_sums(f"{n}_redactions", passing, prefix=f"{i}:")
        ]
        counted_on_side += [F.count_if(passing & F.col(anonymize.TRIP_END)).alias("_trip_ends")] if trims else []
        if counted_on_side:
            side = side.observe(kept, *counted_on_side)
        side = side.persist()
        side.count()
        counted, found = observed(tally), (observed(kept) if counted_on_side else {})
        n_expired = 0
        if expired is not None:
            n_expired = observed(aged).get("rows")
            if n_expired is None:  # no row within retention: the pass, dropped, observed nothing
                n_expired = read.where(~within_retention(*expired)).count()
        placeholders = {
            n: {t: int(found.get(f"{i}:{t}") or 0) for t in PLACEHOLDER_TYPES if found.get(f"{i}:{t}")}
            for i, n in enumerate(notes)
        }
        return FirstPass(
            side=side,
            rows_in=int(counted.get("rows", 0)),
            failed={e.name: int(counted[e.name]) for e in policy.expect if counted.get(e.name)},
            ids=[tuple(combo) for combo in observed(ids).get("ids", [])] if id_columns else [],
            id_columns=tuple(id_columns),
            noted={n: int(found.get(n, 0)) for n in notes},
            placeholders=placeholders,
            trip_ends=int(found.get("_trip_ends", 0)) if trims else 0,
            anonymized=anonymized,
            expired=int(n_expired),
        )

    def _walk_devices(
        self, verdicts: DataFrame, notes: list[str], trims: bool, anonymized: list[TablePolicy]
    ) -> DataFrame:
        """The side rows of a run that walks trips or gathers cells: one Arrow batch per device.

        The rows arrive on the device partitions, in the order the monotonic-time rule
        sorted them, so grouping them by device costs no shuffle and no sort; each
        device's rows then go to :class:`DeviceWalk` with the generalized values its cells
        group by. As Spark windows the same walk and cells took three sorts of the rows.

        A device's rows of one run are in one Python worker at once, with the walk's numpy
        arrays: 72 bytes a row of Arrow and 38 of the walk's arrays (measured on 2M rows of
        one vehicle), so a device that sent 10M frames since the last run needs over 1.1 GB
        there. Refine often enough that no device's batch comes near that.
        """
        from pyspark.sql.types import ArrayType, BooleanType, LongType, StructField, StructType

        kept = [*ROW_KEY, RULE_COLUMN, *notes]
        generalized_columns = [
            generalized(tp, c).alias(f"_c{i}_{kind}{j}")
            for i, tp in enumerate(anonymized)
            for kind, cs in (("q", tp.quasi_identifiers), ("s", tp.sensitive))
            for j, c in enumerate(cs)
        ]
        narrow = verdicts.select(*kept, *(["ts", "lat", "lon"] if trims else []), *generalized_columns)
        types = {f.name: f.dataType for f in narrow.schema.fields}
        out = [StructField(c, types[c]) for c in kept] + (
            [StructField(anonymize.TRIP_END, BooleanType())] if trims else []
        )
        for i, tp in enumerate(anonymized):
            out += [StructField(f"_c{i}_q{j}", types[f"_c{i}_q{j}"]) for j in range(len(tp.quasi_identifiers))]
            out += [StructField(f"_c{i}_rows", LongType())]
            out += [StructField(f"_c{i}_l{j}", ArrayType(types[f"_c{i}_s{j}"])) for j in range(len(tp.sensitive))]
        device_walk = DeviceWalk(
            tuple(notes),
            (self.cfg.refine.trip_trim_m, self.cfg.refine.trip_gap_s) if trims else None,
            tuple((len(tp.quasi_identifiers), len(tp.sensitive), tp.trim_trips) for tp in anonymized),
        )

        def walk(rows: Any) -> Any:  # a plain function: Spark reads a callable object's arity as (key, rows)
            return device_walk(rows)

        return narrow.groupBy("_device_id").applyInArrow(walk, StructType(out))

    # 1. read ------------------------------------------------------------------------------
    def _watermark(self, path: str) -> int:
        """The last bronze version ``path`` holds (-1: none)."""
        table = find_table(self.cfg, path)
        if table is None:
            return -1
        for commit in table.history(50):
            try:
                return int(json.loads(commit.get("userMetadata"))["bronze_version"])
            except (TypeError, ValueError, KeyError):
                continue
        return -1

    def _read_new(self, bronze: str, a: int, b: int) -> DataFrame:
        """Rows bronze versions ``a+1 .. b`` added; the first run reads the snapshot at ``b``."""
        from pyspark.errors import AnalysisException
        from pyspark.sql import functions as F

        if a < 0:
            # A first run needs no change feed (tables from before it was enabled have none
            # for their early versions): all rows count as of version b.
            snapshot = self.spark.read.format("delta").option("versionAsOf", b).load(bronze)
            return snapshot.withColumn(VERSION_COLUMN, F.lit(b).cast("long")).drop(
                *[c for c in BRONZE_ONLY if c in snapshot.columns]
            )

        try:
            changes = (
                self.spark.read.format("delta")
                .option("readChangeFeed", "true")
                .option("startingVersion", a + 1)
                .option("endingVersion", b)
                .load(bronze)
            )
        except AnalysisException as e:
            raise missing_change_feed(bronze, a, b, e) from e
        present = set(changes.columns)
        return (
            changes.where("_change_type = 'insert'")
            .withColumnRenamed("_commit_version", VERSION_COLUMN)
            .drop("_change_type", "_commit_timestamp", *[c for c in BRONZE_ONLY if c in present])
        )

    def _holds_window(self, path: str, a: int, b: int) -> bool:
        """Whether the table at ``path`` has rows of bronze versions ``a+1 .. b``."""
        import pyarrow.compute as pc

        table = find_table(self.cfg, path)
        if table is None:
            return False
        version = pc.field(VERSION_COLUMN)
        return table.to_pyarrow_dataset().count_rows(filter=(version > a) & (version <= b)) > 0

    # 2. transform --------------------------------------------------------------------------
    def _refine_output(
        self,
        good: DataFrame,
        first: FirstPass,
        o: Output,
        contract: DataContract,
        policy: PrivacyPolicy,
        key: Any,
        a: int,
        b: int,
        region: str,
    ) -> PrivacyReport:
        from pyspark.sql import functions as F

        tp, cfg = o.policy, self.cfg.refine
        report = PrivacyReport(
            o.name,
            o.path,
            contract.id,
            tp.level,
            policy.version,
            (a + 1, b),
            fields=self._describe(tp),
            residency_region=region,
        )
        df = good
        if tp.trim_trips:
            # The first pass walked the trips; the frames to trim leave the rows by key.
            report.trimmed_rows = first.trip_ends
            df = df.join(by_size(first.ends(), first.trip_ends), list(ROW_KEY), "left_anti")
        df = self._apply_fields(df, tp, first)
        for name, act in tp.fields.items():
            if act.action == "scrub_text":
                for kind, n in first.placeholders[name].items():
                    report.placeholders[kind] = report.placeholders.get(kind, 0) + n
        if tp.pseudonym_fields:
            df = pseudonymize(df, tp.pseudonym_fields, key, values=first.id_values(list(tp.pseudonym_fields)))
            report.key_ids = [key.id]
        device = [] if tp.device == "drop" else [F.col("_device_id").alias(DEVICE_COLUMN)]
        seq = [] if tp.level == "anonymized" else ["_seq"]
        keyed = [KEY_ID_COLUMN] if tp.pseudonym_fields else []
        out = df.select(*tp.output_columns, *device, *seq, *keyed, VERSION_COLUMN)
        if tp.level == "anonymized":
            # Decided on the cells the first pass gathered (which also give l-diversity).
            out, k = anonymize.enforce_k_anonymity(
                out, "_device_id", tp.quasi_identifiers, cfg.k, tp.sensitive, cells=first.cells(o.name)
            )
            report.k_required, report.k_achieved = cfg.k, k.k_achieved
            report.suppressed_rows, report.suppressed_values = k.suppressed_rows, k.suppressed_values
            if k.k_achieved is not None and k.k_achieved < cfg.k:
                raise PrivacyCheckError(
                    f"{o.name}: k-anonymity check found a class of {k.k_achieved} devices "
                    f"(< k = {cfg.k}); nothing was written"
                )
            report.l_diversity = k.l_diversity

        # 3. write --------------------------------------------------------------------------
        gov_level = (
            "anonymized"
            if tp.level == "anonymized"
            else ("statistical" if tp.level == "statistical" else "pseudonymized")
        )
        constraints = quality.check_constraints(
            policy.expect, [n for n, act in tp.fields.items() if act.action == "keep"]
        )
        properties = self._properties(contract, "silver", gov_level, policy.version, region, constraints)
        properties["delta.dataSkippingStatsColumns"] = ",".join(c for c in SKIPPING_COLUMNS if c in out.columns)
        report.delta_version, report.rows_out = self._replace(
            out,
            o.path,
            versions_window(a, b),
            {"bronze_version": b, "from": a + 1, "run": uuid.uuid4().hex[:12]},
            properties,
            empty=first.rows_in == 0,
        )
        logger.info("%s: bronze v%d..v%d -> %s (delta v%s)", contract.id, a + 1, b, o.path, report.delta_version)
        return report

    def _describe(self, tp: TablePolicy) -> dict[str, str]:
        """Field -> action for the report; a scrubbed note also names what found the names in it,
        so runs scrubbed by different recognizers can be told apart."""
        described = tp.describe()
        recognizer = self.notes.model if self.notes.use_model else "rules only"
        for name, act in tp.fields.items():
            if act.action == "scrub_text":
                described[name] = f"{described[name]} ({recognizer})"
        return described

    def _apply_fields(self, df: DataFrame, tp: TablePolicy, first: FirstPass) -> DataFrame:
        """``df`` with the table's generalizations applied and its notes replaced by their
        scrubbed text, joined back by key from the first pass."""
        for name, act in tp.fields.items():
            if act.action == "mesh" and MESH_COLUMN not in df.columns:
                df = df.withColumn(MESH_COLUMN, generalized(tp, MESH_COLUMN))
            elif act.action in ("time_bucket", "band", "clip"):
                df = df.withColumn(name, generalized(tp, name))
            elif act.action == "scrub_text":
                # The raw note is dropped; rows holding one get the scrubbed text back by key.
                scrubbed = by_size(first.notes(name).drop(f"{name}_redactions"), first.noted[name])
                df = df.drop(name).join(scrubbed, list(ROW_KEY), "left")
        return df

    # 3. write --------------------------------------------------------------------------------
    def _replace(
        self,
        df: DataFrame,
        path: str,
        window: str,
        meta: dict[str, Any],
        properties: Mapping[str, str],
        empty: bool = False,
    ) -> tuple[int, int]:
        """Replace the rows matching ``window`` by ``df``; returns (Delta version, rows written).

        A table that does not exist yet is created by this write with ``properties``: one
        commit, and no snapshot of an empty table to compute before the first rows land.
        ``empty``: ``df`` is known to hold no row. Delta commits no write that adds and
        removes no file, and the table would not record the bronze versions it now holds
        (the next run would read them again); a transaction marker makes it a commit.
        """
        from pyspark.errors import AnalysisException

        table = find_table(self.cfg, path)
        if table is None:
            try:
                create_table_as(self.spark, df, path, dict(properties), json.dumps(meta))
                return last_commit(self.cfg, path)
            except AnalysisException:
                if find_table(self.cfg, path) is None:
                    # No table, yet the path is taken: files of a first write that failed
                    # before committing. Nothing readable is there to lose.
                    logger.warning(
                        "%s holds files but no Delta table (a first write that failed?); creating the table over them",
                        path,
                    )
                    create_table_as(self.spark, df, path, dict(properties), json.dumps(meta), replace=True)
                    return last_commit(self.cfg, path)
                # another run created it meanwhile: replace into it like any later run
                table = find_table(self.cfg, path)
        before = table.version()
        writer = df.write.format("delta").mode("overwrite").option("replaceWhere", window)
        writer = writer.option("userMetadata", json.dumps(meta))
        if empty:
            writer = writer.option("txnAppId", "fieldloop-silver-empty").option("txnVersion", before + 1)
        writer.save(path)
        version, rows = last_commit(self.cfg, path)
        return (version, rows) if version > before else (before, 0)  # no commit: nothing written

    def _properties(
        self,
        contract: DataContract,
        layer: str,
        level: str,
        policy_version: int,
        region: str,
        constraints: Mapping[str, str],
    ) -> dict[str, str]:
        """A new table's properties: governance, change feed, retention and CHECK constraints."""
        gov = TableGovernance(
            contract.data_class,
            contract.id,
            region,
            appi_level=level,  # type: ignore[arg-type]
            tenant=contract.tenant,
            contract_version=contract.version,
            policy_version=str(policy_version),
        )
        return {
            **gov.to_delta_properties(),
            "fieldloop.layer": layer,
            "fieldloop.stream": contract.stream,
            "delta.enableChangeDataFeed": "true",
            # Expired rows are deleted at the contract's retention; VACUUM then removes their
            # files after this grace period, so nothing outlives retention by more than it.
            **file_retention_properties(contract),
            # CHECK constraints are these properties in Delta's log; set at creation they cost
            # nothing more, where an ALTER TABLE ADD CONSTRAINT per rule cost 1.3 s each, 6 s
            # for a vehicle table's first run.
            **{f"delta.constraints.{name.lower()}": expr for name, expr in constraints.items()},
        }
