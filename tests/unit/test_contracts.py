"""Data contracts: the packaged ones load, and each kind of bad contract names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldloop.classes import DataClass, Use
from fieldloop.contracts import load_contracts, parse_contract
from fieldloop.errors import ContractError

VALID = """
id = "plant-sensors-acme"
version = 1
stream = "plant_sensors"
schema_version = 1
data_class = "restricted"
tenant = "acme-steel"
allowed_uses = ["tenant_finetune", "evaluation"]
redistribution = "none"
ip_owner = "ACME Steel"
retention_days = 365
synthetic_conversion = "allowed"
allowed_regions = ["ap-northeast-1"]
"""


def edit(text: str, **changes: str | None) -> str:
    """VALID with keys replaced (value is raw TOML) or removed (None)."""
    lines = []
    for line in text.strip().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in changes:
            if changes[key] is not None:
                lines.append(f"{key} = {changes.pop(key)}")
            else:
                changes.pop(key)
            continue
        lines.append(line)
    lines += [f"{k} = {v}" for k, v in changes.items() if v is not None]
    return "\n".join(lines) + "\n"


def test_packaged_contracts_cover_every_class() -> None:
    contracts = load_contracts(deployment_regions=["ap-northeast-1", "ap-northeast-3"])
    classes = {c.data_class for c in contracts.values()}
    assert classes == set(DataClass)
    topics = {c.id: c.topic for c in contracts.values()}
    assert topics["vehicle-frames-public"] == "fieldloop.public.vehicle_frames.v1"
    assert topics["plant-sensors-acme-steel"] == "fieldloop.restricted.acme-steel.plant_sensors.v1"
    assert topics["fleet-telemetry"] == "fieldloop.fleet.telemetry.v1"


def test_valid_contract_parses() -> None:
    contract = parse_contract(VALID, "test.toml")
    assert contract.tenant == "acme-steel"
    assert contract.allowed_uses == {Use.TENANT_FINETUNE, Use.EVALUATION}
    assert contract.training_input("gold/x").contract_id == "plant-sensors-acme"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tenant": None}, "tenant: restricted data needs the tenant it belongs to"),
        ({"ip_owner": None}, "ip_owner: required field is missing"),
        ({"colour": '"red"'}, "colour: unknown field"),
        ({"data_class": '"confidential"'}, "data_class: Input should be 'public', 'restricted', 'secret' or 'derived'"),
        ({"allowed_uses": '["training"]'}, "allowed_uses"),
        ({"allowed_uses": '["base_training"]'}, "allowed_uses: restricted data may never train base weights"),
        ({"retention_days": "0"}, "retention_days"),
        ({"allowed_regions": '["japan"]'}, "allowed_regions: 'japan' is not an AWS region name"),
        ({"redistribution": '"public"'}, "redistribution: restricted data cannot be 'public'"),
        ({"data_class": '"public"'}, "tenant: public data belongs to no tenant"),
        ({"data_class": '"secret"'}, "synthetic_conversion: secret data must be 'required'"),
        (
            {"data_class": '"secret"', "synthetic_conversion": '"required"'},
            "allowed_uses: raw secret data trains nothing",
        ),
        ({"data_class": '"derived"'}, "derived_from: a derived stream must name the contracts it derives from"),
        ({"id": '"Plant Sensors"'}, "id: 'Plant Sensors' must be a lowercase slug"),
        ({"stream": '"plant-sensors"'}, "stream: 'plant-sensors' must be snake_case"),
        ({"tenant": '"ACME"'}, "tenant: 'ACME' must be a lowercase slug"),
        ({"topic": '"plant"'}, "topic: 'plant' must look like fieldloop.<name>.v<N>"),
    ],
)
def test_invalid_contract_names_the_field(changes: dict[str, str | None], expected: str) -> None:
    with pytest.raises(ContractError) as excinfo:
        parse_contract(edit(VALID, **changes), "streams/plant.toml")
    message = str(excinfo.value)
    assert message.startswith("contract streams/plant.toml: ")
    assert expected in message


def test_regions_must_lie_within_the_deployment() -> None:
    text = edit(VALID, allowed_regions='["ap-northeast-1", "us-east-1"]')
    with pytest.raises(ContractError, match="allowed_regions: us-east-1 outside this deployment's allowed regions"):
        parse_contract(text, "x.toml", deployment_regions=["ap-northeast-1", "ap-northeast-3"])


def test_not_toml() -> None:
    with pytest.raises(ContractError, match=r"contract x\.toml: not valid TOML"):
        parse_contract("id = ", "x.toml")


def test_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no contracts"):
        load_contracts(tmp_path)
    (tmp_path / "a.toml").write_text(VALID)
    (tmp_path / "b.toml").write_text(VALID)
    with pytest.raises(ContractError, match="id: 'plant-sensors-acme' is already used"):
        load_contracts(tmp_path)
    (tmp_path / "b.toml").write_text(edit(VALID, id='"other-id"'))
    with pytest.raises(ContractError, match="already governed by plant-sensors-acme"):
        load_contracts(tmp_path)
    (tmp_path / "b.toml").write_text(
        edit(VALID, id='"audio-dp"', stream='"dp_stream"', data_class='"derived"', derived_from='["nowhere"]')
    )
    with pytest.raises(ContractError, match="derived_from: unknown contract 'nowhere'"):
        load_contracts(tmp_path)
