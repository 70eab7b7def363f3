"""Retention: how long a contract's data may be kept, on every layer, and whether a table can
hold rows past it.

A contract's ``retention_days`` bounds its data wherever it is: bronze quarantines a record
already past it as ``expired`` (and keeps none of its bytes), refinement counts a row that
passed it before being refined instead of writing it, and each table's upkeep deletes rows
as they pass it - bronze, quarantine, silver and gold alike - then VACUUMs their files after
:func:`vacuum_grace_days`. Whether a table can hold such rows is read from the Delta log's
file statistics (the minimum of its time column), without Spark, so a run with nothing to
delete costs no Spark job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fieldloop.contracts import DataContract

TIMESTAMP_TYPES = ("timestamp-millis", "timestamp-micros")


def cutoff(contract: DataContract, now: datetime) -> datetime:
    """The oldest event time ``contract`` lets a row have at ``now``: older rows are past retention."""
    return now - timedelta(days=contract.retention_days)


def vacuum_grace_days(contract: DataContract) -> int:
    """Days VACUUM keeps files removed from a table: a week, or less for short retention."""
    return max(1, min(7, contract.retention_days // 4))


def file_retention_properties(contract: DataContract) -> dict[str, str]:
    """Delta properties that make VACUUM remove deleted rows' files within the grace period."""
    return {"delta.deletedFileRetentionDuration": f"interval {vacuum_grace_days(contract)} days"}


def event_time_field(schema: Mapping[str, Any]) -> str | None:
    """The field of an Avro record schema (parsed) that retention counts from.

    ``ts`` when the record has one, else its first timestamp field (a DP aggregate's
    ``window_start``); None if it has no time at all.
    """
    fields = schema.get("fields", [])
    names = [f["name"] for f in fields]
    if "ts" in names:
        return "ts"
    for f in fields:
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        if any(isinstance(t, dict) and t.get("logicalType") in TIMESTAMP_TYPES for t in types):
            return str(f["name"])
    return None


def may_hold_before(table: Any, column: str, when: datetime) -> bool:
    """Whether the Delta table (a ``deltalake`` handle) can hold a row whose ``column`` is before ``when``.

    Read from the add actions' statistics alone: a file counts when its minimum is before
    ``when``, or when it has rows with a value in ``column`` but no minimum recorded for it.
    A column the table lacks holds no such row.
    """
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0 or column not in [f.name for f in table.schema().fields]:
        return False
    if f"min.{column}" not in actions.column_names:
        return True  # no statistics on the column: it may
    records = actions.column("num_records").to_pylist()
    nulls = (
        actions.column(f"null_count.{column}").to_pylist()
        if f"null_count.{column}" in actions.column_names
        else [None] * actions.num_rows
    )
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    for lowest, rows, null in zip(actions.column(f"min.{column}").to_pylist(), records, nulls, strict=True):
        if lowest is None:
            if rows and null != rows:  # values without a recorded minimum
                return True
            continue
        if isinstance(lowest, datetime) and lowest.tzinfo is None:
            lowest = lowest.replace(tzinfo=UTC)  # a timestamp without zone is UTC in this lake
        if lowest < when:
            return True
    return False


def deletion_metadata(contract: DataContract, column: str, before: datetime, now: datetime) -> dict[str, Any]:
    """The ``userMetadata`` of a retention DELETE: a note for ``fieldloop tables`` and what it deleted."""
    note = (
        f"retention: rows with {column} before {before:%Y-%m-%d %H:%M} UTC deleted "
        f"({contract.retention_days} days of contract {contract.id})"
    )
    return {
        "notes": [note],
        "retention": {"column": column, "before": before.isoformat(), "at": now.isoformat(), "run": uuid.uuid4().hex},
    }


def deleted_by_retention(history: list[dict[str, Any]], run: str | None = None) -> int:
    """Rows the retention DELETEs among ``history``'s commits removed (only the one of ``run``, if given)."""
    total = 0
    for commit in history:
        try:
            meta = json.loads(commit.get("userMetadata") or "null")["retention"]
        except (ValueError, KeyError, TypeError):
            continue
        if commit.get("operation") == "DELETE" and (run is None or meta.get("run") == run):
            total += int((commit.get("operationMetrics") or {}).get("numDeletedRows", 0))
    return total
