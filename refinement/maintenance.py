"""Table upkeep after refinement: retention, compaction with Z-order, VACUUM.

For each silver table, at most once a day (``every``):

1. **retention**: rows whose ``ts`` is older than the contract's ``retention_days`` are
   deleted (a Delta DELETE: the rows leave the current version at once);
2. **compaction**: ``OPTIMIZE ... ZORDER BY`` the device and time columns the table has,
   so reads of one device's history or of a time range skip most files;
3. **VACUUM** with the table's own ``delta.deletedFileRetentionDuration`` (a few days, set
   from the contract when the table was created), after which deleted rows' files are
   physically gone: no data outlives its retention by more than that grace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fieldloop.contracts import DataContract

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


@dataclass
class Upkeep:
    path: str
    expired_rows: int = 0
    optimized: bool = False
    vacuumed: bool = False
    skipped: str | None = None


def maintain(
    spark: SparkSession,
    path: str,
    contract: DataContract,
    now: datetime | None = None,
    every: timedelta = timedelta(days=1),
) -> Upkeep:
    """Apply retention, compact and vacuum ``path`` unless that was done less than ``every`` ago."""
    from delta.tables import DeltaTable

    now = now or datetime.now(UTC)
    table = DeltaTable.forPath(spark, path)
    done = Upkeep(path)
    # VACUUM always commits (OPTIMIZE does not when there is nothing to rewrite): it marks the last upkeep.
    last = table.history(100).where("operation = 'VACUUM END'").select("timestamp").first()
    if last is not None and timedelta(0) <= now - last["timestamp"].replace(tzinfo=UTC) < every:
        done.skipped = f"last upkeep {last['timestamp']:%Y-%m-%d %H:%M} UTC, less than {every} ago"
        return done
    columns = set(table.toDF().columns)
    if "ts" in columns:
        cutoff = (now - timedelta(days=contract.retention_days)).replace(tzinfo=None)
        table.delete(f"ts < timestamp'{cutoff:%Y-%m-%d %H:%M:%S}'")
        commit = table.history(1).first()
        if commit["operation"] == "DELETE":
            done.expired_rows = int(commit["operationMetrics"].get("numDeletedRows", 0))
    zorder = [c for c in ("_device", "ts") if c in columns]
    optimize = table.optimize()
    optimize.executeZOrderBy(*zorder) if zorder else optimize.executeCompaction()
    done.optimized = True
    table.vacuum()  # the table's delta.deletedFileRetentionDuration
    done.vacuumed = True
    logger.info("upkeep %s: %d expired rows deleted, compacted by %s, vacuumed", path, done.expired_rows, zorder)
    return done
