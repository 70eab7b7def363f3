"""Gold datasets: declared in the contracts, laid out by name, refused when they break a rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldloop.classes import ModelTarget, TrainingInput, enforce_training_rule
from fieldloop.contracts import load_contracts, packaged_contracts_dir, parse_contract
from fieldloop.datasets import TASK_LAYOUTS, GoldKind, gold_tables, hard_case_tables, layout, training_tables
from fieldloop.errors import ContaminationError, ContractError
from tests.unit.test_contracts import VALID

SECRET = (
    VALID.replace('data_class = "restricted"', 'data_class = "secret"')
    .replace('allowed_uses = ["tenant_finetune", "evaluation"]', 'allowed_uses = ["evaluation"]')
    .replace('synthetic_conversion = "allowed"', 'synthetic_conversion = "required"')
)


def test_the_packaged_contracts_declare_one_training_dataset_per_vehicle_contract_and_the_fleet_aggregates() -> None:
    tables = {t.name: t for t in gold_tables(load_contracts())}
    assert tables["vehicle_longitudinal_public"].contract.id == "vehicle-frames-public"
    assert tables["vehicle_longitudinal_acme_mobility"].contract.tenant == "acme-mobility"
    assert tables["plant_anomaly_acme_steel"].source == "plant_sensors_acme_steel"
    assert tables["fleet_telemetry_dp_daily"].kind is GoldKind.TELEMETRY_DP_DAILY
    assert [t.name for t in training_tables(load_contracts(), "vehicle-longitudinal")] == [
        "vehicle_longitudinal_acme_mobility",
        "vehicle_longitudinal_public",
    ]


def test_a_new_tenant_stream_brings_its_dataset_with_its_contract_file_alone(tmp_path: Path) -> None:
    for path in packaged_contracts_dir().glob("*.toml"):
        (tmp_path / path.name).write_text(path.read_text())
    new = VALID.replace("plant-sensors-acme", "plant-sensors-kobe-iron").replace("acme-steel", "kobe-iron")
    new = new.replace(
        'stream = "plant_sensors"',
        'stream = "plant_sensors"\ntopic = "fieldloop.restricted.kobe-iron.plant_sensors.v1"',
    )
    (tmp_path / "plant-sensors-kobe-iron.toml").write_text(
        new + '\n[[gold]]\nname = "plant_anomaly_kobe_iron"\ntask = "plant-anomaly"\n'
    )
    [kobe] = [t for t in training_tables(load_contracts(tmp_path), "plant-anomaly") if t.name.endswith("kobe_iron")]
    assert kobe.contract.tenant == "kobe-iron" and kobe.source == "plant_sensors_kobe_iron"


@pytest.mark.parametrize(
    ("gold", "message"),
    [
        ('name = "plant_x"\ntask = "no-such-task"', "task: no model task 'no-such-task'"),
        ('name = "plant_x"', "task: training dataset plant_x needs the model task"),
        ('name = "plant_x"\nkind = "telemetry-hourly"\ntask = "plant-anomaly"', "feeds no task"),
        ('name = "Plant-X"\ntask = "plant-anomaly"', "snake_case table name"),
        ('name = "plant_x"\ntask = "plant-anomaly"\ncolour = "red"', "unknown field"),
        ('name = "plant_x"\nkind = "hard-cases"', "hard-cases dataset plant_x needs the model task"),
        # a window of frames has no quality flag, and z-scores need all of a sensor's readings
        ('name = "plant_x"\nkind = "hard-cases"\ntask = "plant-anomaly"', "hard cases of plant-anomaly cannot"),
    ],
)
def test_a_bad_gold_declaration_names_its_field(gold: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse_contract(VALID + f"\n[[gold]]\n{gold}\n", "x.toml")


def test_raw_secret_data_declares_no_gold_table() -> None:
    with pytest.raises(ContractError, match="gold: raw secret data never reaches the cloud"):
        parse_contract(SECRET + '\n[[gold]]\nname = "audio_x"\nkind = "telemetry-hourly"\n', "x.toml")


def test_two_contracts_declaring_one_gold_table_are_refused(tmp_path: Path) -> None:
    for n, tenant in enumerate(("acme-steel", "kobe-iron")):
        text = VALID.replace("plant-sensors-acme", f"plant-sensors-{n}x").replace("acme-steel", tenant)
        text = text.replace("schema_version = 1", f"schema_version = {n + 1}")
        (tmp_path / f"plant-sensors-{n}x.toml").write_text(
            text + '\n[[gold]]\nname = "plant_shared"\ntask = "plant-anomaly"\n'
        )
    with pytest.raises(ContractError, match="each declares gold table 'plant_shared'"):
        load_contracts(tmp_path)


def test_features_are_found_by_name_not_by_index_arithmetic() -> None:
    vehicle = layout("vehicle-longitudinal")
    names = vehicle.names()
    assert len(names) == vehicle.width == 53
    assert names[vehicle.index("accel_mps2")] == "accel_mps2@0"  # the newest frame
    assert names[vehicle.index("speed_mps", frame=0)] == "speed_mps@-9"  # the oldest
    assert names[vehicle.index("perception.cyclists")] == "perception.cyclists"
    with pytest.raises(KeyError, match="no feature 'rpm'"):
        vehicle.index("rpm")
    with pytest.raises(KeyError, match="known tasks"):
        layout("no-such-task")
    assert set(TASK_LAYOUTS) == {"vehicle-longitudinal", "plant-anomaly"}


# -- hard cases --------------------------------------------------------------------------------
def test_hard_case_datasets_are_declared_per_task_and_scope_with_their_source_contract() -> None:
    contracts = load_contracts()
    tables = {t.name: t for t in hard_case_tables(contracts)}
    assert set(tables) == {
        "hard_cases_vehicle_longitudinal_public",
        "hard_cases_vehicle_longitudinal_acme_mobility",
    }  # none for acme-steel: plant-anomaly's rows cannot be built from a window
    public, acme = (
        tables["hard_cases_vehicle_longitudinal_public"],
        tables["hard_cases_vehicle_longitudinal_acme_mobility"],
    )
    assert (public.kind, public.task, public.source) == (
        GoldKind.HARD_CASES,
        "vehicle-longitudinal",
        "hard_cases_public",
    )
    assert (acme.contract.data_class, acme.contract.tenant) == ("restricted", "acme-mobility")
    assert acme.source == "hard_cases_acme_mobility"


def test_hard_cases_leave_the_tasks_default_training_tables_as_they_were_and_fine_tune_who_may_learn_them() -> None:
    from fieldloop.assets import gold_assets, hard_case_assets
    from training_jobs.schedule import models_for

    contracts = load_contracts()
    assert [t.name for t in training_tables(contracts, "vehicle-longitudinal")] == [
        "vehicle_longitudinal_acme_mobility",
        "vehicle_longitudinal_public",
    ]
    assert [t.name for t in training_tables(contracts)] == [
        "plant_anomaly_acme_steel",
        "vehicle_longitudinal_acme_mobility",
        "vehicle_longitudinal_public",
    ]
    assert [a.name for a in gold_assets(contracts, "vehicle-longitudinal")] == [
        "fieldloop.gold.vehicle_longitudinal_acme_mobility",
        "fieldloop.gold.vehicle_longitudinal_public",
    ]
    # the training DAG's schedule has the hard-case tables too (the loop's way back): new hard
    # cases fine-tune the models that may learn from them, as a training table's change would
    assert [a.name for a in hard_case_assets(contracts, "vehicle-longitudinal")] == [
        "fieldloop.gold.hard_cases_vehicle_longitudinal_acme_mobility",
        "fieldloop.gold.hard_cases_vehicle_longitudinal_public",
    ]
    assert models_for(contracts, ["hard_cases_vehicle_longitudinal_public"]) == models_for(
        contracts, ["vehicle_longitudinal_public"]
    )
    # the refinement DAG announces every gold table, hard cases included
    assert "fieldloop.gold.hard_cases_vehicle_longitudinal_public" in {a.name for a in gold_assets(contracts)}


def test_the_training_rule_refuses_a_tenants_hard_cases_to_the_base_model() -> None:
    contracts = load_contracts()
    [acme] = [t for t in hard_case_tables(contracts) if t.contract.tenant == "acme-mobility"]
    c = acme.contract
    hard = TrainingInput(f"gold/{acme.name}", c.data_class, c.tenant, c.id, frozenset(c.allowed_uses))
    with pytest.raises(ContaminationError, match=rf"gold/{acme.name}: .*\[rule: restricted-not-in-base\]"):
        enforce_training_rule([hard], ModelTarget("vehicle-longitudinal"))
    with pytest.raises(ContaminationError, match=r"\[rule: tenant-isolation\]"):
        enforce_training_rule([hard], ModelTarget("vehicle-longitudinal", "kobe-iron"))
    enforce_training_rule([hard], ModelTarget("vehicle-longitudinal", "acme-mobility"))  # its own tenant's model


@pytest.mark.parametrize(
    ("frames", "rows"),
    [
        (14, []),  # 10 frames of history and 5 to the label: 15 at least
        (15, [9]),
        (20, [9, 10, 11, 12, 13, 14]),
    ],
)
def test_a_window_holds_a_row_per_frame_with_full_history_and_its_label_inside(frames: int, rows: list[int]) -> None:
    vehicle = layout("vehicle-longitudinal")
    assert list(vehicle.window_rows(frames)) == rows
    assert bool(rows) == (frames >= vehicle.shortest_window)
    for newest in vehicle.window_rows(frames):
        assert newest - (vehicle.window - 1) >= 0 and newest + vehicle.horizon < frames


def test_a_hard_case_frame_carries_the_layouts_signals_then_its_extras() -> None:
    from actuation.agent.campaigns import campaign_signals

    vehicle = layout("vehicle-longitudinal")
    # what the agent sends is what gold lays out
    assert tuple(campaign_signals(vehicle)) == vehicle.frame_names
    assert vehicle.labelled_by_frames and not layout("plant-anomaly").labelled_by_frames
