"""Table upkeep: retention on every layer, compaction with Z-order, VACUUM.

For each table of a refined stream - bronze, quarantine, silver and gold alike:

1. **retention** (:func:`expire`): rows whose time column is older than the contract's
   ``retention_days`` are deleted (a Delta DELETE: the rows leave the current version at
   once). Whether any can be that old is read from the Delta log's file statistics first,
   without Spark; the DELETE runs once some row is more than ``every`` past retention, so
   steady ageing costs one DELETE a day, not one per run, and no row outlives its
   retention by more than ``every`` (plus the VACUUM grace for its files). The commit
   says why in its ``userMetadata`` notes, and how many rows it took is in its metrics:
   ``fieldloop tables`` shows both;
2. **compaction** (:func:`compact`, silver and the quality quarantine): ``OPTIMIZE ...
   ZORDER BY`` the device and time columns the table has, so reads of one device's history
   or of a time range skip most files. Bronze is not compacted: refinement reads it by
   version through its change feed, which needs the files each version wrote;
3. **VACUUM** with the table's own ``delta.deletedFileRetentionDuration`` (a few days, set
   from the contract when the table was created), after which deleted rows' files are
   physically gone.

Compaction and VACUUM run at most once per ``every`` (a day) per table, the first time a
day after fieldloop first saw it; when they last ran is kept next to the table
(``<table>/_upkeep/last.json``; Delta ignores ``_``-prefixed folders), so deciding that
nothing is due reads two small files and starts no Spark job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fieldloop.catalog import find_table
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import DataContract
from fieldloop.retention import cutoff, deleted_by_retention, deletion_metadata, may_hold_before

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

DAY = timedelta(days=1)
MARKER = "_upkeep/last.json"


@dataclass
class Upkeep:
    """What one run's upkeep did to one table."""

    path: str
    expired_rows: int = 0  # deleted by retention in this run
    optimized: bool = False
    vacuumed: bool = False
    skipped: str | None = None  # why compaction and VACUUM did not run

    @property
    def table(self) -> str:
        """``<layer>/<name>``, as ``fieldloop tables`` names it."""
        return "/".join(self.path.rstrip("/").split("/")[-2:])


def expire(
    spark: SparkSession,
    cfg: FieldloopConfig,
    path: str,
    contract: DataContract,
    column: str | None,
    now: datetime,
    every: timedelta = DAY,
    table: Any = None,
) -> int:
    """Delete the rows of the table at ``path`` whose ``column`` is past ``contract``'s retention at ``now``.

    Returns how many rows went (0 when nothing was due: no table, no such column, or no row
    more than ``every`` past retention by the log's statistics). ``table``: the table's
    ``deltalake`` handle, if the caller has it open already.
    """
    if table is None and column:
        table = find_table(cfg, path)
    oldest = cutoff(contract, now if now.tzinfo else now.replace(tzinfo=UTC))
    if table is None or column is None or not may_hold_before(table, column, oldest - every):
        return 0
    meta = deletion_metadata(contract, column, oldest, now)
    conf = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(conf, json.dumps(meta))
    try:
        before = f"timestamp'{oldest.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}'"  # the session's time zone is UTC
        spark.sql(f"DELETE FROM delta.`{path}` WHERE `{column}` < {before}")
    finally:
        spark.conf.unset(conf)
    # found by its run id: a streaming job may have committed to the table since
    deleted = deleted_by_retention(find_table(cfg, path).history(50), run=meta["retention"]["run"])
    logger.info("retention %s: %d rows with %s before %s deleted", path, deleted, column, oldest)
    return deleted


def compact(
    spark: SparkSession,
    path: str,
    now: datetime,
    every: timedelta = DAY,
    zorder: tuple[str, ...] = ("_device", "ts"),
    optimize: bool = True,
) -> Upkeep:
    """Compact (Z-ordered by those of ``zorder`` the table has) and VACUUM ``path``, once per ``every``.

    ``optimize=False`` only VACUUMs: for tables read by version (bronze, whose change feed
    refinement reads, and its quarantine) and tables rewritten whole at each build (gold).
    """
    from delta.tables import DeltaTable

    done = Upkeep(path)
    marker = _read_marker(spark, path)
    if marker is None:  # a table seen for the first time: just made, nothing to compact yet
        _write_marker(spark, path, {"first_seen": now.isoformat()})
        done.skipped = f"first seen {now:%Y-%m-%d %H:%M} UTC; compacted and vacuumed from {now + every:%Y-%m-%d}"
        return done
    last = datetime.fromisoformat(marker.get("upkeep") or marker["first_seen"])
    if timedelta(0) <= now - last < every:
        done.skipped = f"last upkeep {last:%Y-%m-%d %H:%M} UTC, less than {every} ago"
        return done
    table = DeltaTable.forPath(spark, path)
    order: list[str] = []
    if optimize:
        columns = set(table.toDF().columns)
        order = [c for c in zorder if c in columns]
        files = table.optimize()
        files.executeZOrderBy(*order) if order else files.executeCompaction()
        done.optimized = True
    table.vacuum()  # the table's delta.deletedFileRetentionDuration
    done.vacuumed = True
    _write_marker(spark, path, {"first_seen": marker.get("first_seen"), "upkeep": now.isoformat()})
    logger.info("upkeep %s: %s, vacuumed", path, f"compacted by {order}" if optimize else "not compacted")
    return done


def maintain(
    spark: SparkSession,
    cfg: FieldloopConfig,
    path: str,
    contract: DataContract,
    column: str | None,
    now: datetime | None = None,
    every: timedelta = DAY,
    optimize: bool = True,
) -> Upkeep:
    """:func:`expire` rows past retention, then :func:`compact` the table if that is due."""
    now = now or datetime.now(UTC)
    table = find_table(cfg, path)
    if table is None:
        return Upkeep(path, skipped="no table")
    expired = expire(spark, cfg, path, contract, column, now, every, table)
    done = compact(spark, path, now, every, optimize=optimize)
    done.expired_rows = expired
    return done


def _marker_path(spark: SparkSession, table: str) -> Any:
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{table.rstrip('/')}/{MARKER}")
    return path, path.getFileSystem(spark._jsc.hadoopConfiguration())


def _read_marker(spark: SparkSession, table: str) -> dict[str, Any] | None:
    """When the table's upkeep last ran (through Hadoop's file system: local or s3a)."""
    path, fs = _marker_path(spark, table)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        return json.loads(bytes(stream.readAllBytes()).decode("utf-8"))
    except ValueError:
        return None
    finally:
        stream.close()


def _write_marker(spark: SparkSession, table: str, data: dict[str, Any]) -> None:
    path, fs = _marker_path(spark, table)
    out = fs.create(path, True)
    try:
        out.write(bytearray(json.dumps(data).encode("utf-8")))
    finally:
        out.close()
