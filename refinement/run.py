"""One refinement run: validate everything, then refine each stream's new bronze versions.

The entry point the CLI, the Airflow DAG and the demo share. Before Spark starts it
validates the policies against the contracts and schemas, loads the pseudonym keys from
their secret source and checks every output location's residency, so a misconfigured run
fails in seconds and writes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
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

    @property
    def rows_out(self) -> int:
        return sum(r.rows_out for r in self.reports)

    def changed_tables(self) -> list[str]:
        """``<layer>/<name>`` of every table whose data this run changed (new rows, rebuilt, expired rows deleted)."""
        silver = {r.table for r in self.reports if r.delta_version is not None}
        silver |= {u.path.rstrip("/").rsplit("/", 1)[-1] for u in self.upkeep if u.expired_rows}
        gold = {g.table for g in self.gold if g.rows is not None}
        return sorted(f"silver/{t}" for t in silver) + sorted(f"gold/{t}" for t in gold)


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
    from refinement.keys import load_key_ring

    default = cfg.refine.key_source is None
    sm = None
    if cfg.key_source.startswith("aws-secretsmanager:"):
        import boto3

        sm = boto3.client("secretsmanager", region_name=cfg.allowed_regions[0])
    return load_key_ring(
        cfg.key_source,
        create_for=[c.tenant for c in contracts.values()] if default else None,
        period=datetime.now(UTC).strftime("%Y%m"),
        env=os.environ,  # an entry point: the one place allowed to read the environment
        secretsmanager=sm,
    )


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
        clock: now (UTC), for which days are closed and may have their DP figures released.

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
    result = RefineResult()
    chosen = _placeable(chosen, job, guard, contracts, named=bool(streams), refused=result.refused)
    for cid in chosen:
        for report in job.run(cid, since=since):
            result.reports.append(report)
            if on_table:
                on_table(report)
    from delta.tables import DeltaTable

    from refinement.maintenance import maintain

    for cid in chosen:
        for o in job.outputs(cid):
            if DeltaTable.isDeltaTable(spark, o.path):
                result.upkeep.append(maintain(spark, o.path, contracts[cid]))
    refined = {r.table for r in result.reports}
    result.gold = GoldJob(cfg, spark, contracts, guard, clock).run(only=lambda table: table.source in refined)
    return result
