"""Lineage records round-trip through Delta table properties and MLflow tags."""

from __future__ import annotations

import pytest

from fieldloop.classes import DataClass
from fieldloop.lineage import LineageError, ModelLineage, TableGovernance, TableLineage


def test_table_governance_round_trips_through_properties() -> None:
    gov = TableGovernance(
        DataClass.RESTRICTED,
        "plant-sensors-acme-steel",
        "ap-northeast-1",
        appi_level="pseudonymized",
        tenant="acme-steel",
        contract_version=3,
        policy_version="p7",
    )
    props = gov.to_delta_properties()
    assert props["fieldloop.class"] == "restricted"
    assert props["fieldloop.tenant"] == "acme-steel"
    assert all(isinstance(v, str) for v in props.values())
    assert TableGovernance.from_delta_properties(props) == gov


def test_table_without_governance_is_explained() -> None:
    with pytest.raises(LineageError, match="not written by fieldloop"):
        TableGovernance.from_delta_properties({"delta.appendOnly": "false"})


def test_model_lineage_round_trips_through_tags() -> None:
    inputs = [
        TableLineage("gold/frames", "/lake/gold/frames", 12, DataClass.PUBLIC, "vehicle-frames-public"),
        TableLineage("gold/acme", "/lake/gold/acme", 4, DataClass.RESTRICTED, "frames-acme", "acme"),
    ]
    lineage = ModelLineage(inputs, {"git_commit": "abc123"})
    tags = lineage.to_mlflow_tags()
    assert tags["fieldloop.lineage.tables"] == "gold/frames@v12,gold/acme@v4"
    assert tags["fieldloop.lineage.classes"] == "public,restricted"
    assert tags["fieldloop.lineage.tenants"] == "acme"
    assert tags["fieldloop.lineage.git_commit"] == "abc123"
    back = ModelLineage.from_mlflow_tags({**tags, "mlflow.user": "x"})
    assert back.inputs == tuple(inputs)
    assert back.extra == {"git_commit": "abc123"}


def test_missing_or_oversized_lineage() -> None:
    with pytest.raises(LineageError, match="no fieldloop lineage tags"):
        ModelLineage.from_mlflow_tags({})
    many = [TableLineage(f"gold/t{i}", f"/lake/gold/t{i}" * 5, i, DataClass.PUBLIC, "c") for i in range(200)]
    with pytest.raises(LineageError, match="over MLflow's 8000"):
        ModelLineage(many).to_mlflow_tags()


def test_lineage_feeds_the_training_rule() -> None:
    item = TableLineage("gold/acme", "/p", 1, DataClass.RESTRICTED, "frames-acme", "acme")
    training = item.training_input(frozenset())
    assert (training.table, training.data_class, training.tenant) == ("gold/acme", DataClass.RESTRICTED, "acme")
