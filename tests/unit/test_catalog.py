"""`fieldloop tables`: every Delta table in the lake with version, rows and governance."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable, write_deltalake

from fieldloop.catalog import duplicates_dropped, list_tables
from fieldloop.classes import DataClass
from fieldloop.cli import main
from fieldloop.config import load_config
from fieldloop.lineage import TableGovernance


@pytest.fixture()
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    gov = TableGovernance(DataClass.RESTRICTED, "plant-sensors-acme-steel", "ap-northeast-1", tenant="acme-steel")
    bronze = root / "bronze" / "plant_sensors_acme_steel"
    write_deltalake(
        str(bronze),
        pa.table({"_device_id": ["a", "b"], "_seq": [1, 2]}),
        commit_properties=_meta(valid=2, in_batch=1, inserted=2),
    )
    DeltaTable(str(bronze)).alter.set_table_properties(gov.to_delta_properties(), raise_if_not_exists=False)
    write_deltalake(
        str(bronze),
        pa.table({"_device_id": ["c"], "_seq": [3]}),
        mode="append",
        commit_properties=_meta(valid=3, in_batch=0, inserted=1),
    )  # 2 were already there
    write_deltalake(str(root / "quarantine" / "plant_sensors_acme_steel"), pa.table({"reason": ["truncated"]}))
    (root / "bronze" / "not_a_table").mkdir()
    return root


def _meta(valid: int, in_batch: int, inserted: int):
    from deltalake import CommitProperties

    return CommitProperties(
        custom_metadata={
            "userMetadata": json.dumps({"valid": valid, "in_batch_duplicates": in_batch, "inserted": inserted})
        }
    )


def test_list_tables_reads_versions_rows_and_governance(lake: Path) -> None:
    tables = list_tables(load_config({"FIELDLOOP_LAKE_URI": str(lake)}))
    assert [(t.layer, t.name) for t in tables] == [
        ("bronze", "plant_sensors_acme_steel"),
        ("quarantine", "plant_sensors_acme_steel"),
    ]
    bronze = tables[0]
    assert (bronze.version, bronze.rows) == (2, 3)
    assert bronze.properties["fieldloop.tenant"] == "acme-steel"
    assert bronze.duplicates_dropped == 1 + 2  # one in-batch duplicate, two already held
    assert tables[1].duplicates_dropped is None


def test_tables_command_json(lake: Path) -> None:
    result = CliRunner().invoke(main, ["tables", "--json"], env={"FIELDLOOP_LAKE_URI": str(lake)})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {d["layer"] for d in data} == {"bronze", "quarantine"}
    assert data[0]["properties"]["fieldloop.class"] == "restricted"


def test_duplicates_ignore_commits_without_counts() -> None:
    assert duplicates_dropped([{"operation": "WRITE"}, {"userMetadata": "not json"}]) is None
