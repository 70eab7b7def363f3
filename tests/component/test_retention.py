"""Retention on local Spark: data past its contract's retention never reaches silver, and
every count says what retention removed.

A record already past its contract's ``retention_days`` when it arrives is quarantined at
bronze as ``expired``; a row that passes it between landing and refinement is counted as
expired by the privacy report instead of being written; and the run's retention step
deletes what earlier runs wrote, on bronze as on silver, and says how many rows it took.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable

from fieldloop.catalog import list_tables
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import load_contracts
from fieldloop.keys import load_key_ring
from ingestion.simulator import FleetSpec
from refinement.run import refine
from tests.fleet_rows import simulate

CAMERAS = "camera-meta-public"  # kept 365 days


@pytest.fixture(autouse=True)
def key_ring(lake_cfg: FieldloopConfig) -> None:
    """The test lake's pseudonym keys (its source is a file of the test's own)."""
    load_key_ring(lake_cfg.key_source, create_for=[c.tenant for c in load_contracts().values()])


def rows(path: str) -> list[dict]:
    return DeltaTable(path).to_pyarrow_table().to_pylist() if Path(path, "_delta_log").is_dir() else []


def test_a_fleet_started_400_days_ago_is_quarantined_as_expired_and_never_reaches_silver(
    spark, lake_cfg: FieldloopConfig, write_bronze
) -> None:
    contracts = load_contracts()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=400)
    sent = simulate(FleetSpec(devices=10, seconds=10, rate_hz=2, seed=5, start=start))
    # the Osaka-only robot stream is never read into this Tokyo lake (test_residency_placement)
    sent = [s for s in sent if "ap-northeast-1" in contracts[s.contract_id].allowed_regions]
    per_contract = Counter(s.contract_id for s in sent)
    expired = {cid for cid in per_contract if contracts[cid].retention_days < 400}
    assert CAMERAS in expired and expired != set(per_contract), "some contracts keep data longer than 400 days"

    write_bronze(sent, 0)
    lake = lake_cfg.lake
    for cid, n in per_contract.items():
        bronze, quarantine = (
            rows(f"{lake}/bronze/{contracts[cid].table}"),
            rows(f"{lake}/quarantine/{contracts[cid].table}"),
        )
        if cid in expired:
            assert Counter(r["reason"] for r in quarantine) == {"expired": n}, cid
            assert bronze == [], cid
            assert all(r["_value"] is None for r in quarantine), "data past its retention is not kept, even raw"
        else:
            assert len(bronze) == n and quarantine == [], cid

    result = refine(lake_cfg, spark=spark)
    for report in result.reports:
        assert report.reconciles, report.table
        if report.contract in expired:
            assert report.rows_in == report.rows_out == 0, report.table
            assert rows(report.path) == [], f"{report.table}: nothing is written to silver"
    assert any(r.rows_out for r in result.reports if r.contract not in expired)

    # consumed = bronze + quarantine + duplicates, for every contract, from the lake's own counts
    tables = {(t.layer, t.name): t for t in list_tables(lake_cfg)}
    for cid, n in per_contract.items():
        bronze, quarantine = (tables.get((layer, contracts[cid].table)) for layer in ("bronze", "quarantine"))
        landed = (bronze.rows + (bronze.duplicates_dropped or 0) if bronze else 0) + (
            quarantine.rows if quarantine else 0
        )
        assert landed == n, cid


def test_rows_that_outlive_their_retention_are_counted_not_written_then_deleted(
    spark, lake_cfg: FieldloopConfig, write_bronze
) -> None:
    """Rows within retention when they land, past it when refined: the report counts them as
    expired and silver never holds them; what earlier runs wrote is deleted from silver and
    from bronze by the same run's retention step, and the reports say how many rows it took."""
    now = datetime.now(UTC).replace(microsecond=0)
    earlier = [
        s
        for s in simulate(FleetSpec(devices=10, seconds=10, rate_hz=2, seed=5, start=now - timedelta(days=360)))
        if s.contract_id == CAMERAS
    ]
    write_bronze(earlier, 0)
    [first] = refine(lake_cfg, [CAMERAS], spark=spark, clock=lambda: now).reports
    assert first.rows_out == len(earlier) and first.reconciles

    later = [
        s
        for s in simulate(FleetSpec(devices=10, seconds=10, rate_hz=2, seed=6, start=now - timedelta(days=358)))
        if s.contract_id == CAMERAS
    ]
    write_bronze(later, 1)
    # refined ten days on: every camera row is now past its 365 days
    result = refine(lake_cfg, [CAMERAS], spark=spark, clock=lambda: now + timedelta(days=10))
    [second] = result.reports
    assert second.rows_out == 0, "rows past retention are not written"
    assert second.rows_in == second.expired_rows == len(later) and second.reconciles
    assert second.retention_deleted == len(earlier), "the first run's rows, deleted from silver by this run"
    assert rows(second.path) == []
    saved = json.loads(Path(second.location).read_text())
    assert (saved["expired_rows"], saved["retention_deleted"], saved["reconciles"]) == (len(later), len(earlier), True)

    # bronze: retention took every row, and the lake's counts still add up
    bronze_path = f"{lake_cfg.lake}/bronze/camera_meta_public"
    assert rows(bronze_path) == []
    assert {u.path: u.expired_rows for u in result.upkeep}[bronze_path] == len(earlier) + len(later)
    [bronze] = [t for t in list_tables(lake_cfg) if (t.layer, t.name) == ("bronze", "camera_meta_public")]
    assert bronze.retention_deleted == len(earlier) + len(later)
    assert bronze.rows + (bronze.duplicates_dropped or 0) + bronze.retention_deleted == len(earlier) + len(later)
