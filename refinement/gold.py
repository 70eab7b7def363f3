"""Silver -> gold: training datasets per model task, fleet aggregates, DP aggregates.

Gold tables (``<lake>/gold/<name>``) are declared in the contracts' ``[[gold]]`` tables
(:mod:`fieldloop.datasets`). Each is rebuilt from its silver source at one pinned version
when that version moved, and written with a full overwrite (never an append), so a
repeated run over the same silver versions writes nothing and a forced one writes the
same rows. By kind:

* training datasets of ``vehicle-longitudinal``: one row per vehicle frame with a full
  window of frames laid out as the task's :class:`~fieldloop.datasets.FeatureLayout` says
  (signals oldest first, flattened, then the newest frame's perception counts) as
  ``features``, and as ``target`` the acceleration the driver chose ``horizon`` frames
  later. One table per contract, so a tenant's restricted data never shares a table with
  the consortium's.
* training datasets of ``plant-anomaly``: per sensor, windows of the last readings as
  ``features`` (z-scored per sensor), ``bad_quality`` as a weak label.
* ``hard-cases`` datasets of a task: the windows collection campaigns brought home (silver
  ``hard_cases_*``), laid out as the task's training rows: one row per frame of a window
  that has the layout's full history and its label ``horizon`` frames later inside the
  window, with ``features`` and the label exactly as the task's training rows have them (the
  frames' values are found by the window's own signal names), beside the window's trigger,
  the model version that met it, its outputs there, and ``frame``: the row's newest frame
  counted from the trigger's (0: the trigger frame; ``ts`` is the trigger's, the device
  sends no time per frame). The report counts the windows read, used, too short for any row,
  lacking a signal of the layout, or holding a missing value in every row, so they
  reconcile. Not a default training input of the task (:func:`fieldloop.datasets.training_tables`).
* ``telemetry-hourly``: per model and version and hour: records, devices, latency
  p50/p95, mean OOD score, mean disagreement, intervention rate (internal operations).
* ``telemetry-dp-daily``: differentially private daily figures over devices
  (interventions, mean OOD score): each device is the privacy unit and contributes one
  bounded value per day; every release is charged to the DP ledger, which refuses one
  over the month's budget and returns the recorded value for a release made before. A
  day is released once it closed (plus ``FIELDLOOP_REFINE_DP_LATENESS_MINUTES``); each
  release gets its share of the month's budget, so a month's releases always fit it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from fieldloop.catalog import find_table, last_commit, last_data_version, storage_options
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import DataContract
from fieldloop.datasets import FeatureLayout, GoldKind, GoldTable, gold_tables
from fieldloop.lineage import TableGovernance
from fieldloop.residency import ResidencyGuard
from fieldloop.retention import file_retention_properties
from fieldloop.spark import create_table_as

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from refinement.ledger import BudgetLedger

logger = logging.getLogger(__name__)

TABLES_AT_ONCE = 2  # gold tables built at once: small builds leave cores idle between jobs
MAX_INTERVENTIONS_PER_DAY = 20  # a device's daily count is clamped here (its contribution bound)
TOKYO = "Asia/Tokyo"  # the DP figures' days are Tokyo days
# metric -> (statistic, per-device column, clamping bounds), one release each per day
DP_METRICS = {
    "interventions": ("sum", "interventions", (0.0, float(MAX_INTERVENTIONS_PER_DAY))),
    "ood_mean": ("mean", "ood", (0.0, 1.0)),
}


@dataclass
class GoldReport:
    table: str
    path: str
    sources: dict[str, int]
    rows: int | None = None  # None: sources unchanged, nothing written
    delta_version: int | None = None
    dp: list[dict[str, Any]] = field(default_factory=list)  # the DP releases the table holds
    dp_held: list[str] = field(default_factory=list)  # days not released yet: still open
    dp_skipped: list[dict[str, str]] = field(default_factory=list)  # releases the ledger refused, with why
    notes: list[str] = field(default_factory=list)  # kept in the commit: `fieldloop tables` shows them
    due_at: datetime | None = None  # when what the build held back may be released: rebuilt then
    refused: str | None = None  # why the table may not be written here (residency); nothing was
    windows: dict[str, int] = field(default_factory=dict)  # hard cases: windows read, and what became of them


class GoldJob:
    """Builds every gold table whose silver sources changed since its last build."""

    def __init__(
        self,
        cfg: FieldloopConfig,
        spark: SparkSession,
        contracts: Mapping[str, DataContract],
        guard: ResidencyGuard,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cfg, self.spark, self.contracts, self.guard, self.clock = cfg, spark, contracts, guard, clock
        self.lake = cfg.lake.rstrip("/")

    def tables(self) -> list[GoldTable]:
        return gold_tables(self.contracts)

    def in_session(self, spark: SparkSession) -> GoldJob:
        """This job, running its Spark work in ``spark`` (another session of the same context)."""
        return GoldJob(self.cfg, spark, self.contracts, self.guard, self.clock)

    def path(self, name: str) -> str:
        return f"{self.lake}/gold/{name}"

    def run(self, only: Callable[[GoldTable], bool] = lambda t: True) -> list[GoldReport]:
        """Rebuild the gold tables whose source moved, or that held back something now due.

        Residency of each is checked first. Tables are built two at a time, each thread in a
        Spark session of its own (a build's commit metadata comes from its session's conf);
        reports come in the tables' order, tables not built yet (no silver source) left out.
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor

        local = threading.local()

        def build(table: GoldTable) -> GoldReport | None:
            if not hasattr(local, "job"):
                local.job = self.in_session(self.spark.newSession())
            return local.job.build(table)

        tables = [t for t in self.tables() if only(t)]
        with ThreadPoolExecutor(max_workers=TABLES_AT_ONCE, thread_name_prefix="gold") as pool:
            return [report for report in pool.map(build, tables) if report is not None]

    def build(self, table: GoldTable) -> GoldReport | None:
        """One table: refused, unchanged, or rebuilt from its source's newest data (None: no source yet)."""
        from fieldloop.errors import ResidencyError

        try:  # before anything of it is read or written
            region = self.guard.check(self.path(table.name), [table.contract]).region
        except ResidencyError as e:
            logger.warning("gold %s: skipped: %s", table.name, e)
            return GoldReport(table.name, self.path(table.name), {}, refused=str(e))
        source = f"{self.lake}/silver/{table.source}"
        if find_table(self.cfg, source) is None:
            return None
        # the newest commit that changed rows: silver's daily compaction and vacuum rebuild nothing
        version = last_data_version(self.cfg, source)
        report = GoldReport(table.name, self.path(table.name), {table.source: version})
        sources, due_at = self._last_build(report.path)
        if sources == report.sources and (due_at is None or self.clock() < due_at):
            return report
        df = self.spark.read.format("delta").option("versionAsOf", version).load(source)
        out = self._builder(table)(df, table, report)
        self._write(out, table, report, region)
        return report

    def _builder(self, table: GoldTable) -> Callable[[DataFrame, GoldTable, GoldReport], DataFrame]:
        if table.kind is GoldKind.TRAINING:
            return {"vehicle-longitudinal": self._vehicle_windows, "plant-anomaly": self._plant_windows}[table.task]
        if table.kind is GoldKind.HARD_CASES:
            return self._hard_cases
        return {
            GoldKind.TELEMETRY_HOURLY: self._telemetry_hourly,
            GoldKind.TELEMETRY_DP_DAILY: self._telemetry_dp_daily,
        }[table.kind]

    def _last_build(self, path: str) -> tuple[dict[str, int] | None, datetime | None]:
        """What the table was last built from, and when what it held back falls due (None: nothing).

        Read from the newest build's commit in the log (``deltalake``, no Spark job); upkeep's
        commits (retention, compaction, VACUUM) since then are passed over.
        """
        table = find_table(self.cfg, path)
        for commit in table.history(20) if table is not None else []:
            try:
                built = json.loads(commit.get("userMetadata") or "null")
                sources = {k: int(v) for k, v in built["sources"].items()}
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
            due = built.get("due_at")
            return sources, datetime.fromisoformat(due) if due else None
        return None, None

    def _write(self, df: DataFrame, table: GoldTable, report: GoldReport, region: str) -> None:
        gov = TableGovernance(
            table.contract.data_class,
            table.contract.id,
            region,
            appi_level="pseudonymized" if table.kind.has_task else "statistical",
            tenant=table.contract.tenant,
            contract_version=table.contract.version,
        )
        props = {
            **gov.to_delta_properties(),
            "fieldloop.layer": "gold",
            "fieldloop.stream": table.contract.stream,
            "fieldloop.sources": f"silver/{table.source}",
            # VACUUM removes earlier builds' files (and rows deleted at retention) after the grace
            **file_retention_properties(table.contract),
        }
        if table.task:
            props["fieldloop.task"] = table.task
        if table.kind is GoldKind.HARD_CASES:
            props["fieldloop.gold_kind"] = str(table.kind)
        # One commit that replaces the rows and carries the properties and what it was built
        # from, even when it holds no rows (an overwrite of no rows would commit nothing).
        meta = {"sources": report.sources, "notes": report.notes}
        if report.due_at is not None:
            meta["due_at"] = report.due_at.isoformat()
        create_table_as(self.spark, df, report.path, props, json.dumps(meta), replace=True)
        report.delta_version, report.rows = last_commit(self.cfg, report.path)
        logger.info(
            "gold %s: %d rows from %s (delta v%d)", table.name, report.rows, report.sources, report.delta_version
        )

    # builders ---------------------------------------------------------------------------------
    def _vehicle_windows(self, df: DataFrame, table: GoldTable, report: GoldReport) -> DataFrame:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        lay = table.layout
        order = Window.partitionBy(lay.device_column).orderBy("ts")
        past = order.rowsBetween(-(lay.window - 1), 0)
        signals = F.array(*[F.col(s).cast("double") for s in lay.signals])
        ahead = lay.horizon
        windowed = (
            df.withColumn("_signals", signals)
            .withColumn("_window", F.collect_list("_signals").over(past))
            .withColumn(lay.label_column, F.lead(lay.target_signal, ahead).over(order))
            .withColumn("_span_ms", F.unix_millis(F.lead("ts", ahead).over(order)) - F.unix_millis(F.col("ts")))
        )
        # no window across a gap in the data: the horizon's frames must be at most 1 s apart on average
        return windowed.where(
            (F.size("_window") == lay.window)
            & F.col(lay.label_column).isNotNull()
            & (F.col("_span_ms") <= ahead * 1000)
        ).select(
            lay.device_column,
            "ts",
            F.concat(F.flatten("_window"), F.array(*[F.col(e).cast("double") for e in lay.extras])).alias("features"),
            F.col(lay.label_column).cast("double").alias(lay.label_column),
            F.col("intervention"),
        )

    def _plant_windows(self, df: DataFrame, table: GoldTable, report: GoldReport) -> DataFrame:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        lay = table.layout
        per_sensor = Window.partitionBy(lay.device_column)
        order = per_sensor.orderBy("ts")
        z = (F.col("value") - F.avg("value").over(per_sensor)) / F.greatest(
            F.stddev_pop("value").over(per_sensor), F.lit(1e-9)
        )
        return (
            df.withColumn("_z", z)
            .withColumn("features", F.collect_list("_z").over(order.rowsBetween(-(lay.window - 1), 0)))
            .where(F.size("features") == lay.window)
            .select(
                "site",
                "line",
                "sensor_id",
                "unit",
                "ts",
                "features",
                (F.col("quality") == "BAD").alias(lay.label_column),
            )
        )

    def _hard_cases(self, df: DataFrame, table: GoldTable, report: GoldReport) -> DataFrame:
        """Each window's rows in the task's layout; the windows counted by what became of them."""
        lay = table.layout
        rows = hard_case_rows(df, lay)
        report.windows, missing_rows = window_fates(rows, lay)
        report.notes.append(hard_case_note(report.windows, lay, missing_rows))
        return rows.where("_complete").select(
            lay.device_column, *HARD_CASE_COLUMNS, "frame", "is_trigger", "features", lay.label_column
        )

    def _telemetry_hourly(self, df: DataFrame, table: GoldTable, report: GoldReport) -> DataFrame:
        from pyspark.sql import functions as F

        return df.groupBy("model_name", "model_version", F.date_trunc("hour", "ts").alias("hour")).agg(
            F.count(F.lit(1)).alias("records"),
            F.count_distinct("_device").alias("devices"),
            F.percentile_approx("latency_ms", 0.5).alias("latency_p50_ms"),
            F.percentile_approx("latency_ms", 0.95).alias("latency_p95_ms"),
            F.avg("ood_score").alias("ood_mean"),
            F.avg("disagreement").alias("disagreement_mean"),
            F.avg(F.col("intervention").cast("double")).alias("intervention_rate"),
        )

    def _telemetry_dp_daily(self, df: DataFrame, table: GoldTable, report: GoldReport) -> DataFrame:
        """Per closed day: DP interventions (per-device counts clamped to the bound) and DP mean OOD score."""
        from pyspark.sql import functions as F

        from refinement.ledger import Budget, BudgetLedger, DeltaLedgerStore

        # One row per device and day: its contribution is bounded before anything leaves Spark.
        per_device = (
            df.groupBy(F.to_date(F.from_utc_timestamp("ts", TOKYO)).alias("day"), "_device")
            .agg(
                F.least(F.sum(F.col("intervention").cast("int")), F.lit(MAX_INTERVENTIONS_PER_DAY)).alias(
                    "interventions"
                ),
                F.avg("ood_score").alias("ood"),
            )
            .collect()
        )
        ledger = BudgetLedger(
            DeltaLedgerStore(f"{self.lake}/_dp/ledger", self.guard, storage_options(self.cfg)),
            Budget(self.cfg.refine.dp_epsilon_per_month),
        )
        releases = release_daily(
            table.name,
            f"{table.contract.id}:device",
            [row.asDict() for row in per_device],
            ledger,
            now=self.clock(),
            lateness=timedelta(minutes=self.cfg.refine.dp_lateness_minutes),
        )
        report.dp = [{k: str(v) if k == "day" else v for k, v in row.items()} for row in releases.rows]
        report.dp_held, report.dp_skipped = releases.held, releases.skipped
        if releases.held:
            lateness = timedelta(minutes=self.cfg.refine.dp_lateness_minutes)
            report.due_at = min(day_closes(date.fromisoformat(d)) for d in releases.held) + lateness
        if releases.skipped:
            report.notes.append(
                f"{len(releases.skipped)} DP releases skipped: {releases.skipped[0]['reason'].split(';')[0]}"
            )
        schema = (
            "day DATE, metric STRING, value DOUBLE, epsilon DOUBLE, delta DOUBLE, mechanism STRING, "
            "scale DOUBLE, contribution_bound INT, lower DOUBLE, upper DOUBLE, privacy_unit STRING, "
            "ledger_unit STRING, period STRING, release_id STRING"
        )
        return self.spark.createDataFrame(releases.rows, schema)


# What becomes of a hard-case window: rows, or why none (they reconcile with the windows read).
HARD_CASE_FATES = ("used", "too_short", "unfit", "missing")
# A hard-case row's columns besides its place in the window, its features and its label.
HARD_CASE_COLUMNS = (
    "window_seq",  # the window's record number from its device: with the device, names the window
    "campaign_id",
    "fleet",
    "trigger_kind",
    "trigger",
    "model_name",
    "model_version",
    "output_names",
    "outputs",  # the model's raw outputs at the trigger
    "ood_score",
    "disagreement",
    "intervention",  # the safety monitor overruled the model at the trigger
    "reason",
    "ts",  # the trigger's
)


def hard_case_rows(df: DataFrame, lay: FeatureLayout) -> DataFrame:
    """Silver hard-case windows -> one row per window and candidate frame, marked.

    Each window gets ``_fate`` (``unfit``: its frames lack a name of ``lay.frame_names``;
    ``too_short``: :meth:`~fieldloop.datasets.FeatureLayout.window_rows` is empty; else null)
    and, if null, one row per frame of ``window_rows``, ``_i`` the row's newest frame (other
    windows keep one row, ``_i`` null). ``features`` are the ``window`` frames up to ``_i``
    (the layout's signals, flattened oldest first), then frame ``_i``'s extras; the label is
    the target signal ``horizon`` frames after ``_i``. ``_complete``: a row with no value
    missing (a device sends a non-finite value as null).
    """
    from pyspark.sql import functions as F

    dev = lay.device_column
    # each name's 1-based place in the window's own signal list (0: not there)
    at = {n: F.array_position("signals", n).cast("int") for n in lay.frame_names}
    fate = (
        F.when(F.exists(F.array(*at.values()), lambda p: p == 0), F.lit("unfit"))
        .when(F.size("frames") < lay.shortest_window, F.lit("too_short"))
        .otherwise(F.lit(None).cast("string"))
    )
    last = F.size("frames") - 1 - lay.horizon  # window_rows: the newest frames from window - 1 to here
    i = F.col("_i")

    def frame(k: Column) -> Column:  # 0-based frame k of the window
        return F.try_element_at("frames", k + 1)

    signals = [at[s] for s in lay.signals]
    history = F.slice("frames", i - (lay.window - 2), F.lit(lay.window))
    features = F.concat(
        F.flatten(F.transform(history, lambda f: F.array(*[F.try_element_at(f, p) for p in signals]))),
        F.array(*[F.try_element_at(frame(i), at[e]) for e in lay.extras]),
    )
    label = F.try_element_at(frame(i + lay.horizon), at[lay.target_signal])
    return (
        df.select(
            F.col(dev), F.col("_seq").alias("window_seq"), *HARD_CASE_COLUMNS[1:], "signals", "frames", "trigger_index"
        )
        .withColumn("_fate", fate)
        .withColumn("_i", F.explode_outer(F.when(F.col("_fate").isNull(), F.sequence(F.lit(lay.window - 1), last))))
        .withColumn("features", features)
        .withColumn(lay.label_column, label)
        .withColumn("frame", i - F.col("trigger_index"))
        .withColumn("is_trigger", i == F.col("trigger_index"))
        .withColumn(
            "_complete",
            F.coalesce(
                i.isNotNull() & ~F.exists("features", lambda x: x.isNull()) & F.col(lay.label_column).isNotNull(),
                F.lit(False),
            ),
        )
    )


def window_fates(rows: DataFrame, lay: FeatureLayout) -> tuple[dict[str, int], int]:
    """How many windows :func:`hard_case_rows` read, and of each fate (one Spark job); and how
    many rows were left out for a missing value."""
    from pyspark.sql import functions as F

    per_window = rows.groupBy(lay.device_column, "window_seq").agg(
        F.first("_fate").alias("_fate"),
        F.sum(F.col("_complete").cast("int")).alias("_rows"),
        F.sum((F.col("_i").isNotNull() & ~F.col("_complete")).cast("int")).alias("_missing"),
    )
    fate = F.coalesce(F.col("_fate"), F.when(F.col("_rows") > 0, "used").otherwise("missing"))
    counted = per_window.groupBy(fate.alias("fate")).agg(
        F.count(F.lit(1)).alias("windows"), F.sum("_missing").alias("missing")
    )
    by_fate = {r["fate"]: r for r in counted.collect()}
    windows = {k: by_fate[k]["windows"] if k in by_fate else 0 for k in HARD_CASE_FATES}
    return {"windows": sum(windows.values()), **windows}, sum(r["missing"] or 0 for r in by_fate.values())


def hard_case_note(windows: Mapping[str, int], lay: FeatureLayout, missing_rows: int) -> str:
    """The line ``fieldloop tables`` shows of a hard-case build: what became of the windows it read."""
    note = (
        f"{windows['windows']} hard-case windows: {windows['used']} used, {windows['too_short']} too short "
        f"(fewer than {lay.shortest_window} frames), {windows['unfit']} lacking a signal of the layout, "
        f"{windows['missing']} with a missing value in every row"
    )
    return note + (f"; {missing_rows} rows left out for a missing value" if missing_rows else "")


@dataclass
class DailyReleases:
    """What one run released of the daily DP figures, and what it did not."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (day, metric) released
    held: list[str] = field(default_factory=list)  # days (ISO) still open, or within the lateness allowance
    skipped: list[dict[str, str]] = field(default_factory=list)  # release_id and the ledger's refusal


def release_daily(
    table: str,
    unit: str,
    per_device: Sequence[Mapping[str, Any]],
    ledger: BudgetLedger,
    now: datetime,
    lateness: timedelta,
) -> DailyReleases:
    """The DP figures of every closed day in ``per_device`` rows (``day``, ``_device``, one column per metric).

    A day (Asia/Tokyo) is released once it closed and ``lateness`` passed, so its figure
    covers the whole day; an open day is held back and released by a later run. Each
    release spends its share of the month's budget (:class:`~refinement.dp.ReleasePlan`:
    the month's days times the metrics share it evenly), so a month's releases fit it. A
    release recorded before is published again with its recorded value and nothing is
    spent; one the ledger refuses is skipped with the ledger's reason and the run goes on.
    """
    from refinement.dp import DpQuery, ReleasePlan
    from refinement.errors import BudgetExceededError
    from refinement.ledger import month_of

    by_day: dict[date, list[Mapping[str, Any]]] = {}
    for row in per_device:
        by_day.setdefault(row["day"], []).append(row)
    plan = ReleasePlan(ledger.budget_for(unit).epsilon, len(DP_METRICS))
    out = DailyReleases()
    for day in sorted(by_day):
        if now < day_closes(day) + lateness:
            out.held.append(day.isoformat())
            continue
        period = month_of(_tokyo_noon(day))
        recorded = {e.release_id: e for e in ledger.entries(unit, period)}
        for metric, (statistic, column, bounds) in DP_METRICS.items():
            release_id = f"{table}/{day.isoformat()}/{metric}"
            earlier = recorded.get(release_id)
            query = DpQuery(
                statistic, earlier.epsilon if earlier else plan.epsilon(period), bounds=bounds, privacy_unit="device"
            )
            if earlier is None:
                release = query.release((r["_device"], float(r[column])) for r in by_day[day] if r[column] is not None)
                try:
                    earlier = ledger.spend(
                        unit,
                        period,
                        release.epsilon,
                        release.delta,
                        release_id,
                        f"gold {table}",
                        result=json.dumps(release.value),
                    )
                except BudgetExceededError as e:
                    logger.warning("gold %s: DP release %s skipped: %s", table, release_id, e)
                    out.skipped.append({"release_id": release_id, "reason": str(e)})
                    continue
            cal = query.calibration
            out.rows.append(
                {
                    "day": day,
                    "metric": metric,
                    "value": float(json.loads(earlier.result)),
                    "epsilon": earlier.epsilon,
                    "delta": earlier.delta,
                    "mechanism": query.mechanism,
                    "scale": cal.scale,
                    "contribution_bound": query.contribution_bound,
                    "lower": bounds[0],
                    "upper": bounds[1],
                    "privacy_unit": query.privacy_unit,
                    "ledger_unit": unit,
                    "period": period,
                    "release_id": release_id,
                }
            )
    return out


def day_closes(day: date) -> datetime:
    """When Tokyo day ``day`` ends: midnight at the start of the next day, Asia/Tokyo."""
    return datetime.combine(day + timedelta(days=1), time(0), ZoneInfo(TOKYO))


def _tokyo_noon(day: date) -> datetime:
    return datetime.combine(day, time(12), ZoneInfo(TOKYO))
