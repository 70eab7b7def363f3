"""Airflow assets for lake tables and models, so stage DAGs trigger each other through data.

A table ``<lake>/<layer>/<name>`` is the asset ``fieldloop.<layer>.<name>`` with URI
``x-fieldloop://<layer>/<name>`` (an ``x-`` scheme: ours, left as is by Airflow). Names
come from the deployment's contracts (``cfg.contracts_dir``), which the DAG files load and
pass in, so producer and consumer DAGs agree without sharing code paths.

A stage task announces only the tables that got a new version, so a run that changed
nothing triggers nothing downstream: it runs its stage command with ``--json``
(:func:`run_stage`), whose output lists ``changed_tables`` (``<layer>/<name>``, the
contract every stage command's ``--json`` keeps), and adds an event for each through an
``AssetAlias`` (:func:`announce`); consumers schedule on the tables' assets themselves.

Models and fleets follow the same pattern: ``x-fieldloop://models/<task>`` when training
registered a candidate, ``x-fieldloop://models/<task>/approved`` when one passed its
guardrails, ``x-fieldloop://fleet/rollouts/<fleet>`` when a rollout made one a fleet's champion.

One asset comes from the field rather than from a task: ``x-fieldloop://fleet/safety-events``
(:func:`safety_events_asset`) is raised by an ``AssetWatcher`` on the fleet telemetry topic
the moment a device reports that its monitor or a person overrode the model, or that an
inference failed (:func:`safety_event`), so what the field found hard starts its way home
without waiting for the next scheduled ingest. A second one closes the loop:
``x-fieldloop://fleet/hard-cases`` (:func:`hard_cases_asset`) is raised by a watcher on the
hard-case topics when a device sends home a window its campaign asked for (:func:`hard_case`).
The ingest DAG schedules on both and on every fleet's rollout asset, so the stages' assets
form one cycle: bronze, silver/gold, models, approved, rolled out, hard cases, bronze again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldloop.classes import DataClass
from fieldloop.datasets import gold_tables, hard_case_tables, training_tables

if TYPE_CHECKING:
    from airflow.sdk import Asset, AssetAlias

    from fieldloop.contracts import DataContract


# Who answers for an asset (its extra's ``owner``; the DAG that writes it has the same owner).
OWNERS = {
    "bronze": "data-platform",
    "silver": "data-platform",
    "gold": "data-platform",
    "models": "ml-platform",
    "fleet": "fleet-operations",
}
# A task's models and a fleet's rollouts mix classes version by version: the version says which.
PER_VERSION = "per version: its fieldloop.lineage.classes tag"
LAYERS = {
    "bronze": "as the devices sent it, each valid record once",
    "silver": "refined: quality-checked, pseudonymized or anonymized",
    "gold": "built for training or release",
}


def describe(description: str, owner: str, data_class: str, tenant: str | None = None) -> dict[str, Any]:
    """An asset's extra: what it is, who owns it, which data class it holds (and whose, when restricted)."""
    return {"description": description, "owner": owner, "data_class": data_class} | (
        {"tenant": tenant} if tenant else {}
    )


def governing(layer: str, name: str, contracts: Mapping[str, DataContract]) -> DataContract | None:
    """The contract whose data a lake table holds: its stream's table, or the gold dataset it declares."""
    if layer == "gold":
        return next((t.contract for t in gold_tables(contracts) if t.name == name), None)  # type: ignore[misc]
    # a silver table is its stream's table or one derived from it (e.g. <table>_anon): the longest prefix
    matches = [c for c in contracts.values() if name == c.table or name.startswith(f"{c.table}_")]
    return max(matches, key=lambda c: len(c.table), default=None)


def table_asset(layer: str, name: str, contracts: Mapping[str, DataContract] | None = None) -> Asset:
    """The asset of ``<lake>/<layer>/<name>``; described from the contract governing it when ``contracts`` is given."""
    from airflow.sdk import Asset

    extra = None
    contract = governing(layer, name, contracts) if contracts is not None else None
    if contract is not None:
        what = LAYERS.get(layer, layer)
        extra = describe(
            f"{contract.description or contract.id} ({layer}: {what})",
            OWNERS.get(layer, "data-platform"),
            str(contract.data_class),
            contract.tenant,
        )
    return Asset(name=f"fieldloop.{layer}.{name}", uri=f"x-fieldloop://{layer}/{name}", group="fieldloop", extra=extra)


def bronze_assets(contracts: Mapping[str, DataContract]) -> list[Asset]:
    """One asset per bronze table (every contract but the secret ones)."""
    return [
        table_asset("bronze", c.table, contracts)
        for c in sorted(contracts.values(), key=lambda c: c.id)
        if c.data_class is not DataClass.SECRET
    ]


def gold_assets(contracts: Mapping[str, DataContract], task: str | None = None) -> list[Asset]:
    """One asset per gold table the contracts declare (only the training datasets of ``task`` when given:
    its default inputs; its hard cases are :func:`hard_case_assets`)."""
    tables = gold_tables(contracts) if task is None else training_tables(contracts, task)
    return [table_asset("gold", t.name, contracts) for t in tables]


def model_asset(task: str) -> Asset:
    """The models of a task (``fieldloop.<task>`` and its tenants'): updated when a candidate is registered."""
    from airflow.sdk import Asset

    return Asset(
        name=f"fieldloop.models.{task}",
        uri=f"x-fieldloop://models/{task}",
        group="fieldloop",
        extra=describe(
            f"{task} candidates registered in MLflow (base and tenant models)", OWNERS["models"], PER_VERSION
        ),
    )


def approved_asset(task: str) -> Asset:
    """The approved models of a task: updated when a version passed its guardrails (``approved`` alias)."""
    from airflow.sdk import Asset

    return Asset(
        name=f"fieldloop.models.{task}.approved",
        uri=f"x-fieldloop://models/{task}/approved",
        group="fieldloop",
        extra=describe(
            f"{task} versions that passed their guardrails, signed verdict attached", OWNERS["models"], PER_VERSION
        ),
    )


def approved_alias() -> AssetAlias:
    """The alias the release DAG announces each approved model's task through (known once judged)."""
    from airflow.sdk import AssetAlias

    return AssetAlias(name="fieldloop.approved", group="fieldloop")


def rollout_asset(fleet: str) -> Asset:
    """A fleet's rollouts: updated when a version completed its rollout there and became the champion."""
    from airflow.sdk import Asset

    return Asset(
        name=f"fieldloop.rollouts.{fleet}",
        uri=f"x-fieldloop://fleet/rollouts/{fleet}",
        group="fieldloop",
        extra=describe(f"versions that completed their staged rollout to {fleet}", OWNERS["fleet"], PER_VERSION),
    )


SAFETY_EVENTS_CONNECTION = "fieldloop_kafka"  # the Airflow connection the watcher's consumer uses
SAFETY_EVENTS_GROUP = "fieldloop-airflow-safety-events"
# The hard-case watcher has its own connection, so its own consumer group: sharing one would
# rebalance the safety-events consumer each time the other watcher (re)joins.
HARD_CASES_CONNECTION = "fieldloop_kafka_hard_cases"
HARD_CASES_GROUP = "fieldloop-airflow-hard-cases"
WATCHER_GROUPS = {SAFETY_EVENTS_CONNECTION: SAFETY_EVENTS_GROUP, HARD_CASES_CONNECTION: HARD_CASES_GROUP}


def watcher_consumer(bootstrap: str, group: str) -> dict[str, Any]:
    """A watcher's Kafka consumer settings (the extra of its Airflow connection).

    ``latest``: a watcher starting for the first time reacts to what happens from then on;
    what came before reaches bronze through the scheduled ingest anyway.
    """
    return {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "latest"}


def safety_events_asset(topics: Sequence[str]) -> Asset:
    """Safety events in fleet telemetry (``topics``), raised as they arrive by an ``AssetWatcher``.

    The Kafka ``MessageQueueTrigger`` of the common-messaging provider runs in the triggerer
    while a DAG that schedules on this asset is unpaused; each telemetry record
    :func:`safety_event` accepts becomes one asset event whose extra says which fleet and
    model version met it, and why (never the device id: asset events are shown to every
    Airflow user).
    """
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    trigger = MessageQueueTrigger(
        scheme="kafka",
        topics=list(topics),
        apply_function=f"{__name__}.safety_event",
        kafka_config_id=SAFETY_EVENTS_CONNECTION,
        poll_interval=0,  # after a record that is no safety event, read the next one at once
    )
    return Asset(
        name="fieldloop.fleet.safety_events",
        uri="x-fieldloop://fleet/safety-events",
        group="fieldloop",
        extra=describe("interventions and failed inferences the fleets report", OWNERS["fleet"], "public"),
        watchers=[AssetWatcher(name="fleet-telemetry-safety-events", trigger=trigger)],
    )


def safety_event(message: Any) -> dict[str, Any] | None:
    """The asset event of one telemetry record (a Kafka message), or None when it is no safety event.

    A safety event is a record whose ``intervention`` is set (the device's monitor or a person
    overrode the model) or that names an ``error``. A payload that does not decode is no
    event here: bronze quarantines it with its reason.
    """
    record = _decoded(message)
    if record is None:
        return None
    reason = "error" if record.get("error") else "intervention" if record.get("intervention") else None
    if reason is None:
        return None
    return {
        "reason": reason,
        "error": record.get("error"),
        "fleet": record.get("fleet"),
        "model_name": record["model_name"],
        "model_version": record["model_version"],
        "ts_ms": _ms(record["ts"]),
    }


def _decoded(message: Any) -> dict[str, Any] | None:
    """A watcher's Kafka message as its record; None for an empty or undecodable payload (bronze
    quarantines those with their reason)."""
    from fieldloop.wire import WireError, decode, default_registry

    payload = message.value()
    if not payload:
        return None
    try:
        return decode(payload, default_registry())
    except WireError:
        return None


def _ms(ts: Any) -> Any:
    return int(ts.timestamp() * 1000) if hasattr(ts, "timestamp") else ts


def hard_cases_asset(topics: Sequence[str]) -> Asset:
    """Hard cases the fleets send home (``topics``: the hard-case streams), raised as they arrive.

    Built as :func:`safety_events_asset` is: a Kafka ``MessageQueueTrigger`` in the triggerer,
    while a DAG that schedules on this asset is unpaused. A device sends hard cases only under a
    signed campaign, which every release and rollout asks its fleet for, so this asset is where
    a rollout's consequences come back: each window :func:`hard_case` decodes becomes one event
    naming the fleet, the campaign, the trigger and the model version that met it.
    """
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    trigger = MessageQueueTrigger(
        scheme="kafka",
        topics=list(topics),
        apply_function=f"{__name__}.hard_case",
        kafka_config_id=HARD_CASES_CONNECTION,
        poll_interval=0,
    )
    return Asset(
        name="fieldloop.fleet.hard_cases",
        uri="x-fieldloop://fleet/hard-cases",
        group="fieldloop",
        extra=describe(
            "input windows the fleets' campaigns sent home (OOD, fallback, disagreement, signal)",
            OWNERS["fleet"],
            "per stream: its contract's class (public, or a tenant's restricted)",
        ),
        watchers=[AssetWatcher(name="fleet-hard-cases", trigger=trigger)],
    )


def hard_case(message: Any) -> dict[str, Any] | None:
    """The asset event of one hard-case record (a Kafka message), or None when it does not decode.

    The event names what a person deciding about the loop needs (fleet, campaign, trigger,
    model version), never the device or the window's values: asset events are shown to every
    Airflow user, and a tenant's windows are restricted data.
    """
    record = _decoded(message)
    if record is None or "campaign_id" not in record:  # another stream's record on the topic: bronze quarantines it
        return None
    return {
        "fleet": record["fleet"],
        "campaign_id": record["campaign_id"],
        "trigger_kind": record["trigger_kind"],
        "model_name": record["model_name"],
        "model_version": record["model_version"],
        "ts_ms": _ms(record["ts"]),
    }


def hard_case_assets(contracts: Mapping[str, DataContract], task: str) -> list[Asset]:
    """One asset per hard-case gold table of ``task``: a change fine-tunes the models that may learn from it."""
    return [table_asset("gold", t.name, contracts) for t in hard_case_tables(contracts, task)]


CHANGED_TABLES = "changed_tables"  # key of a stage command's --json output: "<layer>/<name>" of new versions


def changed_alias(stage: str) -> AssetAlias:
    """The alias a stage task announces its changed tables through (``fieldloop.changed.<stage>``)."""
    from airflow.sdk import AssetAlias

    return AssetAlias(name=f"fieldloop.changed.{stage}", group="fieldloop")


def run_stage(argv: Sequence[str]) -> dict[str, Any]:
    """Run ``fieldloop <argv> --json`` in its own process; its summary, or an error with its last words.

    What the command prints for people (progress, reports) goes to stderr and so to the
    task's log; stdout carries the JSON alone.
    """
    command = [str(Path(sys.executable).parent / "fieldloop"), *argv, "--json"]
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(command[1:])}` failed (exit {proc.returncode}); its error is above")
    return json.loads(proc.stdout)


def run_judged(argv: Sequence[str]) -> tuple[int, dict[str, Any] | None]:
    """Run ``fieldloop <argv> --json`` for a command whose non-zero exit may be a verdict (a failed
    guardrail prints its report and exits 1): its exit code and its JSON, None if it printed none."""
    command = [str(Path(sys.executable).parent / "fieldloop"), *argv, "--json"]
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        return proc.returncode, None


def announce(outlet_events: Any, stage: str, summary: Mapping[str, Any]) -> list[str]:
    """Add an asset event for each table the stage's summary says got a new version; their URIs."""
    from fieldloop.config import load_config
    from fieldloop.contracts import load_contracts

    cfg = load_config()
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    alias = changed_alias(stage)
    uris = []
    for table in summary.get(CHANGED_TABLES, []):
        layer, name = table.split("/", 1)
        asset = table_asset(layer, name, contracts)  # described as the consumers' schedules declare it
        outlet_events[alias].add(asset)
        uris.append(asset.uri)
    print(f"announced {len(uris)} changed tables: {', '.join(uris) or 'none'}")
    return uris
