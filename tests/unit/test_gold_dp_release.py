"""The daily DP release planned over a month: every day fits, open days wait, refusals are skipped."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from refinement.dp import ReleasePlan
from refinement.gold import DP_METRICS, day_closes, release_daily
from refinement.ledger import Budget, BudgetLedger, SqliteLedgerStore

JST = ZoneInfo("Asia/Tokyo")
UNIT = "fleet-telemetry:device"
LATENESS = timedelta(hours=2)


def rows(days: list[date], devices: int = 5) -> list[dict]:
    return [
        {"day": day, "_device": f"dev-{d}", "interventions": d % 3, "ood": 0.1 * (d % 5)}
        for day in days
        for d in range(devices)
    ]


@pytest.fixture
def ledger(tmp_path: Path) -> BudgetLedger:
    return BudgetLedger(SqliteLedgerStore(tmp_path / "ledger.db"), Budget(3.0))


@pytest.mark.parametrize(("year", "month", "days"), [(2026, 12, 31), (2027, 2, 28), (2026, 11, 30)])
def test_a_refine_run_every_day_of_a_month_never_fails_and_never_exceeds_the_budget(
    ledger: BudgetLedger, year: int, month: int, days: int
) -> None:
    month_days = [date(year, month, 1) + timedelta(days=i) for i in range(days)]
    for n, day in enumerate(month_days):
        now = day_closes(day) + LATENESS + timedelta(minutes=5)
        out = release_daily("gold_dp", UNIT, rows(month_days[: n + 1]), ledger, now, LATENESS)
        assert out.skipped == [] and out.held == []
        assert len(out.rows) == len(DP_METRICS) * (n + 1)
        assert ledger.spent(UNIT, f"{year}-{month:02d}").epsilon <= 3.0
    spent = ledger.spent(UNIT, f"{year}-{month:02d}").epsilon
    assert math.isclose(spent, 3.0, rel_tol=1e-8)  # OpenDP proves a hair under each target
    assert all(math.isclose(r["epsilon"], 3.0 / (days * len(DP_METRICS)), rel_tol=1e-8) for r in out.rows)


def test_the_plan_shares_each_month_by_its_own_days() -> None:
    plan = ReleasePlan(3.0, 2)
    assert plan.releases("2026-12") == 62 and plan.releases("2027-02") == 56 and plan.releases("2028-02") == 58
    assert math.fsum([plan.epsilon("2026-12")] * 62) == pytest.approx(3.0, rel=1e-15)


def test_an_open_day_is_held_back_until_it_closed_and_the_lateness_passed(ledger: BudgetLedger) -> None:
    day = date(2026, 12, 10)
    for now in (datetime(2026, 12, 10, 23, 59, tzinfo=JST), datetime(2026, 12, 11, 1, 59, tzinfo=JST)):
        out = release_daily("gold_dp", UNIT, rows([day]), ledger, now, LATENESS)
        assert out.rows == [] and out.held == ["2026-12-10"]
    assert ledger.spent(UNIT, "2026-12").epsilon == 0
    out = release_daily("gold_dp", UNIT, rows([day]), ledger, datetime(2026, 12, 11, 2, 0, tzinfo=JST), LATENESS)
    assert len(out.rows) == 2 and out.held == []


def test_a_released_day_is_published_again_as_recorded_and_spends_nothing(ledger: BudgetLedger) -> None:
    day, now = date(2026, 12, 10), datetime(2026, 12, 12, tzinfo=JST)
    first = release_daily("gold_dp", UNIT, rows([day]), ledger, now, LATENESS)
    spent = ledger.spent(UNIT, "2026-12").epsilon
    # more data of that day arrived late: the figure stays what was published, no new noise
    again = release_daily("gold_dp", UNIT, rows([day], devices=9), ledger, now, LATENESS)
    assert [r["value"] for r in again.rows] == [r["value"] for r in first.rows]
    assert ledger.spent(UNIT, "2026-12").epsilon == spent


def test_a_release_recorded_under_another_plan_is_reused_not_refused(ledger: BudgetLedger) -> None:
    day = date(2026, 12, 10)
    ledger.spend(UNIT, "2026-12", 0.05, 0.0, "gold_dp/2026-12-10/ood_mean", "gold gold_dp", result=json.dumps(0.4))
    out = release_daily("gold_dp", UNIT, rows([day]), ledger, datetime(2026, 12, 12, tzinfo=JST), LATENESS)
    [ood] = [r for r in out.rows if r["metric"] == "ood_mean"]
    assert ood["value"] == 0.4 and ood["epsilon"] == 0.05


def test_a_refused_release_is_skipped_with_the_ledgers_reason(ledger: BudgetLedger) -> None:
    ledger.spend(UNIT, "2026-12", 2.99, 0.0, "manual/1", "an analyst's query")
    out = release_daily("gold_dp", UNIT, rows([date(2026, 12, 1)]), ledger, datetime(2026, 12, 3, tzinfo=JST), LATENESS)
    assert out.rows == [] and [s["release_id"] for s in out.skipped] == [
        "gold_dp/2026-12-01/interventions",
        "gold_dp/2026-12-01/ood_mean",
    ]
    assert "would be exceeded" in out.skipped[0]["reason"]
    assert ledger.spent(UNIT, "2026-12").epsilon == pytest.approx(2.99)
