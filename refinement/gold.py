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
* ``telemetry-hourly``: per model and version and hour: records, devices, latency
  p50/p95, mean OOD score, mean disagreement, intervention rate (internal operations).
* ``telemetry-dp-daily``: differentially private daily figures over devices
  (interventions, mean OOD score): each device is the privacy unit and contributes one
  bounded value per day; every release is charged to the DP ledger, which refuses one
  over the month's budget and returns the recorded value for a release made before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fieldloop.catalog import last_commit, storage_options
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import DataContract
from fieldloop.datasets import GoldKind, GoldTable, gold_tables
from fieldloop.lineage import TableGovernance
from fieldloop.residency import ResidencyGuard
from fieldloop.spark import create_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

DP_EPSILON = 0.05  # per release; two releases a day fit a month in the default budget of 3
MAX_INTERVENTIONS_PER_DAY = 20  # a device's daily count is clamped here (its contribution bound)


@dataclass
class GoldReport:
    table: str
    path: str
    sources: dict[str, int]
    rows: int | None = None  # None: sources unchanged, nothing written
    delta_version: int | None = None
    dp: list[dict[str, Any]] = field(default_factory=list)


class GoldJob:
    """Builds every gold table whose silver sources changed since its last build."""

    def __init__(
        self, cfg: FieldloopConfig, spark: SparkSession, contracts: Mapping[str, DataContract], guard: ResidencyGuard
    ) -> None:
        self.cfg, self.spark, self.contracts, self.guard = cfg, spark, contracts, guard
        self.lake = cfg.lake.rstrip("/")

    def tables(self) -> list[GoldTable]:
        return gold_tables(self.contracts)

    def path(self, name: str) -> str:
        return f"{self.lake}/gold/{name}"

    def run(self, only: Callable[[GoldTable], bool] = lambda t: True) -> list[GoldReport]:
        """Rebuild the gold tables whose source moved; residency of each is checked first."""
        from delta.tables import DeltaTable

        tables = [t for t in self.tables() if only(t)]
        regions = {t.name: self.guard.check(self.path(t.name)).region for t in tables}
        reports = []
        for table in tables:
            source = f"{self.lake}/silver/{table.source}"
            if not DeltaTable.isDeltaTable(self.spark, source):
                continue
            version = int(DeltaTable.forPath(self.spark, source).history(1).first()["version"])
            report = GoldReport(table.name, self.path(table.name), {table.source: version})
            if self._built_from(report.path) == report.sources:
                reports.append(report)
                continue
            df = self.spark.read.format("delta").option("versionAsOf", version).load(source)
            out = self._builder(table)(df, table, report)
            self._write(out, table, report, regions[table.name])
            reports.append(report)
        return reports

    def _builder(self, table: GoldTable) -> Callable[[DataFrame, GoldTable, GoldReport], DataFrame]:
        if table.kind is GoldKind.TRAINING:
            return {"vehicle-longitudinal": self._vehicle_windows, "plant-anomaly": self._plant_windows}[table.task]
        return {
            GoldKind.TELEMETRY_HOURLY: self._telemetry_hourly,
            GoldKind.TELEMETRY_DP_DAILY: self._telemetry_dp_daily,
        }[table.kind]

    def _built_from(self, path: str) -> dict[str, int] | None:
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(self.spark, path):
            return None
        meta = DeltaTable.forPath(self.spark, path).history(1).first()["userMetadata"]
        try:
            return {k: int(v) for k, v in json.loads(meta)["sources"].items()}
        except (TypeError, ValueError, KeyError):
            return None

    def _write(self, df: DataFrame, table: GoldTable, report: GoldReport, region: str) -> None:
        gov = TableGovernance(
            table.contract.data_class,
            table.contract.id,
            region,
            appi_level="pseudonymized" if table.kind is GoldKind.TRAINING else "statistical",
            tenant=table.contract.tenant,
            contract_version=table.contract.version,
        )
        props = {
            **gov.to_delta_properties(),
            "fieldloop.layer": "gold",
            "fieldloop.stream": table.contract.stream,
            "fieldloop.sources": f"silver/{table.source}",
        }
        if table.task:
            props["fieldloop.task"] = table.task
        create_table(self.spark, report.path, df.schema, props)
        meta = {"sources": report.sources}
        (
            df.write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .option("userMetadata", json.dumps(meta))
            .save(report.path)
        )
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
        """Per day: DP interventions (sum of per-device counts clamped to the bound) and DP mean OOD score."""
        from pyspark.sql import functions as F

        from refinement.dp import DpQuery
        from refinement.ledger import Budget, BudgetLedger, DeltaLedgerStore, month_of

        # One row per device and day: its contribution is bounded before anything leaves Spark.
        per_device = (
            df.groupBy(F.to_date(F.from_utc_timestamp("ts", "Asia/Tokyo")).alias("day"), "_device")
            .agg(
                F.least(F.sum(F.col("intervention").cast("int")), F.lit(MAX_INTERVENTIONS_PER_DAY)).alias(
                    "interventions"
                ),
                F.avg("ood_score").alias("ood"),
            )
            .collect()
        )
        by_day: dict[Any, list[Any]] = {}
        for row in per_device:
            by_day.setdefault(row["day"], []).append(row)
        ledger = BudgetLedger(
            DeltaLedgerStore(f"{self.lake}/_dp/ledger", self.guard, storage_options(self.cfg)),
            Budget(self.cfg.refine.dp_epsilon_per_month),
        )
        queries = {
            "interventions": DpQuery(
                "sum", DP_EPSILON, bounds=(0.0, float(MAX_INTERVENTIONS_PER_DAY)), privacy_unit="device"
            ),
            "ood_mean": DpQuery("mean", DP_EPSILON, bounds=(0.0, 1.0), privacy_unit="device"),
        }
        out = []
        unit = f"{table.contract.id}:device"
        for day in sorted(by_day):
            for metric, query in queries.items():
                column = "interventions" if metric == "interventions" else "ood"
                release = query.release((r["_device"], float(r[column])) for r in by_day[day] if r[column] is not None)
                release_id = f"{table.name}/{day.isoformat()}/{metric}"
                period = month_of(_tokyo_noon(day))
                entry = ledger.spend(
                    unit,
                    period,
                    release.epsilon,
                    release.delta,
                    release_id,
                    f"gold {table.name}",
                    result=json.dumps(release.value),
                )
                value = json.loads(entry.result) if entry.result is not None else release.value
                row = {
                    "day": day,
                    "metric": metric,
                    "value": float(value),
                    "epsilon": release.epsilon,
                    "delta": release.delta,
                    "mechanism": release.mechanism,
                    "scale": release.scale,
                    "contribution_bound": release.contribution_bound,
                    "lower": release.bounds[0] if release.bounds else None,
                    "upper": release.bounds[1] if release.bounds else None,
                    "privacy_unit": release.privacy_unit,
                    "ledger_unit": unit,
                    "period": period,
                    "release_id": release_id,
                }
                out.append(row)
                report.dp.append({k: str(v) if k == "day" else v for k, v in row.items()})
        schema = (
            "day DATE, metric STRING, value DOUBLE, epsilon DOUBLE, delta DOUBLE, mechanism STRING, "
            "scale DOUBLE, contribution_bound INT, lower DOUBLE, upper DOUBLE, privacy_unit STRING, "
            "ledger_unit STRING, period STRING, release_id STRING"
        )
        return self.spark.createDataFrame(out, schema)


def _tokyo_noon(day: Any) -> Any:
    from datetime import datetime, time
    from zoneinfo import ZoneInfo

    return datetime.combine(day, time(12), ZoneInfo("Asia/Tokyo"))
