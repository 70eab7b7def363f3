"""Training data: gold tables chosen for a model, pinned to Delta versions, checked, split by device.

A run reads every input at one Delta version fixed when it starts (time travel), so the
same versions and seed give the same model. Which tables may feed which model is decided
by the kernel's rule (:func:`fieldloop.classes.enforce_training_rule`) from each table's
*own* governance properties at that version, before a byte of data is read: the default
choice (public tables of the task for a base model, plus the tenant's own for a tenant
model) never breaks it, and an explicit ``--table`` that would is refused, naming it.

A task's tables are the training datasets the contracts declare for it
(:func:`fieldloop.datasets.training_tables`), and its rows are read by the task's
:class:`~fieldloop.datasets.FeatureLayout` (device, order and label columns).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fieldloop.classes import ModelTarget, TrainingInput, enforce_training_rule, training_violations
from fieldloop.contracts import DataContract
from fieldloop.datasets import GoldKind, training_tables
from fieldloop.datasets import gold_tables as declared_gold
from fieldloop.lineage import TableGovernance, TableLineage
from training_jobs.errors import DatasetError

if TYPE_CHECKING:
    from fieldloop.config import FieldloopConfig
    from training_jobs.tasks import Task

_PIN = re.compile(r"^(?P<name>[a-z0-9_]+)(?:@v?(?P<version>\d+))?$")


@dataclass(frozen=True)
class PinnedInput:
    """One gold table at the Delta version this run reads."""

    name: str  # table name under <lake>/gold
    path: str
    version: int
    governance: TableGovernance

    @property
    def table(self) -> str:
        return f"gold/{self.name}"

    def lineage(self) -> TableLineage:
        return TableLineage.of(self.table, self.path, self.version, self.governance)


@dataclass
class Rows:
    """Features, labels and the device of every row, in a fixed order."""

    x: np.ndarray  # float32 [N, D]
    y: np.ndarray  # float32 [N]
    device: np.ndarray  # object [N]

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask: np.ndarray) -> Rows:
        return Rows(self.x[mask], self.y[mask], self.device[mask])

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """The rows of every part, in order; empty parts are skipped.

        Raises:
            DatasetError: the parts' feature rows differ in width.
        """
        parts = [p for p in parts if len(p)]
        widths = sorted({p.x.shape[1] for p in parts})
        if len(widths) > 1:
            raise DatasetError(
                f"the inputs' feature rows differ in width ({widths}); train on tables of one gold "
                "layout (rebuild the older one with `fieldloop refine`)"
            )
        if not parts:
            return Rows(np.zeros((0, 0), np.float32), np.zeros(0, np.float32), np.zeros(0, object))
        return Rows(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.device for p in parts]),
        )


def parse_pin(text: str) -> tuple[str, int | None]:
    """``name`` or ``name@N`` (``gold/`` prefix allowed) -> (name, version or None)."""
    match = _PIN.match(text.removeprefix("gold/"))
    if not match:
        raise DatasetError(
            f"'{text}' is not a gold table reference; use NAME or NAME@VERSION, e.g. "
            "vehicle_longitudinal_public@3 (see `fieldloop tables`)",
            text,
        )
    version = match.group("version")
    return match.group("name"), int(version) if version is not None else None


def gold_tables(cfg: FieldloopConfig) -> dict[str, str]:
    """name -> path of every gold table in the lake."""
    from fieldloop.catalog import _table_dirs

    return {name: uri for layer, name, uri in _table_dirs(cfg) if layer == "gold"}


def pin(cfg: FieldloopConfig, name: str, version: int | None, tables: Mapping[str, str] | None = None) -> PinnedInput:
    """The table at ``version`` (default: its latest), with the governance it had then.

    ``tables`` is :func:`gold_tables` when the caller listed the lake already (one listing,
    not one per table: on S3 each is a request).
    """
    from deltalake.exceptions import TableNotFoundError

    from fieldloop.catalog import open_table

    tables = gold_tables(cfg) if tables is None else tables
    if name not in tables:
        raise DatasetError(
            f"no gold table '{name}' in {cfg.lake}; run `fieldloop refine` first "
            f"(gold tables here: {', '.join(sorted(tables)) or 'none'})",
            f"gold/{name}",
        )
    table = open_table(cfg, tables[name])
    latest = table.version()
    if version is not None and version != latest:
        if not 0 <= version < latest:
            raise DatasetError(
                f"gold/{name} has no version {version}; its versions run from 0 to {latest}", f"gold/{name}"
            )
        try:
            table = open_table(cfg, tables[name], version)
        except (TableNotFoundError, OSError, ValueError) as e:
            raise DatasetError(
                f"gold/{name}@v{version} can no longer be read ({e}); pin a later version", f"gold/{name}"
            ) from e
    governance = TableGovernance.from_delta_properties(table.metadata().configuration)
    return PinnedInput(name, tables[name], table.version(), governance)


def default_inputs(
    cfg: FieldloopConfig, task: Task, target: ModelTarget, contracts: Mapping[str, DataContract]
) -> tuple[list[str], list[str]]:
    """The task's gold tables the rule lets this model train on, at their latest versions,
    and the others, each with the rule that keeps it out."""
    usable, others = _usable_inputs(cfg, task, target, contracts, gold_tables(cfg))
    return [p.name for p in usable], others


def declared_tables(task: Task, contracts: Mapping[str, DataContract]) -> list[str]:
    """Names of the training datasets the contracts declare for ``task``, sorted."""
    return [t.name for t in training_tables(contracts, task.name)]


def _usable_inputs(
    cfg: FieldloopConfig,
    task: Task,
    target: ModelTarget,
    contracts: Mapping[str, DataContract],
    tables: Mapping[str, str],
) -> tuple[list[PinnedInput], list[str]]:
    """:func:`default_inputs`, with the chosen tables already pinned at their latest versions."""
    chosen, others = [], []
    for name in declared_tables(task, contracts):
        if name not in tables:  # declared, not built yet
            continue
        latest = pin(cfg, name, None, tables)
        violations = training_violations(training_inputs([latest], contracts), target)
        if violations:
            others.append(f"{name} ({', '.join(sorted({v.rule for v in violations}))})")
        else:
            chosen.append(latest)
    return chosen, others


def hard_case_inputs(
    cfg: FieldloopConfig, task: Task, target: ModelTarget, contracts: Mapping[str, DataContract]
) -> tuple[list[PinnedInput], list[str]]:
    """The task's hard-case gold tables the rule lets ``target`` learn from, at their latest
    versions, and the others with the rule that keeps each out (a tenant's hard cases never
    reach the base model nor another tenant's).

    Raises:
        ContaminationError: never in practice; the rule is applied once more to what was chosen.
    """
    listed = gold_tables(cfg)
    chosen, others = [], []
    for table in declared_gold(contracts):
        if table.kind is not GoldKind.HARD_CASES or table.task != task.name or table.name not in listed:
            continue
        latest = pin(cfg, table.name, None, listed)
        violations = training_violations(training_inputs([latest], contracts), target)
        if violations:
            others.append(f"{table.name} ({', '.join(sorted({v.rule for v in violations}))})")
        else:
            chosen.append(latest)
    enforce_training_rule(training_inputs(chosen, contracts), target)
    return chosen, others


def resolve(
    cfg: FieldloopConfig, task: Task, target: ModelTarget, tables: Iterable[str], contracts: Mapping[str, DataContract]
) -> list[PinnedInput]:
    """Pin the inputs and apply the training rule to them.

    The rule is applied before the task check: a table that may not train ``target`` is
    refused for that, whatever it holds.

    Raises:
        DatasetError: no input, or an input that is missing or no declared dataset of the task.
        ContaminationError: an input may not train ``target`` (nothing has been read).
    """
    listed = gold_tables(cfg)
    requested = [parse_pin(t) for t in tables]
    if not requested:
        usable, others = _usable_inputs(cfg, task, target, contracts, listed)
        if not usable:
            where = f"tenant {target.tenant}'s or public " if target.tenant else "public "
            hint = (
                f"; the rule keeps out the task's other tables: {', '.join(others)}"
                if others
                else "; run `fieldloop refine` after the fleet has sent data, or name one with --table"
            )
            declared = ", ".join(declared_tables(task, contracts)) or "none"
            raise DatasetError(
                f"no {where}gold table for task {task.name} in {cfg.lake} (its declared datasets: {declared}){hint}"
            )
        pinned = usable  # already sorted by name and pinned at their latest versions
    else:
        names = [name for name, _ in requested]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DatasetError(
                f"{', '.join(twice)} named more than once; a run reads each table at one version", f"gold/{twice[0]}"
            )
        # Sorted by name: the same tables and versions give the same rows whatever order they were named in.
        pinned = sorted((pin(cfg, name, version, listed) for name, version in requested), key=lambda p: p.name)
    enforce_training_rule(training_inputs(pinned, contracts), target)
    declared = declared_tables(task, contracts)
    for p in pinned:
        if p.name not in declared:
            raise DatasetError(
                f"{p.table} is not a {task.name} training dataset; the contracts declare "
                f'{", ".join(declared) or "none"} (a [[gold]] entry with task = "{task.name}" adds one)',
                p.table,
            )
    return pinned


def training_inputs(pinned: Iterable[PinnedInput], contracts: Mapping[str, DataContract]) -> list[TrainingInput]:
    """The rule's view of each pinned input (see :func:`rule_inputs`)."""
    return rule_inputs((p.lineage() for p in pinned), contracts)


def rule_inputs(lineages: Iterable[TableLineage], contracts: Mapping[str, DataContract]) -> list[TrainingInput]:
    """The rule's view of each table read, with its contract's uses as they are now; a
    contract this deployment does not know allows nothing."""
    return [
        i.training_input(
            frozenset(contracts[i.contract_id].allowed_uses) if i.contract_id in contracts else frozenset()
        )
        for i in lineages
    ]


def read(cfg: FieldloopConfig, task: Task, inp: PinnedInput) -> Rows:
    """Every row of one pinned input, sorted by the task's order columns."""
    import pyarrow.compute as pc

    from fieldloop.catalog import open_table

    rows = task.layout
    columns = list(dict.fromkeys([*rows.order_columns, rows.device_column, "features", rows.label_column]))
    table = open_table(cfg, inp.path, inp.version)
    missing = [c for c in columns if c not in table.schema().to_arrow().names]
    if missing:
        raise DatasetError(f"{inp.table}@v{inp.version} lacks columns {missing} that task {task.name} needs", inp.table)
    data = table.to_pyarrow_dataset().to_table(columns=columns)
    if data.num_rows == 0:
        return Rows.concat([])
    data = data.sort_by([(c, "ascending") for c in rows.order_columns])
    features = data.column("features").combine_chunks()
    lengths = pc.list_value_length(features)
    dim = pc.max(lengths).as_py()
    if features.null_count or pc.min(lengths).as_py() != dim:
        raise DatasetError(
            f"{inp.table}@v{inp.version}: {features.null_count} rows have no features and the others "
            f"differ in length ({pc.min(lengths).as_py()} to {dim}); rebuild it with `fieldloop refine`",
            inp.table,
        )
    x = features.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    y = data.column(rows.label_column).to_numpy(zero_copy_only=False).astype(np.float32)
    device = data.column(rows.device_column).to_numpy(zero_copy_only=False).astype(object)
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise DatasetError(
            f"{inp.table}@v{inp.version} holds non-finite features or labels; fix its silver source", inp.table
        )
    return Rows(x, y, device)
