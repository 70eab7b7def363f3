"""Privacy policies: per stream, what each field becomes on its way from bronze to silver.

One TOML file per contract in ``refinement/policies/<contract-id>.toml``, versioned with
the code and validated at job start against the stream's Avro schema: every field of the
schema has exactly one action, so a field added to a schema cannot slip into silver
unreviewed. The file also declares the table's APPI level, its quasi-identifiers and
sensitive attributes, and the quality expectations rows must meet.

Field actions::

    keep                                  unchanged
    drop                                  removed
    {action = "pseudonym", domain = "driver"}     keyed HMAC pseudonym (per tenant key)
    {action = "mesh", level = 4}          lat/lon -> Japanese grid square code (JIS X 0410)
                                          in column ``mesh``; level 3 = 1 km, 4 = 500 m, 5 = 250 m
    {action = "time_bucket", minutes = 15}        timestamp -> start of its bucket
    {action = "band", width = 5.0}        number -> lower edge of its band
    {action = "clip", min = 0, max = 40}  top/bottom coding
    {action = "scrub_text"}               identifiers in free text -> typed placeholders

A policy has one ``[output.<table>]`` per silver table it feeds (a stream may feed a
pseudonymized table for internal training and an anonymized one for sharing). The device
id of each row (bronze ``_device_id``) is governed by the table's ``device`` (``pseudonym``
or ``drop``). Anonymized tables (匿名加工情報) may not keep linking codes: no pseudonyms,
device dropped, and quasi-identifiers declared for the k-anonymity check.

A secret stream never reaches the cloud, so its policy has no tables: an ``[edge]``
section says what the device may release instead (``refinement/edge.py`` runs it): every
field ``keep`` (only the site) or ``drop``, the privacy unit, the window, and each DP
aggregate (``count``, ``sum`` or ``mean`` of a field, its bounds, contribution bound and ε),
sent under a derived contract that names the secret one in ``derived_from``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fieldloop.contracts import DataContract
from fieldloop.wire import RegisteredSchema
from refinement.errors import PolicyError
from refinement.ledger import DEFAULT_TZ

Level = Literal["pseudonymized", "anonymized", "statistical"]
MESH_COLUMN = "mesh"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldAction(_Strict):
    """What one field becomes."""

    action: Literal["keep", "drop", "pseudonym", "mesh", "time_bucket", "band", "clip", "scrub_text"]
    domain: str | None = Field(
        None, description="pseudonym: kind of identifier; the same raw id in the same domain links"
    )
    level: int | None = Field(None, ge=1, le=5, description="mesh: JIS X 0410 level (3 = 1 km, 4 = 500 m, 5 = 250 m)")
    minutes: int | None = Field(None, ge=1, description="time_bucket: bucket width (minutes)")
    width: float | None = Field(None, gt=0, description="band: band width (field's unit)")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_word(cls, value: Any) -> Any:
        return {"action": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _arguments(self) -> FieldAction:
        need = {"pseudonym": "domain", "mesh": "level", "time_bucket": "minutes", "band": "width"}
        if self.action in need and getattr(self, need[self.action]) is None:
            raise ValueError(f"action '{self.action}' needs '{need[self.action]}'")
        if self.action == "clip" and (self.min is None or self.max is None or self.min >= self.max):
            raise ValueError("action 'clip' needs min < max")
        return self


class Expectation(_Strict):
    """One quality rule; rows failing it go to quarantine under ``name``."""

    name: str
    rule: Literal["required", "range", "range_by", "monotonic", "unit_consistent", "in_set"]
    column: str | None = None
    columns: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    by: str | None = Field(None, description="range_by: the column whose value selects the range (e.g. unit)")
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    per: str | None = Field(None, description="unit_consistent: the column that must have one unit (e.g. sensor_id)")
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _arguments(self) -> Expectation:
        needs: dict[str, tuple[str, ...]] = {
            "required": ("columns",),
            "range": ("column",),
            "range_by": ("column", "by", "ranges"),
            "monotonic": ("column",),
            "unit_consistent": ("column", "per"),
            "in_set": ("column", "values"),
        }
        missing = [n for n in needs[self.rule] if not getattr(self, n)]
        if missing:
            raise ValueError(f"rule '{self.rule}' ({self.name}) needs {', '.join(missing)}")
        if self.rule == "range" and self.min is None and self.max is None:
            raise ValueError(f"rule 'range' ({self.name}) needs min, max or both")
        return self

    @property
    def used_columns(self) -> tuple[str, ...]:
        return tuple(c for c in (self.column, self.by, self.per, *self.columns) if c)


class TablePolicy(_Strict):
    """One output table of a stream: its APPI level and what each field becomes in it."""

    level: Level
    device: Literal["pseudonym", "drop", "keep"] = Field(
        description="the bronze device id: pseudonym, drop, or keep (not personal: a furnace sensor)"
    )
    fields: dict[str, FieldAction]
    quasi_identifiers: tuple[str, ...] = ()
    sensitive: tuple[str, ...] = ()
    trim_trips: bool = Field(False, description="anonymized vehicle data: cut each trip's start and end")

    @model_validator(mode="after")
    def _level_rules(self) -> TablePolicy:
        if self.level == "anonymized":
            linking = [n for n, a in self.fields.items() if a.action == "pseudonym"]
            if linking or self.device != "drop":
                what = f"fields {', '.join(linking)} are pseudonyms" if linking else 'device must be "drop"'
                raise ValueError(f"an anonymized table keeps no linking codes: {what}")
            if not self.quasi_identifiers:
                raise ValueError("an anonymized table declares its quasi_identifiers (checked for k-anonymity)")
        meshes = [n for n, a in self.fields.items() if a.action == "mesh"]
        if meshes and len(meshes) != 2:
            raise ValueError(f"mesh needs both the lat and the lon field, got {meshes}")
        if meshes and len({self.fields[n].level for n in meshes}) != 1:
            raise ValueError("lat and lon must use the same mesh level")
        notes = [
            c
            for c in (*self.quasi_identifiers, *self.sensitive)
            if c in self.fields and self.fields[c].action == "scrub_text"
        ]
        if notes:
            raise ValueError(
                f"{', '.join(notes)}: free text cannot be a quasi-identifier or sensitive attribute "
                "(its values are never the same twice); declare a generalized field instead"
            )
        if self.trim_trips and not {"lat", "lon", "ts"} <= set(self.fields):
            raise ValueError("trim_trips needs lat, lon and ts fields")
        return self

    @property
    def output_columns(self) -> list[str]:
        """Columns the table holds besides system columns, in order."""
        out: list[str] = []
        for name, act in self.fields.items():
            if act.action == "drop":
                continue
            col = MESH_COLUMN if act.action == "mesh" else name
            if col not in out:
                out.append(col)
        return out

    @property
    def pseudonym_fields(self) -> dict[str, str]:
        """Field -> domain for every pseudonymized field (the device id included)."""
        found = {n: str(a.domain) for n, a in self.fields.items() if a.action == "pseudonym"}
        if self.device == "pseudonym":
            found["_device_id"] = "device"
        return found

    def describe(self) -> dict[str, str]:
        """Field -> action as short text, for the privacy report."""

        def text(a: FieldAction) -> str:
            arg = {
                "pseudonym": a.domain,
                "mesh": f"level {a.level}",
                "time_bucket": f"{a.minutes} min",
                "band": a.width,
                "clip": f"[{a.min}, {a.max}]",
            }.get(a.action)
            return f"{a.action} ({arg})" if arg is not None else a.action

        return {"_device_id": self.device, **{n: text(a) for n, a in self.fields.items()}}

    def problems(self, schema: RegisteredSchema) -> list[str]:
        """Where this table's actions and the stream's schema disagree."""
        types = {f["name"]: f["type"] for f in schema.parsed["fields"]}
        problems = []
        unmapped = [f for f in types if f not in self.fields]
        unknown = [f for f in self.fields if f not in types]
        if unmapped:
            problems.append(f"fields without an action: {', '.join(unmapped)} (add them under fields)")
        if unknown:
            problems.append(f"actions for fields the schema lacks: {', '.join(unknown)}")
        for name, act in self.fields.items():
            base = _base_type(types.get(name))
            ok = {
                "mesh": ("double",),
                "band": ("double", "float", "int", "long"),
                "clip": ("double", "float", "int", "long"),
                "time_bucket": ("timestamp-millis",),
                "scrub_text": ("string",),
                "pseudonym": ("string",),
            }.get(act.action)
            if ok and base is not None and base not in ok:
                problems.append(f"{name}: action '{act.action}' does not apply to a {base}")
        columns = set(self.output_columns)
        for q in self.quasi_identifiers + self.sensitive:
            if q not in columns:
                problems.append(
                    f"'{q}' is declared a quasi-identifier or sensitive attribute but is not an output column"
                )
        return problems


class EdgeAggregate(_Strict):
    """One DP statistic a device releases per window of a secret stream."""

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="name of the released value (the record's metric)")
    query: Literal["count", "sum", "mean"]
    field: str | None = Field(None, description="sum/mean: the numeric field aggregated")
    bounds: tuple[float, float] | None = Field(None, description="sum/mean: values are clamped to [lower, upper]")
    per_unit: int = Field(
        1, ge=1, le=10000, description="most rows one privacy unit adds to a window (its contribution bound)"
    )
    epsilon: float = Field(gt=0, description="ε of one window's release")

    @model_validator(mode="after")
    def _arguments(self) -> EdgeAggregate:
        if self.query == "count" and (self.field or self.bounds):
            raise ValueError(f"{self.metric}: a count takes no field or bounds")
        if self.query != "count":
            if not self.field or self.bounds is None:
                raise ValueError(f"{self.metric}: a {self.query} needs field and bounds")
            lower, upper = self.bounds
            if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
                raise ValueError(f"{self.metric}: bounds must be finite with lower < upper, got {self.bounds}")
        return self


class EdgePolicy(_Strict):
    """What a device may release of a secret stream: DP aggregates per window, nothing raw.

    Every field of the stream's schema has an action, ``keep`` (sent with each aggregate;
    only the site may be) or ``drop`` (never leaves the device), so a field added to the
    schema cannot leave unreviewed. The privacy unit (a worker) is what the contribution
    bounds and ε protect.
    """

    release_contract: str = Field(description="the derived contract the aggregates are sent under")
    privacy_unit: str = Field(description="the field naming the person or thing protected (e.g. worker_id)")
    window_s: int = Field(300, ge=10, le=86400, description="length of a release window (seconds)")
    mechanism: Literal["laplace", "gaussian"] = Field("laplace", description="noise: laplace (pure ε) or gaussian")
    delta: float = Field(0.0, ge=0, lt=1, description="δ of each release; > 0 only with gaussian")
    period_tz: str = Field(DEFAULT_TZ, description="time zone of the monthly budget periods (IANA name)")
    fields: dict[str, Literal["keep", "drop"]]
    release: tuple[EdgeAggregate, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> EdgePolicy:
        if self.mechanism == "laplace" and self.delta != 0:
            raise ValueError("delta must be 0 with the laplace mechanism (pure ε); use mechanism='gaussian' for δ > 0")
        if self.mechanism == "gaussian" and self.delta == 0:
            raise ValueError("the gaussian mechanism needs delta > 0 (e.g. 1e-7)")
        metrics = [a.metric for a in self.release]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics must be unique, got {metrics}")
        return self

    def problems(self, schema: RegisteredSchema) -> list[str]:
        types = {f["name"]: _base_type(f["type"]) for f in schema.parsed["fields"]}
        problems = []
        unmapped = [f for f in types if f not in self.fields]
        if unmapped:
            problems.append(f"fields without an action: {', '.join(unmapped)} (add them under edge.fields)")
        if [f for f in self.fields if f not in types]:
            problems.append(
                f"actions for fields the schema lacks: {', '.join(f for f in self.fields if f not in types)}"
            )
        kept = [f for f, a in self.fields.items() if a == "keep" and f != "site"]
        if kept:
            problems.append(f"only the site may leave the device; {', '.join(kept)} must be drop")
        for name in ("site", "ts", self.privacy_unit):
            if name not in types:
                problems.append(f"the release needs field '{name}', which {schema.stream} lacks")
        for agg in self.release:
            if agg.field and types.get(agg.field) not in ("double", "float", "int", "long"):
                problems.append(f"{agg.metric}: field '{agg.field}' is not a number of {schema.stream}")
        return problems


class PrivacyPolicy(_Strict):
    """The policy of one contract's stream: quality rules and output tables (refinement), or,
    for a secret stream, the edge release (nothing of it reaches the cloud raw)."""

    contract: str
    version: int = Field(ge=1)
    expect: tuple[Expectation, ...] = ()
    output: dict[str, TablePolicy] = Field(default_factory=dict, description="silver table name -> its policy")
    edge: EdgePolicy | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> PrivacyPolicy:
        if self.edge is None and not self.output:
            raise ValueError(
                "a policy needs [output.<table>] (a stream refined in the cloud) or [edge] (a secret stream)"
            )
        if self.edge is not None and (self.output or self.expect):
            raise ValueError(
                "[edge] is for secret streams, which reach no silver table: remove [output] and [[expect]]"
            )
        return self

    def check_schema(self, schema: RegisteredSchema, source: str) -> None:
        """Every schema field has one action in every table, and every rule names a field.

        Raises:
            PolicyError: naming the tables and fields to fix.
        """
        fields = {f["name"] for f in schema.parsed["fields"]}
        problems = [f"[output.{name}] {p}" for name, table in self.output.items() for p in table.problems(schema)]
        if self.edge is not None:
            problems += [f"[edge] {p}" for p in self.edge.problems(schema)]
        for e in self.expect:
            problems += [
                f"expectation {e.name} uses '{c}', which is not a field of {schema.stream}"
                for c in e.used_columns
                if c not in fields
            ]
        if problems:
            raise PolicyError(f"{source} does not match {schema.stream}.v{schema.version}: " + "; ".join(problems))


def _base_type(avro: Any) -> str | None:
    if isinstance(avro, list):  # a union: its non-null branch
        branches = [b for b in avro if b != "null"]
        return _base_type(branches[0]) if len(branches) == 1 else None
    if isinstance(avro, dict):
        return avro.get("logicalType") or avro.get("type")
    return avro


def packaged_policies_dir() -> Path:
    return Path(str(resources.files("refinement") / "policies"))


def parse_policy(text: str, source: str) -> PrivacyPolicy:
    """Parse one policy file.

    Raises:
        PolicyError: not TOML or not a valid policy; the message names each bad key.
    """
    try:
        return PrivacyPolicy.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{source} is not valid TOML: {e}") from None
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in e.errors())
        raise PolicyError(f"{source}: {bad}") from None


def load_policies(
    contracts: Mapping[str, DataContract],
    registry: Any,
    directory: Path | None = None,
) -> dict[str, PrivacyPolicy]:
    """The policy of every contract, validated against its schema (secret ones: their edge release).

    Raises:
        PolicyError: a policy is missing, malformed, names an unknown contract or does not
            match its stream's schema. All problems are reported together.
    """
    folder = directory or packaged_policies_dir()
    policies: dict[str, PrivacyPolicy] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.toml")):
        try:
            policy = parse_policy(path.read_text(encoding="utf-8"), str(path))
            if policy.contract != path.stem:
                raise PolicyError(
                    f"{path}: names contract '{policy.contract}'; the file must be named {policy.contract}.toml"
                )
            if policy.contract not in contracts:
                raise PolicyError(f"{path}: no contract '{policy.contract}' exists")
            _check_kind(policy, contracts, str(path))
            policy.check_schema(registry.get(contracts[policy.contract].stream), str(path))
            policies[policy.contract] = policy
        except PolicyError as e:
            problems.append(str(e))
    for cid in sorted(contracts):
        if cid not in policies and not any(cid in p for p in problems):
            problems.append(f"contract '{cid}' has no privacy policy: add {folder / (cid + '.toml')}")
    if problems:
        raise PolicyError("invalid privacy policies:\n  " + "\n  ".join(problems))
    return policies


def _check_kind(policy: PrivacyPolicy, contracts: Mapping[str, DataContract], source: str) -> None:
    """Secret streams get an edge policy releasing under their derived contract; others get tables."""
    from fieldloop.classes import DataClass

    contract = contracts[policy.contract]
    secret = contract.data_class is DataClass.SECRET
    if secret and policy.edge is None:
        raise PolicyError(
            f"{source}: '{contract.id}' is secret and never reaches the cloud raw: its policy is an "
            "[edge] release of DP aggregates, not [output] tables"
        )
    if not secret and policy.edge is not None:
        raise PolicyError(f"{source}: [edge] is for secret streams; '{contract.id}' is {contract.data_class}")
    if policy.edge is None:
        return
    target = contracts.get(policy.edge.release_contract)
    if (
        target is None
        or target.data_class is not DataClass.DERIVED
        or contract.id not in target.derived_from
        or target.tenant != contract.tenant
    ):
        raise PolicyError(
            f"{source}: edge.release_contract '{policy.edge.release_contract}' must be a derived contract "
            f"of tenant '{contract.tenant}' naming '{contract.id}' in derived_from"
        )


@cache
def default_policies() -> dict[str, PrivacyPolicy]:
    """The packaged policies, validated against the packaged contracts and schemas."""
    from fieldloop.contracts import load_contracts
    from fieldloop.wire import default_registry

    return load_policies(load_contracts(), default_registry())


def output_tables(directory: Path | None = None) -> list[str]:
    """Names of every silver table the policies define, read without validating (cheap: for DAG files)."""
    names: list[str] = []
    for path in sorted((directory or packaged_policies_dir()).glob("*.toml")):
        names += list(tomllib.loads(path.read_text(encoding="utf-8")).get("output", {}))
    return sorted(names)
