"""The fleet file: tenants of the simulated fleet are data, validated before a device is built."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from fieldloop.contracts import DataContract, load_contracts
from fieldloop.wire import SchemaRegistry, default_registry
from ingestion.errors import SimulationError
from ingestion.simulator import Fleet, FleetSpec, MemoryRawSender, MemorySink, Simulation
from ingestion.simulator.layout import default_layout, load_layout

SHIPPED = resources.files("ingestion.simulator").joinpath("fleet.toml").read_text(encoding="utf-8")

# A fleet of one tenant's vans in a city the shipped file does not know, written as data only.
NAGOYA_VANS = """
[vehicle]
cities = { nagoya = [35.1709, 136.8815] }

[[vehicle.groups]]
city = "nagoya"
frames_contract = "vehicle-frames-acme-mobility"
telemetry_contract = "fleet-telemetry"
wmi = ["JTF"]
driver_id_prefix = "am-ngo-"
model_name = "fieldloop.vehicle-longitudinal.acme-mobility"

[robot]
joints_contract = "robot-joints-kansai-robotics"
telemetry_contract = "fleet-telemetry"
device_id_prefix = "ksr-kobe-arm-"
model_name = "fieldloop.grasp.kansai-robotics"
model_version = "13"

[furnace]
sensors_contract = "plant-sensors-acme-steel"
site = "JP-CHB-02"
"""


@pytest.fixture(scope="module")
def contracts() -> dict[str, DataContract]:
    return load_contracts()


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return default_registry()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_fleet_names_only_loaded_contracts(contracts: dict[str, DataContract]) -> None:
    layout = default_layout()
    vehicle = layout.vehicle
    named = {layout.robot.joints_contract, layout.robot.telemetry_contract, layout.furnace.sensors_contract}
    for group in vehicle.groups:
        named |= {group.frames_contract, group.telemetry_contract} | ({group.camera_contract} - {None})
    assert named <= set(contracts)
    assert [g.frames_contract for g in vehicle.groups].count("vehicle-frames-acme-mobility") == 1
    assert all(g.camera_contract is None for g in vehicle.groups if contracts[g.frames_contract].tenant)


def test_a_tenant_fleet_is_a_data_edit(
    tmp_path: Path, contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    layout = load_layout(write(tmp_path, NAGOYA_VANS))
    spec = FleetSpec(devices=10, seconds=5, rate_hz=2, seed=8)
    fleet = Fleet(spec, layout)
    vans = [d for d in fleet.devices if d.kind == "vehicle"]
    assert len(vans) == 5 and all(d.device_id.startswith("JTF") for d in vans)
    assert {d.device_id for d in fleet.devices if d.kind == "robot"} == {"ksr-kobe-arm-001", "ksr-kobe-arm-002"}
    items = list(fleet.items())
    frames = [i.record for i in items if i.contract_id == "vehicle-frames-acme-mobility"]
    assert frames and all(r["driver_id"].startswith("am-ngo-") and 34.9 < r["lat"] < 35.4 for r in frames)
    assert not any(i.contract_id == "camera-meta-public" for i in items), "a group without a camera has none"
    assert {i.record["site"] for i in items if i.contract_id == "plant-sensors-acme-steel"} == {"JP-CHB-02"}

    sink = MemorySink(contracts, registry)
    report = Simulation(spec, [], contracts, registry, layout).run(sink, MemoryRawSender())
    assert report.reconciles() and report.total.refused == 0
    assert set(report.streams) == {
        "vehicle-frames-acme-mobility",
        "fleet-telemetry",
        "robot-joints-kansai-robotics",
        "plant-sensors-acme-steel",
    }


def test_the_same_file_read_again_builds_the_same_fleet(tmp_path: Path) -> None:
    spec = FleetSpec(devices=12, seconds=3, rate_hz=5, seed=21)
    assert list(Fleet(spec, load_layout(write(tmp_path, SHIPPED))).items()) == list(Fleet(spec).items())


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (('site = "JP-CHB-01"', 'site = "JP-CHB-01"\ncolour = "red"'), "furnace.colour", "unknown field"),
        (('city = "osaka"', 'city = "nagoya"'), "vehicle.groups.1.city", "'nagoya' is not in cities"),
        (('wmi = ["JTF"]', 'wmi = ["IOQ"]'), "vehicle.groups.2.wmi.0", "'IOQ' is not a maker code"),
        (('wmi = ["JTF"]', "wmi = []"), "vehicle.groups.2.wmi", "at least one maker code"),
        (('model_version = "12"\n', ""), "robot.model_version", "required field is missing"),
        (
            ('joints_contract = "robot-joints-kansai-robotics"', 'joints_contract = "Robots!"'),
            "robot.joints_contract",
            "",
        ),
    ],
)
def test_a_bad_fleet_file_is_refused_naming_the_file_and_field(
    tmp_path: Path, change: tuple[str, str], field: str, says: str
) -> None:
    old, new = change
    assert old in SHIPPED
    path = write(tmp_path, SHIPPED.replace(old, new, 1))
    with pytest.raises(SimulationError) as refused:
        load_layout(path)
    assert str(refused.value).startswith(f"fleet file {path}: {field}: ")
    assert says in str(refused.value)


def test_a_fleet_file_that_is_not_toml_or_not_there_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match=r"fleet file .*fleet\.toml: not valid TOML"):
        load_layout(write(tmp_path, "[vehicle\n"))
    with pytest.raises(SimulationError, match=r"fleet file .*absent\.toml: cannot be read"):
        load_layout(tmp_path / "absent.toml")


def test_a_fleet_naming_a_contract_that_is_not_loaded_is_refused_before_it_runs(
    tmp_path: Path, contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    layout = load_layout(write(tmp_path, NAGOYA_VANS.replace("vehicle-frames-acme-mobility", "vehicle-frames-ngo")))
    with pytest.raises(SimulationError, match="vehicle-frames-ngo"):
        Simulation(FleetSpec(devices=3), [], contracts, registry, layout)
