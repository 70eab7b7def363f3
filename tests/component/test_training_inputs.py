"""Which gold tables a training run reads: the rule picks the defaults and refuses the rest.

Gold tables written by Spark with fieldloop's governance properties (the Delta writer of
the ``deltalake`` package refuses custom table properties, so Spark writes them here as
refinement does).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from fieldloop.classes import DataClass, ModelTarget
from fieldloop.config import load_config
from fieldloop.contracts import load_contracts
from fieldloop.errors import ContaminationError
from tests.synthetic_gold import VEHICLE_SCHEMA, write_gold
from training_jobs.data import default_inputs, read, resolve
from training_jobs.errors import DatasetError
from training_jobs.synthetic import T0
from training_jobs.tasks import get_task

pytestmark = pytest.mark.component


def test_inputs_default_to_what_the_rule_allows_and_explicit_violations_are_refused(spark, tmp_path: Path) -> None:
    cfg = load_config({"FIELDLOOP_HOME": str(tmp_path), "FIELDLOOP_LAKE_URI": str(tmp_path / "lake")})
    contracts = load_contracts()
    task = get_task("vehicle-longitudinal")
    lake = str(tmp_path / "lake")
    rows = [(d, T0 + timedelta(seconds=i), [float(i)] * 53, 0.5, False) for i, d in enumerate(["b", "a", "a"])]
    write_gold(
        spark, lake, "vehicle_longitudinal_public", rows, VEHICLE_SCHEMA, DataClass.PUBLIC, "vehicle-frames-public"
    )
    write_gold(
        spark,
        lake,
        "vehicle_longitudinal_acme_mobility",
        rows[:1],
        VEHICLE_SCHEMA,
        DataClass.RESTRICTED,
        "vehicle-frames-acme-mobility",
        "acme-mobility",
    )
    # Public and named like the task's tables, but declared by no contract: not a training dataset.
    write_gold(
        spark, lake, "vehicle_longitudinal_scratch", rows, VEHICLE_SCHEMA, DataClass.PUBLIC, "vehicle-frames-public"
    )
    base, tenant = ModelTarget(task.name), ModelTarget(task.name, "acme-mobility")
    assert default_inputs(cfg, task, base, contracts) == (
        ["vehicle_longitudinal_public"],
        ["vehicle_longitudinal_acme_mobility (contract-use, restricted-not-in-base)"],
    )
    assert [p.name for p in resolve(cfg, task, tenant, (), contracts)] == [
        "vehicle_longitudinal_acme_mobility",
        "vehicle_longitudinal_public",
    ]
    with pytest.raises(
        ContaminationError, match=r"gold/vehicle_longitudinal_acme_mobility: .*\[rule: restricted-not-in-base\]"
    ):
        resolve(cfg, task, base, ("vehicle_longitudinal_acme_mobility",), contracts)
    with pytest.raises(DatasetError, match="no gold table 'vehicle_longitudinal_nope'") as missing:
        resolve(cfg, task, base, ("vehicle_longitudinal_nope",), contracts)
    assert missing.value.table == "gold/vehicle_longitudinal_nope"
    with pytest.raises(DatasetError, match="not a vehicle-longitudinal training dataset") as undeclared:
        resolve(cfg, task, base, ("vehicle_longitudinal_scratch",), contracts)
    assert undeclared.value.table == "gold/vehicle_longitudinal_scratch"
    with pytest.raises(DatasetError, match="versions run from 0 to 1"):
        resolve(cfg, task, base, ("vehicle_longitudinal_public@7",), contracts)

    (public,) = resolve(cfg, task, base, ("vehicle_longitudinal_public@1",), contracts)
    rows = read(cfg, task, public)
    assert rows.device.tolist() == ["a", "a", "b"] and rows.x.shape == (3, 53)  # sorted by device, then time


def test_hard_case_tables_are_no_default_input_and_the_rule_refuses_a_tenants_to_the_base_model(
    spark, tmp_path: Path
) -> None:
    cfg = load_config({"FIELDLOOP_HOME": str(tmp_path), "FIELDLOOP_LAKE_URI": str(tmp_path / "lake")})
    contracts = load_contracts()
    task = get_task("vehicle-longitudinal")
    lake = str(tmp_path / "lake")
    rows = [("a", T0 + timedelta(seconds=i), [float(i)] * 53, 0.5, False) for i in range(2)]
    write_gold(
        spark, lake, "vehicle_longitudinal_public", rows, VEHICLE_SCHEMA, DataClass.PUBLIC, "vehicle-frames-public"
    )
    write_gold(
        spark,
        lake,
        "hard_cases_vehicle_longitudinal_public",
        rows,
        VEHICLE_SCHEMA,
        DataClass.PUBLIC,
        "hard-cases-public",
    )
    write_gold(
        spark,
        lake,
        "hard_cases_vehicle_longitudinal_acme_mobility",
        rows,
        VEHICLE_SCHEMA,
        DataClass.RESTRICTED,
        "hard-cases-acme-mobility",
        "acme-mobility",
    )
    base, tenant = ModelTarget(task.name), ModelTarget(task.name, "acme-mobility")
    # the defaults are what they were: the task's training datasets only, hard cases neither chosen nor listed
    assert default_inputs(cfg, task, base, contracts) == (["vehicle_longitudinal_public"], [])
    assert [p.name for p in resolve(cfg, task, tenant, (), contracts)] == ["vehicle_longitudinal_public"]
    # named with --table: a tenant's hard cases never reach the base model
    with pytest.raises(
        ContaminationError,
        match=r"gold/hard_cases_vehicle_longitudinal_acme_mobility: .*\[rule: restricted-not-in-base\]",
    ):
        resolve(cfg, task, base, ("hard_cases_vehicle_longitudinal_acme_mobility",), contracts)
    # and how hard cases join a training run is not decided yet: not a training dataset
    with pytest.raises(DatasetError, match="not a vehicle-longitudinal training dataset"):
        resolve(cfg, task, base, ("hard_cases_vehicle_longitudinal_public",), contracts)
