"""Airflow assets for lake tables, so stage DAGs trigger each other through data.

A table ``<lake>/<layer>/<name>`` is the asset ``fieldloop.<layer>.<name>`` with URI
``x-fieldloop://<layer>/<name>`` (an ``x-`` scheme: ours, left as is by Airflow). Names
come from the contracts, so producer and consumer DAGs agree without sharing code paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fieldloop.classes import DataClass
from fieldloop.contracts import load_contracts

if TYPE_CHECKING:
    from airflow.sdk import Asset


def table_asset(layer: str, name: str) -> Asset:
    from airflow.sdk import Asset

    return Asset(name=f"fieldloop.{layer}.{name}", uri=f"x-fieldloop://{layer}/{name}", group="fieldloop")


def bronze_assets() -> list[Asset]:
    """One asset per bronze table (every contract but the secret ones)."""
    return [
        table_asset("bronze", c.table)
        for c in sorted(load_contracts().values(), key=lambda c: c.id)
        if c.data_class is not DataClass.SECRET
    ]


def gold_assets(task: str | None = None) -> list[Asset]:
    """One asset per gold table (only the training datasets of ``task`` when given)."""
    from refinement.gold import gold_specs

    return [table_asset("gold", s.name) for s in gold_specs(load_contracts()) if task is None or s.task == task]


def model_asset(task: str) -> Asset:
    """The models of a task (``fieldloop.<task>`` and its tenants'): updated when a candidate is registered."""
    from airflow.sdk import Asset

    return Asset(name=f"fieldloop.models.{task}", uri=f"x-fieldloop://models/{task}", group="fieldloop")
