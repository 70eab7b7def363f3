"""Data classes and the one rule that decides what may train what.

Weights contaminated by another tenant's restricted data, or by raw secret data, cannot
be cleaned afterwards, so :func:`training_violations` is asked *before* a model is
trained or registered, with the lineage of every input. The rule, per input:

* ``secret``: trains nothing, anywhere. Only its DP or synthetic derivatives leave the
  site, and they arrive as ``derived``.
* ``restricted``: only a model scoped to the same tenant; never base weights.
* ``derived``: follows its contract; a tenant-scoped derivative behaves like
  ``restricted`` data of that tenant.
* ``public``: any model.

and for every class, the input's contract must allow the use: ``base_training`` for a
base model, ``tenant_finetune`` for a tenant-scoped one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from fieldloop.errors import ContaminationError

_TENANT = re.compile(r"^[a-z][a-z0-9-]{1,31}$")


class DataClass(StrEnum):
    """How far a record may travel; see DESIGN.md, "Data classes and contracts"."""

    PUBLIC = "public"
    RESTRICTED = "restricted"
    SECRET = "secret"
    DERIVED = "derived"


class Use(StrEnum):
    """What a contract may allow its data to be used for."""

    BASE_TRAINING = "base_training"
    TENANT_FINETUNE = "tenant_finetune"
    RAG = "rag"
    EVALUATION = "evaluation"


def valid_tenant(tenant: str) -> bool:
    """Tenant ids are short lowercase slugs: they appear in topic, table and model names."""
    return bool(_TENANT.match(tenant))


@dataclass(frozen=True)
class ModelTarget:
    """The model a training run would produce: ``fieldloop.<task>`` or ``fieldloop.<task>.<tenant>``."""

    task: str
    tenant: str | None = None

    @property
    def name(self) -> str:
        return f"fieldloop.{self.task}" + (f".{self.tenant}" if self.tenant else "")

    @property
    def required_use(self) -> Use:
        return Use.TENANT_FINETUNE if self.tenant else Use.BASE_TRAINING


@dataclass(frozen=True)
class TrainingInput:
    """What the rule needs to know of one input table (usually built from its lineage)."""

    table: str
    data_class: DataClass
    tenant: str | None
    contract_id: str
    allowed_uses: frozenset[Use]


@dataclass(frozen=True)
class Violation:
    """One input that may not train the target, and the rule it breaks."""

    table: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.table}: {self.detail} [rule: {self.rule}]"


def training_violations(inputs: Iterable[TrainingInput], target: ModelTarget) -> list[Violation]:
    """Every reason these inputs may not train ``target``; empty when they may.

    Args:
        inputs: the lineage of each table the run reads.
        target: the model the run would register.
    """
    found: list[Violation] = []
    for item in inputs:
        cls = item.data_class
        if cls is DataClass.SECRET:
            found.append(
                Violation(
                    item.table,
                    "secret-never-trains",
                    "raw secret data may train no model; use its DP or synthetic derivative",
                )
            )
            continue
        scoped = cls is DataClass.RESTRICTED or (cls is DataClass.DERIVED and item.tenant)
        if cls is DataClass.RESTRICTED and not item.tenant:
            found.append(
                Violation(
                    item.table,
                    "restricted-needs-tenant",
                    "restricted data without a tenant cannot be attributed; fix its contract",
                )
            )
        elif scoped and target.tenant is None:
            found.append(
                Violation(
                    item.table,
                    "restricted-not-in-base",
                    f"{cls} data of tenant '{item.tenant}' may not train base model {target.name}; "
                    f"train fieldloop.{target.task}.{item.tenant} instead",
                )
            )
        elif scoped and item.tenant != target.tenant:
            found.append(
                Violation(
                    item.table,
                    "tenant-isolation",
                    f"{cls} data of tenant '{item.tenant}' may not train {target.name} of tenant '{target.tenant}'",
                )
            )
        if target.required_use not in item.allowed_uses:
            allowed = ", ".join(sorted(item.allowed_uses)) or "nothing"
            found.append(
                Violation(
                    item.table,
                    "contract-use",
                    f"contract {item.contract_id} allows {allowed}, not {target.required_use}",
                )
            )
    return found


def enforce_training_rule(inputs: Sequence[TrainingInput], target: ModelTarget) -> None:
    """Raise :class:`ContaminationError` naming every offending table and rule.

    Raises:
        ContaminationError: at least one input may not train ``target``.
    """
    violations = training_violations(inputs, target)
    if violations:
        lines = "\n  ".join(str(v) for v in violations)
        raise ContaminationError(f"refused to train {target.name}; nothing was registered:\n  {lines}")
