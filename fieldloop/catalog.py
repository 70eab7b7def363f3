"""The lake's table catalog: every Delta table under ``<lake>/<layer>/<name>``.

Read with the ``deltalake`` package from the Delta log alone (no JVM, no data scan):
version, row count from the add actions' statistics, and the governance properties.
Each stage's tables appear here as soon as they exist.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fieldloop.config import FieldloopConfig
from fieldloop.retention import deleted_by_retention

LAYERS = ("bronze", "quarantine", "silver", "gold", "fleet")


@dataclass
class TableInfo:
    layer: str
    name: str
    path: str
    version: int
    rows: int
    properties: dict[str, str] = field(default_factory=dict)
    duplicates_dropped: int | None = None
    retention_deleted: int = 0  # rows retention deleted (past the contract's retention_days), from the log
    notes: list[str] = field(default_factory=list)  # what the newest commit says a reader should know

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def storage_options(cfg: FieldloopConfig) -> dict[str, str]:
    """deltalake storage options for the lake (S3 endpoint for on-prem or test servers)."""
    opts: dict[str, str] = {}
    if cfg.s3.endpoint_url:
        opts["AWS_ENDPOINT_URL"] = cfg.s3.endpoint_url
        opts["AWS_ALLOW_HTTP"] = "true"
    return opts


def open_table(cfg: FieldloopConfig, uri: str, version: int | None = None) -> Any:
    """The ``deltalake`` handle of the table at ``uri`` (its newest version unless ``version``),
    with the lake's storage options."""
    from deltalake import DeltaTable

    return DeltaTable(uri, version=version, storage_options=storage_options(cfg) or None)


def last_commit(cfg: FieldloopConfig, uri: str) -> tuple[int, int]:
    """(version, rows written) of the newest commit of the table at ``uri``, read from its log."""
    [commit] = open_table(cfg, uri).history(1)
    return int(commit["version"]), int((commit.get("operationMetrics") or {}).get("numOutputRows", 0))


# Commits that rewrite or tidy files without changing a table's rows.
_UPKEEP_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "ADD CONSTRAINT"})


def last_data_version(cfg: FieldloopConfig, uri: str) -> int:
    """The newest version of the table at ``uri`` that changed its rows.

    Compaction and VACUUM do not, nor a write that added and removed nothing (a run's
    marker that it read bronze versions with no new row). A reader that rebuilds from a
    table when it moved compares this, so upkeep and empty runs do not look like new data.
    """
    table = open_table(cfg, uri)
    for commit in table.history(50):
        if changed_rows(commit):
            return int(commit["version"])
    return 0


def changed_rows(commit: dict[str, Any]) -> bool:
    """Whether one entry of a table's Delta history changed its rows: not upkeep (compaction,
    VACUUM, properties), nor a write that added and removed nothing."""
    if commit.get("operation") in _UPKEEP_OPERATIONS:
        return False
    metrics = commit.get("operationMetrics") or {}
    counted = [k for k in ("numOutputRows", "numDeletedRows", "numRemovedFiles", "numCopiedRows") if k in metrics]
    return not counted or any(int(metrics[k] or 0) for k in counted)


def find_table(cfg: FieldloopConfig, uri: str) -> Any:
    """:func:`open_table`, or None when there is no Delta table at ``uri``."""
    from deltalake.exceptions import TableNotFoundError

    try:
        return open_table(cfg, uri)
    except TableNotFoundError:
        return None


def _table_dirs(cfg: FieldloopConfig) -> list[tuple[str, str, str]]:
    """(layer, name, uri) of every directory holding a ``_delta_log``."""
    lake = cfg.lake.rstrip("/")
    found = []
    if lake.startswith(("s3://", "s3a://")):
        import boto3

        parsed = urlparse(lake)
        s3 = boto3.client("s3", endpoint_url=cfg.s3.endpoint_url)
        prefix = parsed.path.lstrip("/")
        for layer in LAYERS:
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=parsed.netloc, Prefix=f"{prefix}/{layer}/".lstrip("/"), Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                    found.append((layer, name, f"s3://{parsed.netloc}/{common['Prefix'].rstrip('/')}"))
        return found
    root = Path(lake.removeprefix("file://"))
    for layer in LAYERS:
        folder = root / layer
        if folder.is_dir():
            found += [(layer, d.name, str(d)) for d in sorted(folder.iterdir()) if (d / "_delta_log").is_dir()]
    return found


def duplicates_dropped(history: list[dict[str, Any]]) -> int | None:
    """Duplicates the bronze job dropped from a bronze or quarantine table, from its commits'
    userMetadata (None if the bronze job never wrote it).

    Each bronze commit records ``valid`` (distinct keys the batch brought),
    ``in_batch_duplicates`` and ``inserted``; each quarantine commit ``quarantined`` (the
    batch's invalid records) and ``inserted``. A batch replayed after a crash commits
    nothing, so nothing is counted twice.
    """
    total, seen = 0, False
    for commit in history:
        try:
            meta = json.loads(commit.get("userMetadata") or "null")
            if "quarantined" in meta:
                total += int(meta["quarantined"]) - int(meta["inserted"])
            else:
                total += int(meta["valid"]) + int(meta["in_batch_duplicates"]) - int(meta["inserted"])
            seen = True
        except (ValueError, KeyError, TypeError):
            continue
    return total if seen else None


def commit_notes(history: list[dict[str, Any]]) -> list[str]:
    """The ``notes`` a stage left in the newest commit's userMetadata (e.g. DP releases it skipped)."""
    try:
        notes = json.loads(history[0].get("userMetadata") or "null")["notes"]
    except (IndexError, ValueError, KeyError, TypeError):
        return []
    return [str(n) for n in notes] if isinstance(notes, list) else []


def list_tables(cfg: FieldloopConfig) -> list[TableInfo]:
    """Every Delta table in the lake, sorted by layer and name."""
    tables = []
    for layer, name, uri in _table_dirs(cfg):
        table = open_table(cfg, uri)
        actions = table.get_add_actions(flatten=True)
        rows = sum(v or 0 for v in actions.column("num_records").to_pylist()) if actions.num_rows else 0
        info = TableInfo(layer, name, uri, table.version(), int(rows), dict(table.metadata().configuration))
        history = table.history()
        if layer in ("bronze", "quarantine"):
            info.duplicates_dropped = duplicates_dropped(history)
        info.retention_deleted = deleted_by_retention(history)
        info.notes = commit_notes(history[:1])
        tables.append(info)
    order = {layer: i for i, layer in enumerate(LAYERS)}
    return sorted(tables, key=lambda t: (order[t.layer], t.name))
