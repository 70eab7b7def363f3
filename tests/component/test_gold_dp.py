"""The daily DP release of fleet telemetry over a whole month, with the clock injected.

Every refine run of a 31-day month succeeds and the ledger never exceeds the monthly
budget; a day is released only once it closed (plus the lateness allowance), so its figure
covers the whole day; a release the ledger refuses is skipped with its reason while the
rest of the run goes on.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fieldloop.catalog import list_tables
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import load_contracts
from fieldloop.datasets import GoldKind
from fieldloop.residency import ResidencyGuard
from fieldloop.spark import create_table
from refinement.gold import GoldJob
from refinement.ledger import Budget, BudgetLedger, DeltaLedgerStore

JST = ZoneInfo("Asia/Tokyo")
SCHEMA = (
    "_device STRING, ts TIMESTAMP, model_name STRING, model_version STRING, latency_ms DOUBLE, "
    "ood_score DOUBLE, disagreement DOUBLE, intervention BOOLEAN"
)
UNIT = "fleet-telemetry:device"


def day_rows(day: date, devices: int = 4) -> list[tuple]:
    """Telemetry of ``devices`` devices at three times of one Tokyo day."""
    rows = []
    for d in range(devices):
        for hour in (1, 12, 23):
            ts = datetime(day.year, day.month, day.day, hour, 30, tzinfo=JST).astimezone(UTC)
            rows.append((f"dev-{d}", ts, "fieldloop.vehicle-longitudinal", "3", 2.0, 0.2, 0.0, d == 0 and hour == 12))
    return rows


def append_silver(spark, cfg: FieldloopConfig, rows: list[tuple]) -> None:
    path = f"{cfg.lake}/silver/fleet_telemetry"
    df = spark.createDataFrame(rows, SCHEMA)
    create_table(spark, path, df.schema, {"fieldloop.layer": "silver"})
    df.write.format("delta").mode("append").save(path)


def dp_job(spark, cfg: FieldloopConfig, now: datetime) -> GoldJob:
    return GoldJob(cfg, spark, load_contracts(), ResidencyGuard.from_config(cfg), clock=lambda: now)


def run_dp(spark, cfg: FieldloopConfig, now: datetime):
    [report] = dp_job(spark, cfg, now).run(only=lambda t: t.kind is GoldKind.TELEMETRY_DP_DAILY)
    return report


def ledger(cfg: FieldloopConfig) -> BudgetLedger:
    store = DeltaLedgerStore(f"{cfg.lake}/_dp/ledger", ResidencyGuard.from_config(cfg))
    return BudgetLedger(store, Budget(cfg.refine.dp_epsilon_per_month))


def test_every_run_of_a_31_day_month_succeeds_and_the_ledger_stays_in_budget(spark, lake_cfg) -> None:
    days = [date(2026, 12, 1) + timedelta(days=i) for i in range(31)]
    # four refine runs, each after the data of some days landed; the last one after the 31st
    for first, last in ((0, 10), (10, 20), (20, 30), (30, 31)):
        append_silver(spark, lake_cfg, [row for day in days[first:last] for row in day_rows(day)])
        closed = days[last - 1] + timedelta(days=1)
        report = run_dp(spark, lake_cfg, datetime(closed.year, closed.month, closed.day, 3, 0, tzinfo=JST))
        assert report.dp_skipped == [], report.dp_skipped
        assert len(report.dp) == 2 * last  # every closed day so far, both metrics
        spent = ledger(lake_cfg).spent(UNIT, "2026-12").epsilon
        assert spent <= lake_cfg.refine.dp_epsilon_per_month
    assert math.isclose(spent, lake_cfg.refine.dp_epsilon_per_month, rel_tol=1e-8)  # the plan uses what it has
    assert all(math.isclose(r["epsilon"], 3.0 / 62, rel_tol=1e-8) for r in report.dp)


def test_a_day_is_released_only_once_it_closed_and_then_covers_the_whole_day(spark, lake_cfg) -> None:
    day = date(2026, 12, 10)
    morning = [r for r in day_rows(day) if r[1].astimezone(JST).hour < 12]
    append_silver(spark, lake_cfg, morning)
    open_day = run_dp(spark, lake_cfg, datetime(2026, 12, 10, 13, 0, tzinfo=JST))
    assert open_day.dp == [] and open_day.dp_held == ["2026-12-10"]
    assert ledger(lake_cfg).spent(UNIT, "2026-12").epsilon == 0  # nothing released, nothing spent

    append_silver(spark, lake_cfg, [r for r in day_rows(day) if r[1].astimezone(JST).hour >= 12])
    within_lateness = run_dp(spark, lake_cfg, datetime(2026, 12, 11, 0, 30, tzinfo=JST))
    assert within_lateness.dp == [] and within_lateness.dp_held == ["2026-12-10"]
    closed = run_dp(spark, lake_cfg, datetime(2026, 12, 11, 3, 0, tzinfo=JST))
    assert {r["metric"] for r in closed.dp} == {"interventions", "ood_mean"} and closed.dp_held == []


def test_a_refused_release_is_skipped_with_its_reason_and_the_run_goes_on(spark, lake_cfg) -> None:
    tight = load_config({**dict(_env(lake_cfg)), "FIELDLOOP_REFINE_DP_EPSILON_PER_MONTH": "3"})
    # another release of the same unit already took most of the month's budget
    ledger(tight).spend(UNIT, "2026-12", 2.99, 0.0, "manual/2026-12-01", "an analyst's query")
    append_silver(spark, tight, day_rows(date(2026, 12, 2)))
    report = run_dp(spark, tight, datetime(2026, 12, 3, 6, 0, tzinfo=JST))
    assert report.dp == [] and len(report.dp_skipped) == 2
    assert all(
        "privacy budget of 'fleet-telemetry:device' for 2026-12 would be exceeded" in s["reason"]
        for s in report.dp_skipped
    )
    assert ledger(tight).spent(UNIT, "2026-12").epsilon == pytest.approx(2.99)
    [gold] = [t for t in list_tables(tight) if t.name == "fleet_telemetry_dp_daily"]
    assert any("2 DP releases skipped" in note for note in gold.notes), gold.notes


def _env(cfg: FieldloopConfig) -> dict[str, str]:
    return {"FIELDLOOP_HOME": str(cfg.home), "FIELDLOOP_LAKE_URI": cfg.lake}
