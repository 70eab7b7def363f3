"""Silver -> gold: training datasets per model task, fleet aggregates, DP aggregates.

Gold tables (``<lake>/gold/<name>``), each rebuilt from its silver source at one pinned
version when that version moved, and written with a full overwrite (never an append), so
a repeated run over the same silver versions writes nothing and a forced one writes the
same rows:

* ``vehicle_longitudinal_<scope>``: one row per vehicle frame with a full window of the
  last ``WINDOW`` frames (speed, acceleration, brake, steering, yaw rate; oldest first,
  flattened) plus the current perception counts as ``features``, and as ``target`` the
  acceleration the driver chose ``HORIZON`` frames later. One table per vehicle contract,
  so a tenant's restricted data never shares a table with the consortium's.
* ``plant_anomaly_<tenant>``: per sensor, windows of the last ``WINDOW`` readings as
  ``features`` (z-scored per sensor), ``bad_quality`` as a weak label.
* ``fleet_telemetry_hourly``: per model and version and hour: records, devices, latency
  p50/p95, mean OOD score, mean disagreement, intervention rate (internal operations).
* ``fleet_telemetry_dp_daily``: differentially private daily figures over devices
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
from fieldloop.lineage import TableGovernance
from fieldloop.residency import ResidencyGuard
from fieldloop.spark import create_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

WINDOW = 10  # frames (2 s at 5 Hz) or readings
HORIZON = 5  # frames ahead the target is taken from (1 s at 5 Hz)
VEHICLE_SIGNALS = ("speed_mps", "accel_mps2", "brake", "steering_deg", "yaw_rate_dps")
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


@dataclass(frozen=True)
class GoldSpec:
    name: str
    contract: DataContract
    sources: tuple[str, ...]  # silver table names
    build: Callable[[GoldJob, dict[str, DataFrame], GoldSpec, GoldReport], DataFrame]
    task: str | None = None  # the model task this dataset is for


class GoldJob:
    """Builds every gold table whose silver sources changed since its last build."""

    def __init__(
        self, cfg: FieldloopConfig, spark: SparkSession, contracts: Mapping[str, DataContract], guard: ResidencyGuard
    ) -> None:
        self.cfg, self.spark, self.contracts, self.guard = cfg, spark, contracts, guard
        self.lake = cfg.lake.rstrip("/")

    def specs(self) -> list[GoldSpec]:
        return gold_specs(self.contracts)

    def path(self, name: str) -> str:
        return f"{self.lake}/gold/{name}"

    def run(self, only: Callable[[GoldSpec], bool] = lambda s: True) -> list[GoldReport]:
        """Rebuild the gold tables whose sources moved; residency of each is checked first."""
        from delta.tables import DeltaTable

        specs = [s for s in self.specs() if only(s)]
        regions = {s.name: self.guard.check(self.path(s.name)).region for s in specs}
        reports = []
        for spec in specs:
            paths = {src: f"{self.lake}/silver/{src}" for src in spec.sources}
            if not all(DeltaTable.isDeltaTable(self.spark, p) for p in paths.values()):
                continue
            versions = {
                src: int(DeltaTable.forPath(self.spark, p).history(1).first()["version"]) for src, p in paths.items()
            }
            report = GoldReport(spec.name, self.path(spec.name), versions)
            if self._built_from(report.path) == versions:
                reports.append(report)
                continue
            frames = {
                src: self.spark.read.format("delta").option("versionAsOf", v).load(paths[src])
                for src, v in versions.items()
            }
            out = spec.build(self, frames, spec, report)
            self._write(out, spec, report, regions[spec.name])
            reports.append(report)
        return reports

    def _built_from(self, path: str) -> dict[str, int] | None:
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(self.spark, path):
            return None
        meta = DeltaTable.forPath(self.spark, path).history(1).first()["userMetadata"]
        try:
            return {k: int(v) for k, v in json.loads(meta)["sources"].items()}
        except (TypeError, ValueError, KeyError):
            return None

    def _write(self, df: DataFrame, spec: GoldSpec, report: GoldReport, region: str) -> None:
        gov = TableGovernance(
            spec.contract.data_class,
            spec.contract.id,
            region,
            appi_level="statistical" if "dp" in spec.name or "hourly" in spec.name else "pseudonymized",
            tenant=spec.contract.tenant,
            contract_version=spec.contract.version,
        )
        props = {
            **gov.to_delta_properties(),
            "fieldloop.layer": "gold",
            "fieldloop.stream": spec.contract.stream,
            "fieldloop.sources": ",".join(f"silver/{s}" for s in spec.sources),
        }
        if spec.task:
            props["fieldloop.task"] = spec.task
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
            "gold %s: %d rows from %s (delta v%d)", spec.name, report.rows, report.sources, report.delta_version
        )

    # builders ---------------------------------------------------------------------------------
    def _vehicle_windows(self, frames: dict[str, DataFrame], spec: GoldSpec, report: GoldReport) -> DataFrame:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        df = next(iter(frames.values()))
        order = Window.partitionBy("_device").orderBy("ts")
        past = order.rowsBetween(-(WINDOW - 1), 0)
        signals = F.array(*[F.col(s).cast("double") for s in VEHICLE_SIGNALS])
        windowed = (
            df.withColumn("_signals", signals)
            .withColumn("_window", F.collect_list("_signals").over(past))
            .withColumn("target", F.lead("accel_mps2", HORIZON).over(order))
            .withColumn("_span_ms", F.unix_millis(F.lead("ts", HORIZON).over(order)) - F.unix_millis(F.col("ts")))
        )
        return windowed.where(
            (F.size("_window") == WINDOW) & F.col("target").isNotNull() & (F.col("_span_ms") <= HORIZON * 1000)
        ).select(  # no window across a gap in the data
            "_device",
            "ts",
            F.concat(
                F.flatten("_window"),
                F.array(*[F.col(f"perception.{p}").cast("double") for p in ("vehicles", "pedestrians", "cyclists")]),
            ).alias("features"),
            F.col("target").cast("double").alias("target"),
            F.col("intervention"),
        )

    def _plant_windows(self, frames: dict[str, DataFrame], spec: GoldSpec, report: GoldReport) -> DataFrame:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        df = next(iter(frames.values()))
        per_sensor = Window.partitionBy("sensor_id")
        order = per_sensor.orderBy("ts")
        z = (F.col("value") - F.avg("value").over(per_sensor)) / F.greatest(
            F.stddev_pop("value").over(per_sensor), F.lit(1e-9)
        )
        return (
            df.withColumn("_z", z)
            .withColumn("features", F.collect_list("_z").over(order.rowsBetween(-(WINDOW - 1), 0)))
            .where(F.size("features") == WINDOW)
            .select(
                "site", "line", "sensor_id", "unit", "ts", "features", (F.col("quality") == "BAD").alias("bad_quality")
            )
        )

    def _telemetry_hourly(self, frames: dict[str, DataFrame], spec: GoldSpec, report: GoldReport) -> DataFrame:
        from pyspark.sql import functions as F

        df = next(iter(frames.values()))
        return df.groupBy("model_name", "model_version", F.date_trunc("hour", "ts").alias("hour")).agg(
            F.count(F.lit(1)).alias("records"),
            F.count_distinct("_device").alias("devices"),
            F.percentile_approx("latency_ms", 0.5).alias("latency_p50_ms"),
            F.percentile_approx("latency_ms", 0.95).alias("latency_p95_ms"),
            F.avg("ood_score").alias("ood_mean"),
            F.avg("disagreement").alias("disagreement_mean"),
            F.avg(F.col("intervention").cast("double")).alias("intervention_rate"),
        )

    def _telemetry_dp_daily(self, frames: dict[str, DataFrame], spec: GoldSpec, report: GoldReport) -> DataFrame:
        """Per day: DP interventions (sum of per-device counts clamped to the bound) and DP mean OOD score."""
        from pyspark.sql import functions as F

        from refinement.dp import DpQuery
        from refinement.ledger import Budget, BudgetLedger, DeltaLedgerStore, month_of

        df = next(iter(frames.values()))
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
        unit = f"{spec.contract.id}:device"
        for day in sorted(by_day):
            for metric, query in queries.items():
                column = "interventions" if metric == "interventions" else "ood"
                release = query.release((r["_device"], float(r[column])) for r in by_day[day] if r[column] is not None)
                release_id = f"{spec.name}/{day.isoformat()}/{metric}"
                period = month_of(_tokyo_noon(day))
                entry = ledger.spend(
                    unit,
                    period,
                    release.epsilon,
                    release.delta,
                    release_id,
                    f"gold {spec.name}",
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


def gold_specs(contracts: Mapping[str, DataContract]) -> list[GoldSpec]:
    """Every gold table the contracts give rise to (no Spark needed: DAG files read this)."""
    c = contracts
    specs = [
        GoldSpec(
            f"vehicle_longitudinal_{cid.removeprefix('vehicle-frames-').replace('-', '_')}",
            c[cid],
            (c[cid].table,),
            GoldJob._vehicle_windows,
            "vehicle-longitudinal",
        )
        for cid in ("vehicle-frames-public", "vehicle-frames-acme-mobility")
        if cid in c
    ]
    if "plant-sensors-acme-steel" in c:
        specs.append(
            GoldSpec(
                "plant_anomaly_acme_steel",
                c["plant-sensors-acme-steel"],
                ("plant_sensors_acme_steel",),
                GoldJob._plant_windows,
                "plant-anomaly",
            )
        )
    if "fleet-telemetry" in c:
        specs.append(
            GoldSpec("fleet_telemetry_hourly", c["fleet-telemetry"], ("fleet_telemetry",), GoldJob._telemetry_hourly)
        )
        specs.append(
            GoldSpec(
                "fleet_telemetry_dp_daily", c["fleet-telemetry"], ("fleet_telemetry",), GoldJob._telemetry_dp_daily
            )
        )
    return specs


def _tokyo_noon(day: Any) -> Any:
    from datetime import datetime, time
    from zoneinfo import ZoneInfo

    return datetime.combine(day, time(12), ZoneInfo("Asia/Tokyo"))
