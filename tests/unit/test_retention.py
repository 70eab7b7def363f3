"""Retention rules of the kernel: the time a stream's retention counts from, and what a table's
Delta log says about rows past it, read without Spark."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from fieldloop.contracts import load_contracts
from fieldloop.retention import (
    cutoff,
    deleted_by_retention,
    deletion_metadata,
    event_time_field,
    file_retention_properties,
    may_hold_before,
)
from fieldloop.wire import default_registry

CONTRACTS = load_contracts()


def test_retention_counts_from_each_streams_event_time() -> None:
    registry = default_registry()
    assert event_time_field(registry.get("vehicle_frames").parsed) == "ts"
    assert event_time_field(registry.get("worker_audio_dp").parsed) == "window_start"  # a DP window has no ts
    assert event_time_field({"type": "record", "name": "r", "fields": [{"name": "x", "type": "int"}]}) is None
    for c in CONTRACTS.values():
        assert event_time_field(registry.get(c.stream).parsed), f"{c.id}: retention needs a time to count from"


def test_cutoff_and_vacuum_grace_follow_the_contract() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    cameras, audio = CONTRACTS["camera-meta-public"], CONTRACTS["worker-audio-acme-steel"]
    assert cutoff(cameras, now) == now - timedelta(days=365)
    assert file_retention_properties(cameras) == {"delta.deletedFileRetentionDuration": "interval 7 days"}
    assert file_retention_properties(audio) == {"delta.deletedFileRetentionDuration": "interval 7 days"}  # 30 // 4


def test_the_log_says_whether_a_table_can_hold_rows_before_a_time(tmp_path: Path) -> None:
    times = [datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]
    path = str(tmp_path / "t")
    write_deltalake(path, pa.table({"ts": pa.array(times, pa.timestamp("us", tz="UTC")), "x": [1, 2]}))
    write_deltalake(path, pa.table({"ts": pa.array([None], pa.timestamp("us", tz="UTC")), "x": [3]}), mode="append")
    table = DeltaTable(path)
    assert may_hold_before(table, "ts", datetime(2025, 6, 1, tzinfo=UTC))
    assert not may_hold_before(table, "ts", datetime(2025, 1, 1, tzinfo=UTC))  # a file of nulls holds none
    assert not may_hold_before(table, "missing", datetime(2030, 1, 1, tzinfo=UTC))
    empty = str(tmp_path / "empty")
    write_deltalake(empty, pa.table({"ts": pa.array([], pa.timestamp("us", tz="UTC"))}))
    assert not may_hold_before(DeltaTable(empty), "ts", datetime(2030, 1, 1, tzinfo=UTC))


def test_rows_deleted_by_retention_are_read_from_the_log() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    cameras = CONTRACTS["camera-meta-public"]
    meta = deletion_metadata(cameras, "ts", cutoff(cameras, now), now)
    assert meta["notes"] == [
        "retention: rows with ts before 2025-12-07 00:00 UTC deleted (365 days of contract camera-meta-public)"
    ]
    history = [
        {"operation": "DELETE", "userMetadata": json.dumps(meta), "operationMetrics": {"numDeletedRows": "40"}},
        {"operation": "DELETE", "operationMetrics": {"numDeletedRows": "7"}},  # someone else's delete
        {"operation": "WRITE", "userMetadata": json.dumps({"batch": 0})},
    ]
    assert deleted_by_retention(history) == 40
    assert deleted_by_retention(history, run=meta["retention"]["run"]) == 40
    assert deleted_by_retention(history, run="another run") == 0
