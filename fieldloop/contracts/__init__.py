"""Data contracts: one TOML file per stream, validated before anything uses the stream.

File format (every key required unless marked optional; unknown keys are an error)::

    id = "vehicle-frames-public"          # unique, lowercase slug; the contract's name
    version = 1                           # bumped on every change
    stream = "vehicle_frames"             # snake_case stream name (topic and table names)
    schema_version = 1                    # N in the topic name fieldloop.<class>[.<tenant>].<stream>.vN
    topic = "fieldloop.fleet.telemetry.v1"  # optional; overrides the derived topic name
    data_class = "public"                 # public | restricted | secret | derived
    tenant = "acme-steel"                 # required for restricted; optional for derived; absent for public
    allowed_uses = ["base_training", "tenant_finetune", "rag", "evaluation"]   # any subset
    redistribution = "consortium"         # none | tenant | consortium | public: who may receive copies
    ip_owner = "Fieldloop Consortium"     # who owns the data's IP
    retention_days = 365                  # rows older than this are deleted; also drives VACUUM
    synthetic_conversion = "allowed"      # forbidden | allowed | required (required for secret:
                                          # only DP/synthetic derivatives leave the site)
    allowed_regions = ["ap-northeast-1", "ap-northeast-3"]   # must lie within the deployment's
    derived_from = ["plant-audio-secret"] # optional; required for derived: source contract ids
    description = "..."                   # optional, free text

    [[gold]]                              # optional, repeatable: gold datasets built from the stream
    name = "vehicle_longitudinal_public"  # (fieldloop.datasets.GoldDataset: name, kind, task, source)
    task = "vehicle-longitudinal"

:func:`load_contracts` reads a directory of such files and fails on the first bad one
with the file and field at fault.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from enum import StrEnum
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fieldloop.classes import DataClass, TrainingInput, Use, valid_tenant
from fieldloop.datasets import GoldDataset, duplicate_names
from fieldloop.errors import ContractError
from fieldloop.residency import is_region_name

_SLUG = re.compile(r"^[a-z][a-z0-9-]{2,63}$")
_STREAM = re.compile(r"^[a-z][a-z0-9_]{2,63}$")


class Redistribution(StrEnum):
    NONE = "none"
    TENANT = "tenant"
    CONSORTIUM = "consortium"
    PUBLIC = "public"


class SyntheticConversion(StrEnum):
    FORBIDDEN = "forbidden"
    ALLOWED = "allowed"
    REQUIRED = "required"


class DataContract(BaseModel):
    """A validated data contract; see the module docstring for the file format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    version: int = Field(ge=1)
    stream: str
    schema_version: int = Field(ge=1)
    data_class: DataClass
    tenant: str | None = None
    allowed_uses: frozenset[Use]
    redistribution: Redistribution
    ip_owner: str = Field(min_length=1)
    retention_days: int = Field(ge=1, le=36500)
    synthetic_conversion: SyntheticConversion
    allowed_regions: tuple[str, ...] = Field(min_length=1)
    derived_from: tuple[str, ...] = ()
    topic_override: str | None = Field(None, alias="topic")
    description: str = ""
    gold: tuple[GoldDataset, ...] = ()

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError(f"'{value}' must be a lowercase slug (a-z, 0-9, -), 3-64 characters")
        return value

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str) -> str:
        if not _STREAM.match(value):
            raise ValueError(f"'{value}' must be snake_case (a-z, 0-9, _), 3-64 characters")
        return value

    @field_validator("topic_override")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^fieldloop\.[a-z0-9._-]+\.v\d+$", value):
            raise ValueError(f"'{value}' must look like fieldloop.<name>.v<N>")
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not valid_tenant(value):
            raise ValueError(f"'{value}' must be a lowercase slug (a-z, 0-9, -), 2-32 characters")
        return value

    @field_validator("allowed_regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            if not is_region_name(region):
                raise ValueError(f"'{region}' is not an AWS region name (e.g. ap-northeast-1)")
        return value

    @model_validator(mode="after")
    def _class_rules(self) -> DataContract:
        cls = self.data_class
        if cls is DataClass.RESTRICTED and not self.tenant:
            raise ValueError("tenant: restricted data needs the tenant it belongs to")
        if cls is DataClass.PUBLIC and self.tenant:
            raise ValueError("tenant: public data belongs to no tenant; name its owner in ip_owner instead")
        if cls is DataClass.RESTRICTED and Use.BASE_TRAINING in self.allowed_uses:
            raise ValueError("allowed_uses: restricted data may never train base weights; remove base_training")
        if cls is DataClass.RESTRICTED and self.redistribution in (Redistribution.CONSORTIUM, Redistribution.PUBLIC):
            raise ValueError(f"redistribution: restricted data cannot be '{self.redistribution}'; use none or tenant")
        if cls is DataClass.SECRET:
            if self.synthetic_conversion is not SyntheticConversion.REQUIRED:
                raise ValueError(
                    "synthetic_conversion: secret data must be 'required' (only derivatives leave the site)"
                )
            if self.allowed_uses & {Use.BASE_TRAINING, Use.TENANT_FINETUNE}:
                raise ValueError("allowed_uses: raw secret data trains nothing; remove base_training/tenant_finetune")
            if self.redistribution is not Redistribution.NONE:
                raise ValueError("redistribution: secret data must be 'none'")
        if cls is DataClass.SECRET and self.gold:
            raise ValueError("gold: raw secret data never reaches the cloud, so no gold table is built from it")
        if cls is DataClass.DERIVED and not self.derived_from:
            raise ValueError("derived_from: a derived stream must name the contracts it derives from")
        return self

    @property
    def topic(self) -> str:
        """``fieldloop.<class>[.<tenant>].<stream>.v<N>`` (DESIGN.md, "Names users will type")."""
        if self.topic_override:
            return self.topic_override
        tenant = f".{self.tenant}" if self.tenant else ""
        return f"fieldloop.{self.data_class}{tenant}.{self.stream}.v{self.schema_version}"

    @property
    def table(self) -> str:
        """Name of the stream's bronze and quarantine tables: ``vehicle-frames-public`` -> ``vehicle_frames_public``."""
        return self.id.replace("-", "_")

    def training_input(self, table: str) -> TrainingInput:
        """The facts the training rule needs about a table governed by this contract."""
        return TrainingInput(table, self.data_class, self.tenant, self.id, self.allowed_uses)


def _field_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "contract"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (remove it or fix its spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        # model-level rules start with the field they are about
        if field == "contract" and ": " in message:
            field, message = message.split(": ", 1)
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def parse_contract(text: str, source: str, deployment_regions: Iterable[str] | None = None) -> DataContract:
    """Validate one contract's TOML text.

    Args:
        text: the file's content.
        source: where it came from, for error messages.
        deployment_regions: the deployment's allowed regions; the contract may not exceed them.

    Raises:
        ContractError: naming ``source`` and the field at fault.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ContractError(f"contract {source}: not valid TOML: {e}") from e
    try:
        contract = DataContract.model_validate(data)
    except ValidationError as e:
        raise ContractError(f"contract {source}: {_field_errors(e)}") from e
    if deployment_regions is not None:
        outside = sorted(set(contract.allowed_regions) - set(deployment_regions))
        if outside:
            raise ContractError(
                f"contract {source}: allowed_regions: {', '.join(outside)} outside this deployment's allowed "
                f"regions ({', '.join(deployment_regions)}); remove them from the contract"
            )
    return contract


def packaged_contracts_dir() -> Path:
    """The example contracts shipped with fieldloop, one per stream."""
    return Path(str(resources.files("fieldloop.contracts") / "streams"))


def load_contracts(
    directory: Path | None = None, deployment_regions: Iterable[str] | None = None
) -> dict[str, DataContract]:
    """Load and validate every ``*.toml`` contract in ``directory``, keyed by id.

    Raises:
        ContractError: a file is invalid, or two files share an id or a topic.
    """
    directory = directory or packaged_contracts_dir()
    regions = list(deployment_regions) if deployment_regions is not None else None
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ContractError(f"no contracts (*.toml) in {directory}: add one per stream")
    contracts: dict[str, DataContract] = {}
    topics: dict[str, str] = {}
    for path in files:
        contract = parse_contract(path.read_text(encoding="utf-8"), str(path), regions)
        if contract.id in contracts:
            raise ContractError(f"contract {path}: id: '{contract.id}' is already used by another file; ids are unique")
        if contract.topic in topics:
            raise ContractError(
                f"contract {path}: stream: topic {contract.topic} is already governed by {topics[contract.topic]}"
            )
        contracts[contract.id] = contract
        topics[contract.topic] = contract.id
    for name, owners in duplicate_names((c.id, g.name) for c in contracts.values() for g in c.gold).items():
        raise ContractError(f"contracts {', '.join(owners)}: gold: each declares gold table '{name}'; names are unique")
    for contract in contracts.values():
        for source in contract.derived_from:
            if source not in contracts:
                raise ContractError(f"contract {contract.id}: derived_from: unknown contract '{source}'")
    return contracts
