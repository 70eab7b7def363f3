"""One refinement run: validate everything, then refine each stream's new bronze versions.

The entry point the CLI, the Airflow DAG and the demo share. Before Spark starts it
validates the policies against the contracts and schemas, loads the pseudonym keys from
their secret source and checks every output location's residency, so a misconfigured run
fails in seconds and writes nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fieldloop.config import FieldloopConfig
from fieldloop.contracts import DataContract
from refinement.errors import RefinementError
from refinement.report import PrivacyReport

logger = logging.getLogger(__name__)


@dataclass
class RefineResult:
    """Every output table's report, in run order."""

    reports: list[PrivacyReport] = field(default_factory=list)
    gold: list[Any] = field(default_factory=list)  # refinement.gold.GoldReport
    upkeep: list[Any] = field(default_factory=list)  # refinement.maintenance.Upkeep
    refused: dict[str, str] = field(default_factory=dict)  # contract id -> why nothing of it was written
    # time by phase (silver, upkeep, gold), summed over the threads that ran it: phases overlap
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("silver", "upkeep", "gold"), 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the block's wall time to ``seconds[phase]`` (from any thread)."""
        started = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - started

    @property
    def rows_out(self) -> int:
        return sum(r.rows_out for r in self.reports)

    def changed_tables(self) -> list[str]:
        """``<layer>/<name>`` of every table whose data this run changed (new rows, rebuilt, expired rows deleted)."""
        # a write of no rows only records the bronze versions it read: nothing for a reader
        silver = {r.table for r in self.reports if r.delta_version is not None and (r.rows_out or r.retention_deleted)}
        silver |= {
            u.path.rstrip("/").rsplit("/", 1)[-1] for u in self.upkeep if u.expired_rows and "/silver/" in u.path
        }
        gold = {g.table for g in self.gold if g.rows is not None}
        return sorted(f"silver/{t}" for t in silver) + sorted(f"gold/{t}" for t in gold)


# Streams refined at once. On a small increment a stream's run is mostly Delta's snapshot and
# commit protocol and Spark's job scheduling, with cores idle between jobs: two streams at once
# keep both busy (figures in bench/README.md).
STREAMS_AT_ONCE = 2


@dataclass
class _StreamDone:
    """What one stream's chain handed back: its reports and its tables' upkeep."""

    reports: list[PrivacyReport]
    upkeep: list[Any]


def _work(job: Any, cfg: FieldloopConfig, cid: str) -> int:
    """How much a stream's run is likely to cost, to start the costliest first: bronze bytes x outputs.

    Read from the Delta log (``deltalake``), no Spark job. Runs over a small increment are
    dominated by the stream with the most rows and outputs (the public vehicle frames: two
    tables, trips walked): started last, it ran alone for its last seconds while the other
    thread had nothing left to do.
    """
    from fieldloop.catalog import find_table

    table = find_table(cfg, job.bronze_path(job.contracts[cid]))
    if table is None:
        return 0
    sizes = table.get_add_actions(flatten=True).column("size_bytes").to_pylist()
    return sum(s or 0 for s in sizes) * len(job.outputs(cid))


def _refine_and_build(
    cfg: FieldloopConfig,
    job: Any,
    gold: Any,
    chosen: list[str],
    since: int | None,
    now: datetime,
    on_table: Callable[[PrivacyReport], None] | None,
    result: RefineResult,
) -> None:
    """Each chosen stream's silver run, its tables' upkeep, then the gold tables built from them.

    One pool of ``STREAMS_AT_ONCE`` threads does all of a run's Spark work: a stream's gold
    tables are queued as soon as its silver is written, behind the streams not started yet,
    so a thread that has no stream left builds gold while the other finishes the last stream
    (with a barrier between silver and gold, one core idled through the longest stream's
    tail). The costliest streams start first (:func:`_work`). Each thread runs in a Spark
    session of its own (one SparkContext, a SQL conf each), so a write's commit metadata,
    which Delta takes from the session's conf, is its own. ``result`` gets reports, gold and
    upkeep in the order a sequential run would give them; its phase times are the threads'
    time in each, summed. A stream that fails builds no gold; its failure is raised once
    every other stream and the gold queued behind them are done.
    """
    from concurrent.futures import Future, ThreadPoolExecutor, wait

    local = threading.local()
    lock = threading.Lock()
    by_source: dict[str, list[Any]] = {}
    for table in gold.tables():
        by_source.setdefault(table.source, []).append(table)
    builds: list[tuple[Any, Future]] = []

    def session() -> Any:
        if not hasattr(local, "spark"):
            local.spark = job.spark.newSession()
            local.silver = job.in_session(local.spark)
            local.gold = gold.in_session(local.spark)
        return local

    def build(table: Any) -> tuple[Any, list[Any]]:
        with result.timed("gold"):
            report = session().gold.build(table)
        if report is None:  # no silver source yet
            return None, []
        with result.timed("upkeep"):
            return report, gold_upkeep(local.spark, cfg, local.gold, [report], now)

    def stream(cid: str) -> _StreamDone:
        with result.timed("silver"):
            reports = session().silver.run(cid, since=since, now=now)
        for report in reports:
            if on_table:
                on_table(report)
        with result.timed("upkeep"):
            upkeep = stream_upkeep(local.spark, cfg, local.silver, job.contracts[cid], now)
        with lock:
            for report in reports:
                builds.extend((t, pool.submit(build, t)) for t in by_source.get(report.table, []))
        return _StreamDone(reports, upkeep)

    with ThreadPoolExecutor(max_workers=STREAMS_AT_ONCE, thread_name_prefix="refine") as pool:
        started = {cid: pool.submit(stream, cid) for cid in sorted(chosen, key=lambda c: -_work(job, cfg, c))}
        wait(started.values())  # every stream that succeeded has queued its gold by now
        with lock:
            queued = list(builds)
        wait([f for _, f in queued])
    done = {cid: f.result() for cid, f in started.items()}  # a stream's failure is raised here
    built = {t.name: f.result() for t, f in queued}
    for cid in chosen:
        result.reports += done[cid].reports
        result.upkeep += done[cid].upkeep
    order = [t.name for t in gold.tables() if t.name in built and built[t.name][0] is not None]
    result.gold = [built[name][0] for name in order]
    for name in order:
        result.upkeep += built[name][1]


def _placeable(
    chosen: list[str], job: Any, guard: Any, contracts: Mapping[str, DataContract], named: bool, refused: dict[str, str]
) -> list[str]:
    """The chosen streams whose every location (outputs and quality quarantine) their contract allows.

    Checked before the first byte of any stream is written. A location outside the
    deployment's regions is an error (the lake is misplaced); a stream whose own contract
    narrows the regions so that this lake may not hold it is skipped with the reason, and the
    others are refined; a stream the caller named is an error either way.
    """
    from fieldloop.errors import ResidencyError

    placeable = []
    for cid in chosen:
        contract = contracts[cid]
        locations = [*(o.path for o in job.outputs(cid)), job.quarantine_path(contract)]
        for location in locations:
            guard.check(location)
        try:
            for location in locations:
                guard.check(location, [contract])
        except ResidencyError as e:
            if named:
                raise
            refused[cid] = str(e)
            logger.warning("refine %s: skipped: %s", cid, e)
            continue
        placeable.append(cid)
    return placeable


def select_contracts(contracts: dict[str, DataContract], policies: dict[str, Any], streams: Sequence[str]) -> list[str]:
    """Contract ids to refine: all with a policy, or those ``streams`` name (contract id, stream or table).

    Raises:
        RefinementError: a name matches nothing; the message lists what exists.
    """
    if not streams:
        return sorted(policies)
    chosen = []
    for name in streams:
        found = [
            cid
            for cid in sorted(policies)
            if name in (cid, contracts[cid].stream, contracts[cid].table) or name in policies[cid].output
        ]
        if not found:
            raise RefinementError(
                f"no stream, contract or silver table named '{name}'; known contracts: " + ", ".join(sorted(policies))
            )
        chosen += [cid for cid in found if cid not in chosen]
    return chosen


def key_ring_for(cfg: FieldloopConfig, contracts: dict[str, DataContract]) -> Any:
    """The pseudonym key ring from the configured source; the default local file is created on first use."""
    from fieldloop.keys import configured_key_ring

    # an entry point: the one place allowed to read the environment
    return configured_key_ring(cfg, [c.tenant for c in contracts.values()], env=os.environ)


def refine(
    cfg: FieldloopConfig,
    streams: Sequence[str] = (),
    since: int | None = None,
    spark: Any = None,
    on_table: Callable[[PrivacyReport], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RefineResult:
    """Refine bronze into silver for the chosen streams (all by default).

    Args:
        cfg: effective config.
        streams: contract ids, stream names or silver table names; empty for all.
        since: refine bronze versions after this one again (default: since the last run).
        spark: a session to reuse (default: a new one from the kernel's factory).
        on_table: called with each table's report as soon as it is written.
        clock: now (UTC), for which days are closed and may have their DP figures released,
            which rows are past their contract's retention and whether upkeep is due.

    Raises:
        PolicyError, KeyRingError, ResidencyError, QualityError: before anything is written
            for the stream concerned.
    """
    from fieldloop.contracts import load_contracts
    from fieldloop.residency import ResidencyGuard
    from fieldloop.wire import default_registry
    from refinement.gold import GoldJob
    from refinement.policy import load_policies
    from refinement.silver import SilverJob

    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    # Secret streams' policies are edge releases: they have no bronze or silver table to refine.
    policies = {
        cid: p for cid, p in load_policies(contracts, default_registry(), cfg.refine.policies_dir).items() if p.output
    }
    chosen = select_contracts(contracts, policies, streams)
    keys = key_ring_for(cfg, contracts)
    guard = ResidencyGuard.from_config(cfg)
    if spark is None:
        from fieldloop.spark import spark_session

        spark = spark_session(cfg, "fieldloop-refine")
    job = SilverJob(cfg, spark, contracts, policies, keys, guard)
    now = clock()  # one now for the run: what it writes, retention never deletes in the same run
    result = RefineResult()
    chosen = _placeable(chosen, job, guard, contracts, named=bool(streams), refused=result.refused)
    _refine_and_build(cfg, job, GoldJob(cfg, spark, contracts, guard, clock), chosen, since, now, on_table, result)
    return result


def stream_upkeep(spark: Any, cfg: FieldloopConfig, job: Any, contract: DataContract, now: datetime) -> list[Any]:
    """Retention, compaction and VACUUM of one stream's tables (``job`` a ``SilverJob``).

    Bronze and both quarantines lose their rows past retention here; the silver outputs lost
    theirs in ``job.run``, before it wrote (their privacy reports count them), and are
    only compacted. Nothing is done, and no Spark job started, for a table with nothing due.
    """
    from refinement.maintenance import maintain

    column = job.time_column(contract)
    tables = [  # (table, the time its retention counts from, compacted)
        (job.bronze_path(contract), column, False),
        (job.bronze_quarantine_path(contract), "_ingested_at", False),  # raw records: kept from when they landed
        (job.quarantine_path(contract), column, True),
        *((o.path, None, True) for o in job.outputs(contract.id)),
    ]
    return [maintain(spark, cfg, path, contract, time, now, optimize=optimize) for path, time, optimize in tables]


def gold_upkeep(spark: Any, cfg: FieldloopConfig, gold: Any, built: list[Any], now: datetime) -> list[Any]:
    """Retention and upkeep of the gold tables ``gold`` (a ``GoldJob``) just looked at.

    A gold table is rebuilt from its silver source whenever that moved, a retention DELETE
    included, so it holds what silver holds; rows of a training dataset (``ts``) past
    retention are deleted here all the same, and VACUUM removes the files of earlier builds.
    """
    from refinement.maintenance import maintain

    contracts = {t.name: t.contract for t in gold.tables()}
    return [maintain(spark, cfg, g.path, contracts[g.table], "ts", now, optimize=False) for g in built]
