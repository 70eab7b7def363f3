"""Airflow assets for lake tables and models, so stage DAGs trigger each other through data.

A table ``<lake>/<layer>/<name>`` is the asset ``fieldloop.<layer>.<name>`` with URI
``x-fieldloop://<layer>/<name>`` (an ``x-`` scheme: ours, left as is by Airflow). Names
come from the deployment's contracts (``cfg.contracts_dir``), which the DAG files load and
pass in, so producer and consumer DAGs agree without sharing code paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fieldloop.classes import DataClass
from fieldloop.datasets import gold_tables

if TYPE_CHECKING:
    from airflow.sdk import Asset

    from fieldloop.contracts import DataContract


def table_asset(layer: str, name: str) -> Asset:
    from airflow.sdk import Asset

    return Asset(name=f"fieldloop.{layer}.{name}", uri=f"x-fieldloop://{layer}/{name}", group="fieldloop")


def bronze_assets(contracts: Mapping[str, DataContract]) -> list[Asset]:
    """One asset per bronze table (every contract but the secret ones)."""
    return [
        table_asset("bronze", c.table)
        for c in sorted(contracts.values(), key=lambda c: c.id)
        if c.data_class is not DataClass.SECRET
    ]


def gold_assets(contracts: Mapping[str, DataContract], task: str | None = None) -> list[Asset]:
    """One asset per gold table the contracts declare (only the training datasets of ``task`` when given)."""
    return [table_asset("gold", t.name) for t in gold_tables(contracts) if task is None or t.task == task]


def model_asset(task: str) -> Asset:
    """The models of a task (``fieldloop.<task>`` and its tenants'): updated when a candidate is registered."""
    from airflow.sdk import Asset

    return Asset(name=f"fieldloop.models.{task}", uri=f"x-fieldloop://models/{task}", group="fieldloop")
