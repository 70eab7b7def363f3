"""Which models to train when gold tables change (what the training DAG runs).

A tenant's gold table changing retrains that tenant's model; a public one retrains the
base model and every tenant model of the task, since each of them learns from it too. A
hard-case table counts the same way: a fine-tune from the champion learns from the hard
cases the rule lets it read, so new ones are a reason to fine-tune (the loop's last step).
Read from the contracts alone, so it is cheap enough for a DAG's planning task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fieldloop.classes import DataClass, ModelTarget, Use
from fieldloop.contracts import DataContract
from fieldloop.datasets import hard_case_tables, training_tables
from training_jobs.tasks import get_task


def models_for(
    contracts: Mapping[str, DataContract],
    changed: Iterable[str] | None = None,
    task: str | None = None,
    tenant: str | None = None,
) -> list[ModelTarget]:
    """The models to retrain, sorted.

    Args:
        contracts: the deployment's data contracts.
        changed: names of the gold tables (training or hard-case) that changed; None: all of them.
        task, tenant: train only this model (a manual run's choice); the tenant alone picks
            that tenant's models of every task.
    """
    if task is not None:
        get_task(task)  # an unknown task fails here, naming the known ones
    specs = training_tables(contracts, task)
    if task is not None and tenant is not None:
        return [ModelTarget(task, tenant)]
    wanted = set(changed) if changed is not None else None
    targets: set[ModelTarget] = set()
    for spec in [*specs, *hard_case_tables(contracts, task)]:
        if wanted is not None and spec.name not in wanted:
            continue
        owner = spec.contract.tenant
        if spec.contract.data_class is DataClass.SECRET:
            continue  # trains nothing: a change to it retrains no model
        if owner:
            if Use.TENANT_FINETUNE in spec.contract.allowed_uses:
                targets.add(ModelTarget(spec.task, owner))
            continue
        if spec.contract.data_class is DataClass.PUBLIC and Use.BASE_TRAINING in spec.contract.allowed_uses:
            targets.add(ModelTarget(spec.task))
        targets |= {
            ModelTarget(spec.task, s.contract.tenant) for s in specs if s.task == spec.task and s.contract.tenant
        }
    if tenant is not None:
        targets = {t for t in targets if t.tenant == tenant}
    return sorted(targets, key=lambda t: (t.task, t.tenant or ""))
