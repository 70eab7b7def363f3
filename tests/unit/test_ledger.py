"""The budget ledger: refuses over-budget releases, records every spend once, holds under concurrency.

Both backends run the same behaviour tests: SQLite (the device) and Delta via delta-rs on
a tmp_path (the cloud). Concurrency is tested with real processes sharing one store.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fieldloop.residency import ResidencyGuard
from refinement.errors import BudgetExceededError, RefinementError
from refinement.ledger import (
    Budget,
    BudgetLedger,
    DeltaLedgerStore,
    LedgerEntry,
    LedgerStore,
    SqliteLedgerStore,
    month_of,
)

PERIOD = "2026-04"
GUARD = ResidencyGuard(["ap-northeast-1"], site_region="ap-northeast-1")


def open_store(kind: str, root: Path) -> LedgerStore:
    if kind == "sqlite":
        return SqliteLedgerStore(root / "ledger.db")
    return DeltaLedgerStore(str(root / "gold" / "dp_budget_ledger"), GUARD)


@pytest.fixture(params=["sqlite", "delta"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ledger(kind: str, tmp_path: Path) -> BudgetLedger:
    return BudgetLedger(open_store(kind, tmp_path), Budget(epsilon=1.0, delta=1e-6))


# -- periods ---------------------------------------------------------------------------
def test_month_is_the_calendar_month_in_tokyo() -> None:
    assert month_of(datetime(2026, 3, 31, 14, 59, 59, tzinfo=UTC)) == "2026-03"
    assert month_of(datetime(2026, 3, 31, 15, 0, 0, tzinfo=UTC)) == "2026-04"  # midnight JST
    assert month_of(int(datetime(2026, 3, 31, 15, 0, tzinfo=UTC).timestamp() * 1000)) == "2026-04"
    assert month_of(datetime(2026, 3, 31, 15, 0, 0, tzinfo=UTC), tz="UTC") == "2026-03"


def test_month_of_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        month_of(datetime(2026, 4, 1))


# -- budget ----------------------------------------------------------------------------
def test_spends_fill_the_budget_exactly(ledger: BudgetLedger) -> None:
    for i in range(10):
        ledger.spend("site-01", PERIOD, 0.1, 0.0, f"r{i}", "test")

    assert ledger.spent("site-01", PERIOD).epsilon == 1.0
    assert ledger.remaining("site-01", PERIOD).epsilon == 0.0
    assert [e.release_id for e in ledger.entries("site-01", PERIOD)] == [f"r{i}" for i in range(10)]


def test_over_budget_release_is_refused_and_nothing_recorded(ledger: BudgetLedger) -> None:
    ledger.spend("site-01", PERIOD, 0.7, 0.0, "first", "test")

    with pytest.raises(BudgetExceededError) as refused:
        ledger.spend("site-01", PERIOD, 0.5, 0.0, "second", "test")

    message = str(refused.value)
    for part in ("site-01", PERIOD, "spent ε=0.7", "requests ε=0.5", "remaining ε=0.3", "nothing was released"):
        assert part in message
    assert [e.release_id for e in ledger.entries("site-01", PERIOD)] == ["first"]
    assert ledger.spent("site-01", PERIOD).epsilon == 0.7
    # what still fits is accepted
    ledger.spend("site-01", PERIOD, 0.3, 0.0, "third", "test")


def test_delta_budget_is_enforced_too(ledger: BudgetLedger) -> None:
    ledger.spend("site-01", PERIOD, 0.1, 8e-7, "g1", "gaussian")

    with pytest.raises(BudgetExceededError, match="δ"):
        ledger.spend("site-01", PERIOD, 0.1, 8e-7, "g2", "gaussian")
    assert len(ledger.entries("site-01", PERIOD)) == 1


def test_units_and_periods_have_separate_budgets(kind: str, tmp_path: Path) -> None:
    ledger = BudgetLedger(open_store(kind, tmp_path), Budget(1.0), budgets={"big-site": Budget(5.0)})
    ledger.spend("site-01", "2026-04", 1.0, 0.0, "a", "test")

    ledger.spend("site-01", "2026-05", 1.0, 0.0, "a", "test")
    ledger.spend("site-02", "2026-04", 1.0, 0.0, "a", "test")
    ledger.spend("big-site", "2026-04", 4.0, 0.0, "a", "test")
    with pytest.raises(BudgetExceededError):
        ledger.spend("site-01", "2026-04", 0.01, 0.0, "b", "test")


# -- idempotence -----------------------------------------------------------------------
def test_same_release_id_spends_once_and_returns_the_first_result(ledger: BudgetLedger) -> None:
    first = ledger.spend("site-01", PERIOD, 0.4, 0.0, "window-1", "test", result='{"value": 1.5}')

    again = ledger.spend("site-01", PERIOD, 0.4, 0.0, "window-1", "test", result='{"value": 99.0}')

    assert again.result == '{"value": 1.5}'
    assert again.recorded_at == first.recorded_at
    assert ledger.spent("site-01", PERIOD).epsilon == 0.4
    assert len(ledger.entries("site-01", PERIOD)) == 1


def test_repeated_release_id_is_not_refused_when_the_budget_is_full(ledger: BudgetLedger) -> None:
    ledger.spend("site-01", PERIOD, 1.0, 0.0, "all", "test")

    assert ledger.spend("site-01", PERIOD, 1.0, 0.0, "all", "test").release_id == "all"


def test_same_release_id_with_other_epsilon_is_an_error(ledger: BudgetLedger) -> None:
    ledger.spend("site-01", PERIOD, 0.4, 0.0, "window-1", "test")

    with pytest.raises(RefinementError, match="new id"):
        ledger.spend("site-01", PERIOD, 0.2, 0.0, "window-1", "test")


@pytest.mark.parametrize("args", [(-0.1, 0.0), (float("nan"), 0.0), (0.1, 1.0), (0.1, -1e-9)])
def test_invalid_spends_are_refused(ledger: BudgetLedger, args: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        ledger.spend("site-01", PERIOD, *args, "r", "test")
    assert ledger.entries("site-01", PERIOD) == []


# -- durability ------------------------------------------------------------------------
def test_spends_survive_a_restart(kind: str, tmp_path: Path) -> None:
    BudgetLedger(open_store(kind, tmp_path), Budget(1.0)).spend("site-01", PERIOD, 0.6, 0.0, "r1", "test", result="x")

    reopened = BudgetLedger(open_store(kind, tmp_path), Budget(1.0))

    [entry] = reopened.entries("site-01", PERIOD)
    assert (entry.release_id, entry.epsilon, entry.purpose, entry.result) == ("r1", 0.6, "test", "x")
    assert entry.recorded_at.tzinfo is not None
    with pytest.raises(BudgetExceededError):
        reopened.spend("site-01", PERIOD, 0.6, 0.0, "r2", "test")


# -- concurrency -----------------------------------------------------------------------
def _spend_many(kind: str, root: str, worker: int, count: int) -> int:
    """Process body: try ``count`` spends of 0.1; return how many were accepted."""
    ledger = BudgetLedger(open_store(kind, Path(root)), Budget(1.0))
    accepted = 0
    for i in range(count):
        try:
            ledger.spend("site-01", PERIOD, 0.1, 0.0, f"w{worker}-{i}", "race")
            accepted += 1
        except BudgetExceededError:
            pass
    return accepted


def test_concurrent_processes_never_exceed_the_budget(kind: str, tmp_path: Path) -> None:
    open_store(kind, tmp_path)  # created up front, as a deployment would
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        accepted = pool.starmap(_spend_many, [(kind, str(tmp_path), w, 6) for w in range(4)])

    entries = BudgetLedger(open_store(kind, tmp_path), Budget(1.0)).entries("site-01", PERIOD)
    assert sum(accepted) == len(entries) == 10
    assert len({e.release_id for e in entries}) == 10


def test_concurrent_threads_never_exceed_the_budget(kind: str, tmp_path: Path) -> None:
    ledger = BudgetLedger(open_store(kind, tmp_path), Budget(1.0))
    accepted: list[str] = []
    lock = threading.Lock()

    def spend(worker: int) -> None:
        for i in range(5):
            try:
                ledger.spend("site-01", PERIOD, 0.1, 0.0, f"t{worker}-{i}", "race")
            except BudgetExceededError:
                continue
            with lock:
                accepted.append(f"t{worker}-{i}")

    threads = [threading.Thread(target=spend, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(accepted) == len(ledger.entries("site-01", PERIOD)) == 10


class _Interleaved:
    """A store whose first decision is interrupted by another writer's spend (a lost race, made certain)."""

    def __init__(self, inner: LedgerStore, competitor: Callable[[], None]) -> None:
        self.inner = inner
        self.competitor: Callable[[], None] | None = competitor
        self.decisions = 0

    def entries(self, unit: str, period: str) -> list[LedgerEntry]:
        return self.inner.entries(unit, period)

    def append_if(self, unit: str, period: str, decide: Callable[[Sequence[LedgerEntry]], LedgerEntry | None]) -> None:
        def interrupted(current: Sequence[LedgerEntry]) -> LedgerEntry | None:
            self.decisions += 1
            if self.competitor is not None:
                competitor, self.competitor = self.competitor, None
                competitor()
            return decide(current)

        self.inner.append_if(unit, period, interrupted)


def test_delta_commit_conflict_rereads_and_refuses_what_no_longer_fits(tmp_path: Path) -> None:
    other = BudgetLedger(open_store("delta", tmp_path), Budget(1.0))
    store = _Interleaved(
        open_store("delta", tmp_path), lambda: other.spend("site-01", PERIOD, 0.6, 0.0, "theirs", "race")
    )
    ours = BudgetLedger(store, Budget(1.0))

    with pytest.raises(BudgetExceededError, match=r"spent ε=0\.6"):
        ours.spend("site-01", PERIOD, 0.6, 0.0, "ours", "race")

    assert store.decisions == 2  # decided on stale state, lost the commit, decided again
    assert [e.release_id for e in other.entries("site-01", PERIOD)] == ["theirs"]


def test_delta_commit_conflict_retries_and_records_both_when_they_fit(tmp_path: Path) -> None:
    other = BudgetLedger(open_store("delta", tmp_path), Budget(1.0))
    store = _Interleaved(
        open_store("delta", tmp_path), lambda: other.spend("site-01", PERIOD, 0.3, 0.0, "theirs", "race")
    )

    BudgetLedger(store, Budget(1.0)).spend("site-01", PERIOD, 0.3, 0.0, "ours", "race")

    assert store.decisions == 2
    assert sorted(e.release_id for e in other.entries("site-01", PERIOD)) == ["ours", "theirs"]


def test_sqlite_writer_holds_the_lock_for_its_whole_decision(tmp_path: Path) -> None:
    blocked = BudgetLedger(SqliteLedgerStore(tmp_path / "ledger.db", timeout_s=0.2), Budget(1.0))
    errors: list[Exception] = []

    def competitor() -> None:
        try:
            blocked.spend("site-01", PERIOD, 0.6, 0.0, "theirs", "race")
        except RefinementError as e:
            errors.append(e)

    store = _Interleaved(SqliteLedgerStore(tmp_path / "ledger.db"), competitor)
    BudgetLedger(store, Budget(1.0)).spend("site-01", PERIOD, 0.6, 0.0, "ours", "race")

    assert len(errors) == 1 and "locked" in str(errors[0])
    assert [e.release_id for e in blocked.entries("site-01", PERIOD)] == ["ours"]
