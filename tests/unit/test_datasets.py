"""Gold datasets: declared in the contracts, laid out by name, refused when they break a rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldloop.contracts import load_contracts, packaged_contracts_dir, parse_contract
from fieldloop.datasets import TASK_LAYOUTS, GoldKind, gold_tables, layout, training_tables
from fieldloop.errors import ContractError
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
