"""Bronze -> silver: quality-checked, pseudonymized or anonymized, one run per new bronze versions.

A run of one contract reads as three steps:

1. **read** the rows bronze commits ``a+1 .. b`` added (Delta Change Data Feed), where
   ``a`` is the last bronze version every output table holds (kept in each silver
   commit's ``userMetadata``) and ``b`` bronze's current version; a first run reads the
   snapshot at ``b``;
2. **transform**: mark each row with the first quality rule it fails (failures go to
   ``quarantine/<table>_quality`` with the rule; too many fail the run before anything is
   written); then per output table of the stream's policy: trim trips, generalize, key the
   pseudonyms, scrub free text, and for anonymized tables enforce k-anonymity;
3. **write** each output with ``replaceWhere`` on ``_bronze_version`` in ``(a, b]``: a run
   repeated over the same bronze versions replaces exactly what it wrote before, so
   retries and re-runs are idempotent, and a run with no new bronze versions writes
   nothing. A privacy report goes next to each table.

Every location passes the residency guard before the first read, so a run aimed outside
the allowed regions writes nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fieldloop.catalog import find_table, last_commit
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import DataContract
from fieldloop.lineage import TableGovernance
from fieldloop.residency import ResidencyGuard
from fieldloop.spark import create_table
from refinement import anonymize, quality
from refinement.errors import PrivacyCheckError, RefinementError
from refinement.keys import KeyRing
from refinement.policy import MESH_COLUMN, PrivacyPolicy, TablePolicy
from refinement.pseudonym import KEY_ID_COLUMN, pseudonymize
from refinement.report import PrivacyReport, write_report
from refinement.text import ScrubberConfig, redaction_totals, scrub_column

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

VERSION_COLUMN = "_bronze_version"
DEVICE_COLUMN = "_device"
BRONZE_ONLY = ["_headers", "_kafka_topic", "_kafka_partition", "_kafka_offset", "_kafka_timestamp",
               "_ingested_at", "_schema_version"]


def versions_window(a: int, b: int) -> str:
    """The rows of bronze versions ``a+1 .. b``: what one run reads, writes and replaces."""
    return f"{VERSION_COLUMN} > {a} AND {VERSION_COLUMN} <= {b}"


def vacuum_grace_days(contract: DataContract) -> int:
    """Days VACUUM keeps files removed from a table: a week, or less for short retention."""
    return max(1, min(7, contract.retention_days // 4))


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
        self._transient: list[DataFrame] = []  # persisted inside one output's plan, released after its write

    def outputs(self, contract_id: str) -> list[Output]:
        policy = self.policies[contract_id]
        return [Output(name, tp, f"{self.lake}/silver/{name}") for name, tp in policy.output.items()]

    def bronze_path(self, contract: DataContract) -> str:
        return f"{self.lake}/bronze/{contract.table}"

    def quarantine_path(self, contract: DataContract) -> str:
        return f"{self.lake}/quarantine/{contract.table}_quality"

    # run ---------------------------------------------------------------------------------
    def run(self, contract_id: str, until: int | None = None, since: int | None = None) -> list[PrivacyReport]:
        """Refine what bronze gained since the last run, up to bronze version ``until`` (default: latest).

        ``since`` overrides the last run's watermark: bronze versions after it are refined
        again and replace what earlier runs wrote for them (after a policy fix, say).

        Raises:
            ResidencyError: an output location is outside the allowed regions (nothing written).
            QualityError: too many rows fail quality rules (nothing written).
            KeyRingError: the tenant has no active pseudonym key (nothing written).
        """
        contract, policy = self.contracts[contract_id], self.policies[contract_id]
        outputs = self.outputs(contract_id)
        bronze, quarantine = self.bronze_path(contract), self.quarantine_path(contract)
        regions = {p: self.guard.check(p).region for p in [*(o.path for o in outputs), quarantine]}
        key = self.keys.active(contract.tenant) if any(o.policy.pseudonym_fields for o in outputs) else None

        def empty(o: Output) -> PrivacyReport:
            return PrivacyReport(o.name, o.path, contract_id, o.policy.level, policy.version, None,
                                 fields=self._describe(o.policy), residency_region=regions[o.path])

        # Table metadata is read from the log with ``deltalake``: through Spark, each look
        # at a table's history rebuilt its snapshot (0.1-0.3 s apiece, several per run).
        bronze_table = find_table(self.cfg, bronze)
        if bronze_table is None:
            logger.info("%s: no bronze table yet at %s; nothing to refine", contract_id, bronze)
            return [empty(o) for o in outputs]
        latest = bronze_table.version()
        b = latest if until is None else min(until, latest)
        a = min(self._watermark(o.path) for o in outputs) if since is None else since
        if a >= b:
            logger.info("%s: silver already holds bronze up to v%d; nothing to do", contract_id, b)
            return [empty(o) for o in outputs]

        rows = self._read_new(bronze, a, b)
        marked = quality.mark(rows, policy.expect).persist()
        try:
            counts = {r["_rule"]: r["n"] for r in marked.groupBy("_rule").count().withColumnRenamed("count", "n").collect()}
            rows_in = sum(counts.values())
            failed = {rule: n for rule, n in counts.items() if rule is not None}
            quality.gate(rows_in, failed, self.cfg.refine.max_failure_rate, contract_id)
            window = versions_window(a, b)
            # Without failures the write is only needed to clear what an earlier run of the
            # same versions quarantined; skipped when there is none (a Spark job and a commit:
            # 1.6 s measured on a 200k-row run).
            if failed or self._holds_window(quarantine, a, b):
                bad = marked.where("_rule IS NOT NULL").withColumnRenamed("_rule", "reason")
                self._ensure_table(quarantine, bad.schema, contract, "quarantine", "raw", policy.version,
                                   regions[quarantine], {})
                self._replace(bad, quarantine, window, {"bronze_version": b, "from": a + 1})
            good = marked.where("_rule IS NULL").drop("_rule")
            reports = []
            for o in outputs:
                report = self._refine_output(good, o, contract, policy, key, a, b, regions[o.path])
                report.rows_in, report.quarantined = rows_in, failed
                write_report(self.spark, report)
                reports.append(report)
            return reports
        finally:
            marked.unpersist()

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
                *[c for c in BRONZE_ONLY if c in snapshot.columns])

        try:
            changes = (
                self.spark.read.format("delta").option("readChangeFeed", "true")
                .option("startingVersion", a + 1).option("endingVersion", b).load(bronze)
            )
            changes.limit(0).count()  # resolves the versions now, so a missing change feed fails here, with our message
        except AnalysisException as e:
            raise RefinementError(
                f"{bronze} has no change data feed for versions {a + 1}..{b} ({e.getCondition()}); it was created "
                "before fieldloop enabled it. Re-ingest into a new bronze table, or ALTER it with "
                "delta.enableChangeDataFeed=true and refine from a later version") from e
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
    def _refine_output(self, good: DataFrame, o: Output, contract: DataContract, policy: PrivacyPolicy,
                       key: Any, a: int, b: int, region: str) -> PrivacyReport:
        from pyspark.sql import functions as F

        tp, cfg = o.policy, self.cfg.refine
        report = PrivacyReport(o.name, o.path, contract.id, tp.level, policy.version, (a + 1, b),
                               fields=self._describe(tp), residency_region=region)
        df = good
        if tp.trim_trips:
            before = df.count()  # the persisted good rows: no recomputation
            df = anonymize.trim_trips(df, "_device_id", "ts", "lat", "lon", cfg.trip_trim_m, cfg.trip_gap_s).persist()
            self._transient.append(df)
            report.trimmed_rows = before - df.count()
        if tp.pseudonym_fields:  # before the text scrubber, so its distinct scan reads the persisted rows
            df = pseudonymize(df, tp.pseudonym_fields, key)
            report.key_ids = [key.id]
        df, report.placeholders = self._apply_fields(df, tp)
        device = [] if tp.device == "drop" else [F.col("_device_id").alias(DEVICE_COLUMN)]
        seq = [] if tp.level == "anonymized" else ["_seq"]
        keyed = [KEY_ID_COLUMN] if tp.pseudonym_fields else []
        # The raw device id stays (as _device_id) only while k-anonymity needs to count devices.
        counting = ["_device_id"] if tp.level == "anonymized" else []
        out = df.select(*tp.output_columns, *device, *seq, *keyed, VERSION_COLUMN, *counting)
        if tp.level == "anonymized":
            out = out.persist()
            self._transient.append(out)
            out, k = anonymize.enforce_k_anonymity(out, "_device_id", tp.quasi_identifiers, cfg.k)
            out = out.drop("_device_id")
            report.k_required, report.k_achieved = cfg.k, k.k_achieved
            report.suppressed_rows, report.suppressed_values = k.suppressed_rows, k.suppressed_values
            if k.k_achieved is not None and k.k_achieved < cfg.k:
                raise PrivacyCheckError(f"{o.name}: k-anonymity check found a class of {k.k_achieved} devices "
                                        f"(< k = {cfg.k}); nothing was written")
            report.l_diversity = anonymize.l_diversity(out, tp.quasi_identifiers, tp.sensitive)

        # 3. write --------------------------------------------------------------------------
        gov_level = "anonymized" if tp.level == "anonymized" else ("statistical" if tp.level == "statistical" else "pseudonymized")
        constraints = quality.check_constraints(policy.expect, [n for n, act in tp.fields.items() if act.action == "keep"])
        self._ensure_table(o.path, out.schema, contract, "silver", gov_level, policy.version, region, constraints)
        report.delta_version, report.rows_out = self._replace(
            out, o.path, versions_window(a, b),
            {"bronze_version": b, "from": a + 1, "run": uuid.uuid4().hex[:12]})
        for frame in self._transient:
            frame.unpersist()
        self._transient.clear()
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

    def _apply_fields(self, df: DataFrame, tp: TablePolicy) -> tuple[DataFrame, dict[str, int]]:
        """``df`` with the table's generalizations and scrubbing applied, and the placeholders put in notes."""
        from pyspark.sql import functions as F

        placeholders: dict[str, int] = {}
        for name, act in tp.fields.items():
            if act.action == "mesh" and MESH_COLUMN not in df.columns:
                lat, lon = [n for n, a in tp.fields.items() if a.action == "mesh"]
                df = df.withColumn(MESH_COLUMN, anonymize.mesh_code(F.col(lat), F.col(lon), int(act.level or 3)))
            elif act.action == "time_bucket":
                df = df.withColumn(name, anonymize.time_bucket(F.col(name), int(act.minutes or 1)))
            elif act.action == "band":
                df = df.withColumn(name, anonymize.band(F.col(name), float(act.width or 1)))
            elif act.action == "clip":
                df = df.withColumn(name, F.least(F.greatest(F.col(name), F.lit(act.min)), F.lit(act.max)))
            elif act.action == "scrub_text":
                # Notes are rare: only rows holding one make the trip through Python, once
                # (persisted: counting the placeholders runs the scrubber, the write reuses its output).
                noted = scrub_column(df.where(F.col(name).isNotNull()), name, config=self.notes).persist()
                self._transient.append(noted)
                for kind, n in redaction_totals(noted, f"{name}_redactions").items():
                    if n:
                        placeholders[kind] = placeholders.get(kind, 0) + n
                df = df.where(F.col(name).isNull()).unionByName(noted.drop(f"{name}_redactions"))
        return df, placeholders

    # 3. write --------------------------------------------------------------------------------
    def _replace(self, df: DataFrame, path: str, window: str, meta: dict[str, Any]) -> tuple[int, int]:
        """Replace the rows matching ``window`` by ``df``; returns (Delta version, rows written)."""
        (df.write.format("delta").mode("overwrite").option("replaceWhere", window)
         .option("userMetadata", json.dumps(meta)).save(path))
        return last_commit(self.cfg, path)

    def _ensure_table(self, path: str, schema: Any, contract: DataContract, layer: str, level: str,
                      policy_version: int, region: str, constraints: Mapping[str, str]) -> None:
        """Create the table with its governance properties, change feed and retention on first use."""
        if find_table(self.cfg, path) is not None:
            return
        gov = TableGovernance(contract.data_class, contract.id, region, appi_level=level,  # type: ignore[arg-type]
                              tenant=contract.tenant, contract_version=contract.version,
                              policy_version=str(policy_version))
        props = {
            **gov.to_delta_properties(), "fieldloop.layer": layer, "fieldloop.stream": contract.stream,
            "delta.enableChangeDataFeed": "true",
            # Expired rows are deleted at the contract's retention; VACUUM then removes their
            # files after this grace period, so nothing outlives retention by more than it.
            "delta.deletedFileRetentionDuration": f"interval {vacuum_grace_days(contract)} days",
            # CHECK constraints are these properties in Delta's log; set at creation (the table
            # is empty, nothing to validate) they cost one commit, where an ALTER TABLE ADD
            # CONSTRAINT per rule cost 1.3 s each, 6 s for a vehicle table's first run.
            **{f"delta.constraints.{name.lower()}": expr for name, expr in constraints.items()},
        }
        create_table(self.spark, path, schema, props)
