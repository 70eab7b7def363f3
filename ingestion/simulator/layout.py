"""The fleet file: who the simulated devices belong to and which contracts their streams go to.

Device physics is code; tenants are data. ``fleet.toml`` (shipped with this package) names,
per kind of device, the data contracts its streams are sent under, and for vehicles the
groups their pattern cycles through (city, frames/camera/telemetry contracts, VIN makers,
driver ids, model). :func:`load_layout` validates a file completely before any device is
built and fails naming the file and the field at fault::

    [vehicle]
    cities = { tokyo = [35.6812, 139.7671] }      # centre [latitude, longitude], degrees

    [[vehicle.groups]]                             # the n-th vehicle is in group n mod len(groups)
    city = "tokyo"                                 # a key of vehicle.cities
    frames_contract = "vehicle-frames-public"
    camera_contract = "camera-meta-public"         # optional; absent: no camera stream
    telemetry_contract = "fleet-telemetry"
    wmi = ["JTD", "JN1"]                           # VIN maker codes, one drawn per vehicle
    driver_id_prefix = "drv-"
    model_name = "fieldloop.vehicle-longitudinal"

    [robot]
    joints_contract = "robot-joints-kansai-robotics"
    telemetry_contract = "fleet-telemetry"
    device_id_prefix = "ksr-osaka-arm-"
    model_name = "fieldloop.grasp.kansai-robotics"
    model_version = "12"

    [furnace]
    sensors_contract = "plant-sensors-acme-steel"
    site = "JP-CHB-01"
"""

from __future__ import annotations

import functools
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingestion.errors import SimulationError
from ingestion.simulator.vin import VIN_CHARS

_SLUG = re.compile(r"^[a-z][a-z0-9-]{2,63}$")


def _contract_id(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"'{value}' is not a contract id (a lowercase slug: a-z, 0-9, -; 3-64 characters)")
    return value


def _wmi(value: str) -> str:
    if len(value) != 3 or not set(value) <= set(VIN_CHARS):
        raise ValueError(f"'{value}' is not a maker code (3 VIN characters: A-Z without I, O, Q, and 0-9)")
    return value


ContractId = Annotated[str, AfterValidator(_contract_id)]
Wmi = Annotated[str, AfterValidator(_wmi)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class VehicleGroup(BaseModel):
    """Vehicles that share a city, an owner and the contracts their streams go to."""

    model_config = _STRICT

    city: str = Field(description="where they drive: a key of the vehicle kind's cities")
    frames_contract: ContractId = Field(description="contract of their driving frames (every tick)")
    camera_contract: ContractId | None = Field(
        None, description="contract of their front camera's metadata (every 2nd tick); none: no camera stream"
    )
    telemetry_contract: ContractId = Field(description="contract of their model telemetry (every 10th tick)")
    wmi: tuple[Wmi, ...] = Field(description="maker codes their VINs start with; one drawn per vehicle")
    driver_id_prefix: str = Field(max_length=32, description="prefix of their drivers' ids (a 5-digit number follows)")
    model_name: str = Field(min_length=1, description="the driving model their telemetry reports on")

    @field_validator("wmi")
    @classmethod
    def _some_maker(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # checked here, not with min_length, so a bad code is reported once, not also as "empty"
        if not value:
            raise ValueError("give at least one maker code")
        return value


class VehicleKind(BaseModel):
    """Vehicles: the cities they drive in and the groups the fleet's vehicles cycle through."""

    model_config = _STRICT

    cities: dict[str, tuple[Latitude, Longitude]] = Field(
        min_length=1, description="city centres by name: (latitude, longitude) in degrees"
    )
    groups: tuple[VehicleGroup, ...] = Field(min_length=1, description="the n-th vehicle is in group n mod len")

    @model_validator(mode="after")
    def _known_cities(self) -> VehicleKind:
        for n, group in enumerate(self.groups):
            if group.city not in self.cities:
                raise ValueError(
                    f"groups.{n}.city: '{group.city}' is not in cities ({', '.join(sorted(self.cities))}); add it there"
                )
        return self

    def group(self, ordinal: int) -> VehicleGroup:
        """The group of the ``ordinal``-th vehicle of the fleet."""
        return self.groups[ordinal % len(self.groups)]


class RobotKind(BaseModel):
    """Robot arms: their cell's naming, contracts and grasp model."""

    model_config = _STRICT

    joints_contract: ContractId = Field(description="contract of their joint states (every tick)")
    telemetry_contract: ContractId = Field(description="contract of their model telemetry (every 10th tick)")
    device_id_prefix: str = Field(min_length=1, description="prefix of their ids (a 3-digit number follows)")
    model_name: str = Field(min_length=1, description="the grasp model their telemetry reports on")
    model_version: str = Field(min_length=1, description="that model's version")


class FurnaceKind(BaseModel):
    """Blast-furnace sensors: their plant and contract."""

    model_config = _STRICT

    sensors_contract: ContractId = Field(description="contract of their readings (every tick)")
    site: str = Field(min_length=1, description="the plant site they report from")


class FleetLayout(BaseModel):
    """A validated fleet file; see the module docstring for its format."""

    model_config = _STRICT

    vehicle: VehicleKind
    robot: RobotKind
    furnace: FurnaceKind


def load_layout(path: Path | None = None) -> FleetLayout:
    """Read and validate a fleet file.

    Args:
        path: the TOML file; default the ``fleet.toml`` shipped with this package.

    Raises:
        SimulationError: naming the file and the field at fault.
    """
    source = resources.files(__package__) / "fleet.toml" if path is None else path
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as e:
        raise SimulationError(f"fleet file {source}: cannot be read ({e.strerror or e})") from e
    except tomllib.TOMLDecodeError as e:
        raise SimulationError(f"fleet file {source}: not valid TOML: {e}") from e
    try:
        return FleetLayout.model_validate(data)
    except ValidationError as e:
        raise SimulationError(f"fleet file {source}: {_field_errors(e)}") from e


@functools.cache
def default_layout() -> FleetLayout:
    """The fleet shipped with this package (read once)."""
    return load_layout()


def _field_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (remove it or fix its spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        # a rule across fields starts with the field it is about, relative to where it ran
        found = re.match(r"^([\w.]+): (.*)$", message, re.DOTALL)
        if found and item["type"] == "value_error":
            field, message = ".".join(p for p in (field, found[1]) if p), found[2]
        parts.append(f"{field or 'fleet'}: {message}")
    return "; ".join(parts)
