"""The rollout audit table ``<lake>/fleet/rollouts``: every decision of every rollout, and the
state a controller resumes from.

One row per decision: which rollout (its id, fleet, candidate and champion), the stage it
concerns, the action (:data:`ACTIONS`), the state it leaves the rollout in, who or what
asked, why, and the figures and gate results it was decided on. The table is written with
delta-rs (no JVM: a controller decides in milliseconds) and read back whole (a fleet's
rollouts are hundreds of rows, not millions).

Each append carries a Delta application transaction ``fieldloop.rollouts/<fleet>`` whose
version is the row's ``seq``, the fleet's decision count. Two deciders that read the same
state (a controller and a person's ``rollout pause``, or a controller restarted while the
old one still ran) both commit the same version; Delta's conflict check refuses the second,
which re-reads and decides again: a stage is never advanced twice, nor a decision lost.

:class:`Rollout` folds a rollout's rows into where it stands; nothing else is kept anywhere,
so a controller killed at any point resumes from this table alone.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from actuation.contract import Release, ReleasePointer, Stage
from actuation.errors import ReleaseError

logger = logging.getLogger(__name__)

# actions: a rollout's first row is START; ADVANCE enters the next stage; HOLD says why a stage is
# not judged yet (written when the reason changes, not on every look); PAUSE and AWAIT hold the
# fleet where it is until RESUME (a person); ROLLBACK and COMPLETE end it.
START, ADVANCE, HOLD, PAUSE, AWAIT, RESUME, ROLLBACK, COMPLETE = (
    "start",
    "advance",
    "hold",
    "pause",
    "await-approval",
    "resume",
    "rollback",
    "complete",
)
ACTIONS = (START, ADVANCE, HOLD, PAUSE, AWAIT, RESUME, ROLLBACK, COMPLETE)
# states a row leaves its rollout in
RUNNING, PAUSED, AWAITING, ROLLED_BACK, COMPLETED = "running", "paused", "awaiting-approval", "rolled-back", "complete"
FINAL = (ROLLED_BACK, COMPLETED)


class RolloutConflictError(ReleaseError):
    """Concurrent deciders kept winning the race for a fleet's next decision."""


@dataclass(frozen=True)
class Decision:
    """One row of ``fleet/rollouts``."""

    rollout_id: str
    seq: int  # the fleet's decision count, 1-based
    at: datetime
    fleet: str
    model: str
    version: int
    champion_model: str
    champion_version: int
    stage: str
    stage_index: int
    mode: str
    share: float
    action: str
    state: str
    requested_by: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    candidate_release: str = ""  # Release JSON (only on START rows): what a reconciling controller republishes
    champion_release: str = ""

    def as_row(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in _COLUMNS}
        row["figures"], row["gates"] = json.dumps(self.figures, sort_keys=True), json.dumps(self.gates)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Decision:
        values = {k: row[k] for k in _COLUMNS}
        values["figures"], values["gates"] = json.loads(row["figures"] or "{}"), json.loads(row["gates"] or "[]")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        out = self.as_row()
        out["at"], out["figures"], out["gates"] = self.at.isoformat(), self.figures, self.gates
        del out["candidate_release"], out["champion_release"]
        return out


_COLUMNS = (
    "rollout_id",
    "seq",
    "at",
    "fleet",
    "model",
    "version",
    "champion_model",
    "champion_version",
    "stage",
    "stage_index",
    "mode",
    "share",
    "action",
    "state",
    "requested_by",
    "reason",
    "figures",
    "gates",
    "candidate_release",
    "champion_release",
)


def _schema() -> Any:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    types = {"seq": pa.int64(), "at": ts, "version": pa.int64(), "champion_version": pa.int64()}
    types |= {"stage_index": pa.int32(), "share": pa.float64()}
    return pa.schema([(name, types.get(name, pa.string())) for name in _COLUMNS])


@dataclass(frozen=True)
class Rollout:
    """Where one rollout stands, folded from its rows (oldest first)."""

    rows: tuple[Decision, ...]

    @property
    def first(self) -> Decision:
        return self.rows[0]

    @property
    def last(self) -> Decision:
        return self.rows[-1]

    @property
    def id(self) -> str:
        return self.first.rollout_id

    @property
    def state(self) -> str:
        return self.last.state

    @property
    def done(self) -> bool:
        return self.state in FINAL

    @property
    def stage_index(self) -> int:
        return self.last.stage_index

    @property
    def window_start(self) -> datetime:
        """When the current stage's figures start: its entry, or the last resume in it."""
        for row in reversed(self.rows):
            if row.action in (START, ADVANCE, RESUME):
                return row.at
        return self.first.at

    @property
    def candidate(self) -> Release:
        return Release.model_validate_json(self.first.candidate_release)

    @property
    def champion(self) -> Release:
        return Release.model_validate_json(self.first.champion_release)

    def pointer(
        self, issued_at: datetime, tenant: str | None, disagreement_threshold: float | None = None
    ) -> ReleasePointer:
        """The fleet's pointer this state calls for (what a reconciling controller publishes)."""
        row = self.last
        if row.state == COMPLETED:
            return ReleasePointer(fleet=row.fleet, tenant=tenant, issued_at=issued_at, active=self.candidate)
        if row.state == ROLLED_BACK:
            return ReleasePointer(fleet=row.fleet, tenant=tenant, issued_at=issued_at, active=self.champion)
        stage = Stage(
            rollout_id=self.id,
            name=row.stage,
            index=row.stage_index,
            mode=row.mode,  # type: ignore[arg-type]
            share=row.share,
            candidate=self.candidate,
            disagreement_threshold=disagreement_threshold,
        )
        return ReleasePointer(fleet=row.fleet, tenant=tenant, issued_at=issued_at, active=self.champion, stage=stage)


def rollouts_of(rows: list[Decision]) -> list[Rollout]:
    """A fleet's rows grouped by rollout, oldest rollout first."""
    grouped: dict[str, list[Decision]] = {}
    for row in sorted(rows, key=lambda r: r.seq):
        grouped.setdefault(row.rollout_id, []).append(row)
    return [Rollout(tuple(g)) for g in grouped.values()]


Decide = Callable[[list[Decision]], Decision | None]


class RolloutLog:
    """The audit table (see the module docstring).

    Args:
        uri: table location, ``<lake>/fleet/rollouts``.
        guard: the residency guard; the location is checked before anything is written.
        storage_options: delta-rs storage options (S3 endpoint and credentials).
    """

    def __init__(
        self, uri: str, guard: Any, storage_options: Mapping[str, str] | None = None, max_attempts: int = 20
    ) -> None:
        self.uri, self._options, self._max_attempts = uri, dict(storage_options or {}), max_attempts
        guard.check(uri)

    @classmethod
    def for_config(cls, cfg: Any) -> RolloutLog:
        from fieldloop.catalog import storage_options
        from fieldloop.residency import ResidencyGuard

        return cls(f"{cfg.lake}/fleet/rollouts", ResidencyGuard.from_config(cfg), storage_options(cfg))

    def _table(self, create: bool) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        for _ in range(3):
            try:
                return DeltaTable(self.uri, storage_options=self._options)
            except TableNotFoundError:
                if not create:
                    return None
            try:
                DeltaTable.create(
                    self.uri,
                    _schema(),
                    mode="ignore",
                    name="rollouts",
                    description="fieldloop rollout decisions: one row per decision of every staged rollout",
                    storage_options=self._options,
                )
            except DeltaError as e:  # another creator won the race; open theirs
                logger.debug("rollouts: creating %s raced another writer: %s", self.uri, e)
        return DeltaTable(self.uri, storage_options=self._options)

    @staticmethod
    def _app_id(fleet: str) -> str:
        return f"fieldloop.rollouts/{fleet}"

    @staticmethod
    def _read(table: Any, fleet: str | None) -> list[Decision]:
        import pyarrow as pa
        from deltalake import QueryBuilder

        query = "SELECT * FROM rollouts" + (f" WHERE fleet = '{fleet}'" if fleet else "")
        rows = pa.table(QueryBuilder().register("rollouts", table).execute(query).read_all()).to_pylist()
        return sorted((Decision.from_row(r) for r in rows), key=lambda d: (d.fleet, d.seq))

    def rows(self, fleet: str | None = None) -> list[Decision]:
        """Every decision of ``fleet`` (or of every fleet), in order; [] before the first."""
        table = self._table(create=False)
        return [] if table is None else self._read(table, fleet)

    def rollouts(self, fleet: str) -> list[Rollout]:
        return rollouts_of(self.rows(fleet))

    def current(self, fleet: str) -> Rollout | None:
        """The fleet's latest rollout (finished or not), or None."""
        found = self.rollouts(fleet)
        return found[-1] if found else None

    def append_if(self, fleet: str, decide: Decide) -> Decision | None:
        """Append what ``decide`` makes of the fleet's rows (None: nothing), as decision ``seq`` =
        the count so far + 1; a concurrent decider's commit makes this one decide again."""
        import pyarrow as pa
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        app_id = self._app_id(fleet)
        for attempt in range(1, self._max_attempts + 1):
            table = self._table(create=True)
            rows = self._read(table, fleet)
            decision = decide(rows)
            if decision is None:
                return None
            seq = (table.transaction_version(app_id) or 0) + 1
            decision = replace(decision, seq=seq)
            try:
                write_deltalake(
                    table,
                    pa.Table.from_pylist([decision.as_row()], schema=_schema()),
                    mode="append",
                    storage_options=self._options,
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, seq)]),
                )
                return decision
            except CommitFailedError as e:
                logger.debug("rollouts: decision %d of %s lost a race (%s); deciding again", seq, fleet, e)
                time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise RolloutConflictError(
            f"rollouts of fleet {fleet}: {self._max_attempts} decisions lost to concurrent deciders; nothing was "
            "recorded. Is another controller running for this fleet? (`fieldloop rollout status`)"
        )
