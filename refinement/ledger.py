"""The privacy budget ledger: how much ε and δ each ledger key has spent in each period.

Workflow. A release is computed first (noise drawn, nothing published), then charged
with :meth:`BudgetLedger.spend`; only a release the ledger accepted may leave. One
spend is one atomic step: read the key's spends for the period, refuse with
:class:`~refinement.errors.BudgetExceededError` if the new one does not fit, else
append it. A refused release records nothing, and its computed value is thrown away,
which costs no privacy.

The ledger key is the data the budget protects, e.g. the site for worker audio (every
worker of the site may be in every release, so the site's total bounds what any one
worker loses) or the device or tenant of a gold table. Keys and release ids appear in
errors and logs, so they must not be personal data. Periods are calendar months in
Asia/Tokyo by default (:func:`month_of`). Spends compose by simple addition of ε and of
δ (basic composition), which holds for any mix of mechanisms.

Re-running a release with the same ``release_id`` does not spend twice: the ledger
returns the first spend, with the ``result`` stored then, so the caller publishes the
value already released instead of a fresh draw (a second draw would leak more).

Storage is a small :class:`LedgerStore` protocol with two backends:
:class:`SqliteLedgerStore` (the device: one file, ``BEGIN IMMEDIATE`` serializes
writers across processes) and :class:`DeltaLedgerStore` (the cloud: a Delta table under
the lake; each spend commits with a Delta application transaction per key and period, so
two writers that read the same state conflict and the loser re-reads and retries).
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from refinement.errors import BudgetExceededError, LedgerConflictError, RefinementError

logger = logging.getLogger(__name__)

DEFAULT_TZ = "Asia/Tokyo"


def month_of(when: datetime | int, tz: str = DEFAULT_TZ) -> str:
    """The calendar month ``YYYY-MM`` that ``when`` falls in, in time zone ``tz``.

    Args:
        when: an aware datetime, or epoch milliseconds (as in the Avro schemas).
        tz: IANA time zone of the period boundaries.

    Raises:
        ValueError: ``when`` is a naive datetime (its month would depend on the machine).
    """
    if isinstance(when, int):
        when = datetime.fromtimestamp(when / 1000, UTC)
    elif when.tzinfo is None:
        raise ValueError("month_of needs an aware datetime (e.g. datetime.now(UTC)), not a naive one")
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m")


@dataclass(frozen=True)
class Budget:
    """Total privacy loss allowed for one ledger key in one period.

    Attributes:
        epsilon: total ε (>= 0).
        delta: total δ (0 <= δ < 1); 0 admits only pure-ε releases.
    """

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ValueError(f"budget epsilon must be a finite number >= 0, got {self.epsilon}")
        if not 0 <= self.delta < 1:
            raise ValueError(f"budget delta must be in [0, 1), got {self.delta}")


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded spend.

    Attributes:
        unit: the ledger key (site, device, tenant).
        period: the budget period, e.g. ``2026-04``.
        release_id: the release's stable id; unique per unit and period.
        epsilon: ε spent.
        delta: δ spent.
        purpose: what the release is for (free text, no personal data).
        recorded_at: when the spend was recorded (UTC).
        result: what was released, as the caller encoded it (e.g. JSON); None if not kept.
    """

    unit: str
    period: str
    release_id: str
    epsilon: float
    delta: float
    purpose: str
    recorded_at: datetime
    result: str | None = None


Decide = Callable[[Sequence[LedgerEntry]], LedgerEntry | None]


class LedgerStore(Protocol):
    """Durable storage of ledger entries with one atomic read-decide-append step."""

    def entries(self, unit: str, period: str) -> list[LedgerEntry]:
        """Every spend of ``unit`` in ``period``, oldest first."""
        ...

    def append_if(self, unit: str, period: str, decide: Decide) -> None:
        """Atomically: call ``decide`` with the current entries of (unit, period); append what it returns.

        ``decide`` returns None to append nothing, or raises to abort; it may be called
        more than once (after a conflict), each time with fresh entries.
        """
        ...


class BudgetLedger:
    """Charges releases against a budget per ledger key and period, refusing what does not fit.

    Args:
        store: where spends are kept (:class:`SqliteLedgerStore`, :class:`DeltaLedgerStore`).
        budget: the budget of every key not in ``budgets``.
        budgets: budgets of particular keys, overriding ``budget``.
        clock: the time recorded with each spend (UTC).
    """

    def __init__(
        self,
        store: LedgerStore,
        budget: Budget,
        budgets: Mapping[str, Budget] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._default = budget
        self._budgets = dict(budgets or {})
        self._clock = clock

    def budget_for(self, unit: str) -> Budget:
        """The budget of ``unit`` per period."""
        return self._budgets.get(unit, self._default)

    def entries(self, unit: str, period: str) -> list[LedgerEntry]:
        """Every spend of ``unit`` in ``period``, oldest first."""
        return self._store.entries(unit, period)

    def spent(self, unit: str, period: str) -> Budget:
        """Total ε and δ ``unit`` has spent in ``period``."""
        return _total(self._store.entries(unit, period))

    def remaining(self, unit: str, period: str) -> Budget:
        """What ``unit`` may still spend in ``period`` (never negative)."""
        budget, spent = self.budget_for(unit), self.spent(unit, period)
        return Budget(max(0.0, budget.epsilon - spent.epsilon), max(0.0, budget.delta - spent.delta))

    def recorded(self, unit: str, period: str, release_id: str) -> LedgerEntry | None:
        """The spend recorded for ``release_id``, if any."""
        return next((e for e in self._store.entries(unit, period) if e.release_id == release_id), None)

    def spend(
        self,
        unit: str,
        period: str,
        epsilon: float,
        delta: float,
        release_id: str,
        purpose: str,
        *,
        result: str | None = None,
    ) -> LedgerEntry:
        """Charge one release, atomically; refuse it if it would exceed the budget.

        Args:
            unit: the ledger key (site, device, tenant; not personal data).
            period: the budget period (see :func:`month_of`).
            epsilon: ε of the release (OpenDP's privacy map, e.g. ``DpRelease.epsilon``).
            delta: δ of the release.
            release_id: stable id of the release; a second spend with the same id in the
                same unit and period spends nothing and returns the first entry.
            purpose: what the release is for (kept with the spend).
            result: the released value as the caller encodes it, kept so that a re-run
                publishes the same value (see the module docstring).

        Returns:
            The recorded entry: the new one, or the earlier one for a repeated ``release_id``
            (compare its ``result`` with yours and publish the recorded one).

        Raises:
            BudgetExceededError: the release does not fit in what is left; nothing was recorded.
            RefinementError: ``release_id`` was recorded before with a different ε or δ.
            ValueError: an argument is out of range.
        """
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
        if not 0 <= delta < 1:
            raise ValueError(f"delta must be in [0, 1), got {delta}")
        if not unit or not period or not release_id:
            raise ValueError("unit, period and release_id must be non-empty")
        budget = self.budget_for(unit)
        outcome: dict[str, LedgerEntry] = {}

        def decide(current: Sequence[LedgerEntry]) -> LedgerEntry | None:
            outcome.clear()
            earlier = next((e for e in current if e.release_id == release_id), None)
            if earlier is not None:
                if earlier.epsilon != epsilon or earlier.delta != delta:
                    raise RefinementError(
                        f"release '{release_id}' of '{unit}' in {period} was recorded with ε={earlier.epsilon:g}, "
                        f"δ={earlier.delta:g}, not ε={epsilon:g}, δ={delta:g}; a different release needs a new id"
                    )
                outcome["entry"] = earlier
                return None
            # exact sums (math.fsum), compared with a tolerance far below any real release:
            # a plan of 62 releases of 3/62 fills a budget of 3 although each share was rounded
            after_eps = math.fsum([*(e.epsilon for e in current), epsilon])
            after_delta = math.fsum([*(e.delta for e in current), delta])
            if _over(after_eps, budget.epsilon) or _over(after_delta, budget.delta):
                raise BudgetExceededError(_refusal(unit, period, budget, _total(current), epsilon, delta))
            entry = LedgerEntry(unit, period, release_id, float(epsilon), float(delta), purpose, self._clock(), result)
            outcome["entry"] = outcome["new"] = entry
            return entry

        self._store.append_if(unit, period, decide)
        entry = outcome["entry"]
        if outcome.get("new") is entry:
            logger.info(
                "dp ledger: %s spent ε=%g δ=%g in %s for %s (%s)", unit, epsilon, delta, period, release_id, purpose
            )
        else:
            logger.info(
                "dp ledger: release %s of %s in %s was already recorded; nothing spent", release_id, unit, period
            )
        return entry


# Relative slack of a budget comparison: rounding of a plan's shares is ~1e-16 per release;
# overspending by this much would take a billion releases.
_SLACK = 1e-9


def _over(total: float, budget: float) -> bool:
    """Whether ``total`` exceeds ``budget`` by more than rounding can explain."""
    return total > budget * (1 + _SLACK)


def _total(entries: Sequence[LedgerEntry]) -> Budget:
    return Budget(math.fsum(e.epsilon for e in entries), math.fsum(e.delta for e in entries))


def _refusal(unit: str, period: str, budget: Budget, spent: Budget, epsilon: float, delta: float) -> str:
    left_eps = max(0.0, budget.epsilon - spent.epsilon)
    left_delta = max(0.0, budget.delta - spent.delta)
    return (
        f"privacy budget of '{unit}' for {period} would be exceeded: spent ε={spent.epsilon:g} δ={spent.delta:g} "
        f"of ε={budget.epsilon:g} δ={budget.delta:g}, this release requests ε={epsilon:g} δ={delta:g}, "
        f"remaining ε={left_eps:g} δ={left_delta:g}; nothing was released or recorded. Lower the release's ε/δ "
        f"(or release less often), wait for the next period, or raise the key's budget if its privacy "
        "review allows"
    )


# -- SQLite (device) ------------------------------------------------------------------
_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS dp_ledger (
    unit TEXT NOT NULL,
    period TEXT NOT NULL,
    release_id TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    purpose TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    result TEXT,
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    UNIQUE (unit, period, release_id)
)
"""


class SqliteLedgerStore:
    """A ledger in one SQLite file, for a device.

    Every step opens its own connection, so threads and processes may share the file.
    ``BEGIN IMMEDIATE`` takes the write lock before reading, which makes read-decide-append
    one serialized step; ``synchronous=FULL`` makes a committed spend survive power loss.

    Args:
        path: the database file (created with its parent directory).
        timeout_s: how long a writer waits for another's lock (seconds).
    """

    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            db.execute(_SQLITE_SCHEMA)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None)
        except sqlite3.Error as e:
            raise RefinementError(
                f"cannot open the DP ledger {self.path}: {e}; check the path and its permissions"
            ) from e
        db.execute("PRAGMA synchronous=FULL")
        return db

    def entries(self, unit: str, period: str) -> list[LedgerEntry]:
        db = self._connect()
        try:
            return self._read(db, unit, period)
        finally:
            db.close()

    @staticmethod
    def _read(db: sqlite3.Connection, unit: str, period: str) -> list[LedgerEntry]:
        rows = db.execute(
            "SELECT unit, period, release_id, epsilon, delta, purpose, recorded_at, result "
            "FROM dp_ledger WHERE unit = ? AND period = ? ORDER BY seq",
            (unit, period),
        ).fetchall()
        return [LedgerEntry(u, p, r, e, d, pu, datetime.fromisoformat(at), res) for u, p, r, e, d, pu, at, res in rows]

    def append_if(self, unit: str, period: str, decide: Decide) -> None:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                entry = decide(self._read(db, unit, period))
                if entry is not None:
                    db.execute(
                        "INSERT INTO dp_ledger (unit, period, release_id, epsilon, delta, purpose, recorded_at, "
                        "result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            entry.unit,
                            entry.period,
                            entry.release_id,
                            entry.epsilon,
                            entry.delta,
                            entry.purpose,
                            entry.recorded_at.isoformat(),
                            entry.result,
                        ),
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as e:
            raise LedgerConflictError(f"DP ledger {self.path}: {e}; nothing was recorded, retry the release") from e
        finally:
            db.close()


def _sql_text(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


# -- Delta (cloud) --------------------------------------------------------------------
class DeltaLedgerStore:
    """A ledger as a Delta table under the lake, written with delta-rs (``deltalake``).

    Each spend is one commit carrying a Delta application transaction
    ``fieldloop.dp-ledger/<unit>/<period>`` whose version counts that key's spends. Two
    writers that read the same state both commit that app id; Delta's conflict check
    refuses the second, which then re-reads and decides again, so the budget is checked
    against every spend that won before it.

    Args:
        uri: table location, e.g. ``<lake>/gold/dp_budget_ledger``.
        guard: the residency guard; the location is checked before the table is created.
        storage_options: delta-rs storage options (e.g. S3 credentials and region).
        max_attempts: commits tried before giving up under contention.
    """

    def __init__(
        self, uri: str, guard: Any, storage_options: Mapping[str, str] | None = None, max_attempts: int = 20
    ) -> None:
        self.uri = uri
        self._options = dict(storage_options or {})
        self._max_attempts = max_attempts
        guard.check(uri)

    def _schema(self) -> Any:
        import pyarrow as pa

        return pa.schema(
            [
                ("unit", pa.string()),
                ("period", pa.string()),
                ("release_id", pa.string()),
                ("epsilon", pa.float64()),
                ("delta", pa.float64()),
                ("purpose", pa.string()),
                ("recorded_at", pa.timestamp("us", tz="UTC")),
                ("result", pa.string()),
            ]
        )

    def _table(self) -> Any:
        """The ledger table, created on first use (several creators may race; one wins)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        for _ in range(3):
            try:
                return DeltaTable(self.uri, storage_options=self._options)
            except TableNotFoundError:
                pass
            try:
                DeltaTable.create(
                    self.uri,
                    self._schema(),
                    mode="ignore",
                    partition_by=["period"],
                    name="dp_budget_ledger",
                    description="fieldloop DP budget ledger: one row per spend",
                    storage_options=self._options,
                )
            except DeltaError as e:  # another creator won the race; open theirs
                logger.debug("dp ledger: creating %s raced another writer: %s", self.uri, e)
        return DeltaTable(self.uri, storage_options=self._options)

    @staticmethod
    def _app_id(unit: str, period: str) -> str:
        return f"fieldloop.dp-ledger/{unit}/{period}"

    def _read(self, table: Any, unit: str, period: str) -> list[LedgerEntry]:
        """The entries in ``table``'s loaded snapshot (the one the commit is checked against)."""
        import pyarrow as pa
        from deltalake import QueryBuilder

        # delta-rs' own engine rather than a pyarrow dataset scan: with deltalake 1.6.6 and
        # pyarrow 25 the latter can abort the interpreter at exit ("terminate called without
        # an active exception").
        query = f"SELECT * FROM ledger WHERE period = {_sql_text(period)} AND unit = {_sql_text(unit)}"
        rows = pa.table(QueryBuilder().register("ledger", table).execute(query).read_all()).to_pylist()
        rows.sort(key=lambda r: r["recorded_at"])
        return [
            LedgerEntry(
                r["unit"],
                r["period"],
                r["release_id"],
                r["epsilon"],
                r["delta"],
                r["purpose"],
                r["recorded_at"],
                r["result"],
            )
            for r in rows
        ]

    def entries(self, unit: str, period: str) -> list[LedgerEntry]:
        return self._read(self._table(), unit, period)

    def append_if(self, unit: str, period: str, decide: Decide) -> None:
        import pyarrow as pa
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        app_id = self._app_id(unit, period)
        for attempt in range(1, self._max_attempts + 1):
            table = self._table()
            entry = decide(self._read(table, unit, period))
            if entry is None:
                return
            version = (table.transaction_version(app_id) or 0) + 1
            row = pa.Table.from_pylist(
                [
                    {
                        "unit": entry.unit,
                        "period": entry.period,
                        "release_id": entry.release_id,
                        "epsilon": entry.epsilon,
                        "delta": entry.delta,
                        "purpose": entry.purpose,
                        "recorded_at": entry.recorded_at,
                        "result": entry.result,
                    }
                ],
                schema=self._schema(),
            )
            try:
                write_deltalake(
                    table,
                    row,
                    mode="append",
                    storage_options=self._options,
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, version)]),
                )
                return
            except CommitFailedError as e:
                # someone else committed in between; their spend may change the decision
                logger.debug("dp ledger: commit %d for %s lost a race (%s); re-reading", attempt, app_id, e)
                time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise LedgerConflictError(
            f"DP ledger {self.uri}: {self._max_attempts} commits for '{unit}' in {period} lost to "
            "concurrent writers; nothing was recorded, retry the release later"
        )
