"""Lineage records: what a table is, and what a model was made from.

Two carriers, one vocabulary:

* :class:`TableGovernance` travels with a Delta table as table properties
  (``fieldloop.class``, ``fieldloop.tenant``, ``fieldloop.contract``, ...), so any
  reader of the table (Spark, ``deltalake``, a person running ``DESCRIBE DETAIL``)
  sees its class, tenant, contract, residency and APPI level.
* :class:`ModelLineage` travels with a model version as MLflow tags: each input table
  at the Delta version read, and the union of their classes, tenants and contracts.

Both round-trip: ``from_*`` reads back exactly what ``to_*`` wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from fieldloop.classes import DataClass, TrainingInput
from fieldloop.errors import FieldloopError
from fieldloop.registry import LINEAGE_TAG_PREFIX

TAG_PREFIX = LINEAGE_TAG_PREFIX
# MLflow refuses tag values over 8000 characters (MAX_TAG_VAL_LENGTH in 3.x).
MLFLOW_TAG_LIMIT = 8000

AppiLevel = Literal["raw", "pseudonymized", "anonymized", "statistical"]


class LineageError(FieldloopError):
    """Lineage is missing, malformed or too large to record."""


@dataclass(frozen=True)
class TableGovernance:
    """Governance facts of one Delta table, stored as its table properties."""

    data_class: DataClass
    contract_id: str
    residency_region: str
    appi_level: AppiLevel = "raw"
    tenant: str | None = None
    contract_version: int = 1
    policy_version: str | None = None

    def to_delta_properties(self) -> dict[str, str]:
        """Table properties (all strings) for ``TBLPROPERTIES`` or ``configuration=``."""
        props = {
            "fieldloop.class": str(self.data_class),
            "fieldloop.contract": self.contract_id,
            "fieldloop.contract_version": str(self.contract_version),
            "fieldloop.residency_region": self.residency_region,
            "fieldloop.appi_level": self.appi_level,
        }
        if self.tenant:
            props["fieldloop.tenant"] = self.tenant
        if self.policy_version:
            props["fieldloop.policy_version"] = self.policy_version
        return props

    @classmethod
    def from_delta_properties(cls, props: Mapping[str, str]) -> TableGovernance:
        """Read back what :meth:`to_delta_properties` wrote.

        Raises:
            LineageError: the table carries no fieldloop governance properties.
        """
        try:
            return cls(
                data_class=DataClass(props["fieldloop.class"]),
                contract_id=props["fieldloop.contract"],
                residency_region=props["fieldloop.residency_region"],
                appi_level=props.get("fieldloop.appi_level", "raw"),  # type: ignore[arg-type]
                tenant=props.get("fieldloop.tenant"),
                contract_version=int(props.get("fieldloop.contract_version", "1")),
                policy_version=props.get("fieldloop.policy_version"),
            )
        except (KeyError, ValueError) as e:
            raise LineageError(
                f"table properties lack fieldloop governance ({e}); the table was not written by fieldloop "
                "or its properties were removed: rewrite it through a fieldloop job"
            ) from e


@dataclass(frozen=True)
class TableLineage:
    """One input a model read: which table, at which Delta version, under which contract."""

    table: str
    path: str
    delta_version: int
    data_class: DataClass
    contract_id: str
    tenant: str | None = None

    @classmethod
    def of(cls, table: str, path: str, delta_version: int, governance: TableGovernance) -> TableLineage:
        return cls(table, path, delta_version, governance.data_class, governance.contract_id, governance.tenant)

    def training_input(self, allowed_uses: frozenset) -> TrainingInput:  # type: ignore[type-arg]
        """The facts :func:`fieldloop.classes.training_violations` needs, with the contract's uses."""
        return TrainingInput(self.table, self.data_class, self.tenant, self.contract_id, allowed_uses)


@dataclass(frozen=True)
class ModelLineage:
    """Everything a model version was made from, as MLflow tags."""

    inputs: tuple[TableLineage, ...]
    extra: Mapping[str, str] = field(default_factory=dict)

    def __init__(self, inputs: Sequence[TableLineage], extra: Mapping[str, str] | None = None) -> None:
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "extra", dict(extra or {}))

    @property
    def data_classes(self) -> list[str]:
        return sorted({str(i.data_class) for i in self.inputs})

    @property
    def tenants(self) -> list[str]:
        return sorted({i.tenant for i in self.inputs if i.tenant})

    @property
    def contracts(self) -> list[str]:
        return sorted({i.contract_id for i in self.inputs})

    def to_mlflow_tags(self) -> dict[str, str]:
        """Tags for ``MlflowClient.set_model_version_tag`` / ``mlflow.set_tags``.

        Raises:
            LineageError: a tag would exceed MLflow's value limit.
        """
        tags = {
            f"{TAG_PREFIX}inputs": json.dumps([asdict(i) for i in self.inputs], sort_keys=True),
            f"{TAG_PREFIX}tables": ",".join(f"{i.table}@v{i.delta_version}" for i in self.inputs),
            f"{TAG_PREFIX}classes": ",".join(self.data_classes),
            f"{TAG_PREFIX}tenants": ",".join(self.tenants),
            f"{TAG_PREFIX}contracts": ",".join(self.contracts),
        }
        tags.update({f"{TAG_PREFIX}{k}": v for k, v in self.extra.items()})
        for key, value in tags.items():
            if len(value) > MLFLOW_TAG_LIMIT:
                raise LineageError(
                    f"lineage tag {key} is {len(value)} characters, over MLflow's {MLFLOW_TAG_LIMIT}; "
                    "log the full lineage as an artifact and keep the tag to a summary"
                )
        return tags

    @classmethod
    def from_mlflow_tags(cls, tags: Mapping[str, str]) -> ModelLineage:
        """Read back what :meth:`to_mlflow_tags` wrote.

        Raises:
            LineageError: the tags carry no lineage (the version was not registered by fieldloop).
        """
        raw = tags.get(f"{TAG_PREFIX}inputs")
        if raw is None:
            raise LineageError("this model version has no fieldloop lineage tags; it cannot be trusted or rolled out")
        try:
            inputs = [TableLineage(**{**item, "data_class": DataClass(item["data_class"])}) for item in json.loads(raw)]
        except (ValueError, TypeError, KeyError) as e:
            raise LineageError(f"lineage tag {TAG_PREFIX}inputs is malformed: {e}") from e
        known = {"inputs", "tables", "classes", "tenants", "contracts"}
        extra = {
            k[len(TAG_PREFIX) :]: v
            for k, v in tags.items()
            if k.startswith(TAG_PREFIX) and k[len(TAG_PREFIX) :] not in known
        }
        return cls(inputs, extra)
