"""Every DAG file parses without import errors and follows the project's DAG rules.

Each file is parsed into its own DagBag in one subprocess with a throw-away AIRFLOW_HOME,
so the tests need no running Airflow and leave no state behind; a file that breaks fails
its own test. The probe also proves parsing stays light (no PySpark, torch, MLflow or
Kafka client imported at parse time) and reports each DAG's assets, so the tests can show
the DAG files read the deployment's contracts (``FIELDLOOP_CONTRACTS_DIR``), not the
packaged ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from fieldloop.contracts import packaged_contracts_dir
from fieldloop.layout import DAGS_DIR

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
out = {}
for path in sys.argv[1:]:
    bag = DagBag(dag_folder=path)
    heavy = sorted(m for m in ("pyspark", "torch", "mlflow", "kafka", "deltalake") if m in sys.modules)
    dags = {}
    for dag_id, dag in bag.dags.items():
        declared = [o for t in dag.tasks for o in getattr(t, "outlets", [])]
        outlets = sorted({o.uri for o in declared if hasattr(o, "uri")})
        aliases = sorted({o.name for o in declared if type(o).__name__ == "AssetAlias"})
        condition = getattr(dag.timetable, "asset_condition", None)  # AssetAny of the schedule's assets, or one
        assets = list(getattr(condition, "objects", ())) or ([condition] if hasattr(condition, "uri") else [])
        schedule = sorted(a.uri for a in assets)
        watchers = {
            a.uri: [
                {"name": w.name, "trigger": type(w.trigger).__name__, "kwargs": getattr(w.trigger, "kwargs", {})}
                for w in a.watchers
            ]
            for a in assets
            if getattr(a, "watchers", None)
        }
        dags[dag_id] = {
            "tags": sorted(dag.tags),
            "catchup": dag.catchup,
            "tz_aware": dag.start_date is not None and dag.start_date.tzinfo is not None,
            "doc_md": bool(dag.doc_md),
            "retries": sorted({t.retries for t in dag.tasks}),
            "outlets": outlets,
            "aliases": aliases,
            "schedule_assets": schedule,
            "watchers": watchers,
            "timetable": type(dag.timetable).__name__,
            "owner": dag.owner,
            "description": dag.description or "",
            "asset_extras": {a.uri: a.extra for a in [*assets, *declared] if hasattr(a, "uri")},
            "doc": dag.doc_md or "",
            "tasks": {
                t.task_id: {
                    "type": type(t).__name__ if not hasattr(t, "partial_kwargs") else "mapped",
                    "upstream": sorted(t.upstream_task_ids),
                    "documented": bool(t.doc_md or t.doc or getattr(t, "partial_kwargs", {}).get("doc_md")),
                    "outlets": sorted(o.uri for o in getattr(t, "outlets", []) if hasattr(o, "uri")),
                    "trigger_rule": str(t.trigger_rule),
                }
                for t in dag.tasks
            },
        }
    out[path] = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags, "heavy": heavy}
print(json.dumps(out))
"""

DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


def parse(tmp: Path, files: list[Path], **env: str) -> dict[str, dict]:
    """Each file's DagBag report, parsed in a subprocess with its own AIRFLOW_HOME."""
    environ = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, files)], env=environ, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(k).stem: v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return parse(tmp_path_factory.mktemp("airflow"), DAG_FILES)


@pytest.mark.parametrize("dag_file", [p.stem for p in DAG_FILES])
def test_dag_file_parses_cleanly_and_follows_the_rules(reports: dict[str, dict], dag_file: str) -> None:
    report = reports[dag_file]
    assert report["errors"] == {}
    assert report["heavy"] == [], "heavy modules imported at parse time"
    assert list(report["dags"]) == [dag_file]  # one DAG per file, file name = dag_id
    dag = report["dags"][dag_file]
    assert "fieldloop" in dag["tags"]
    assert dag["catchup"] is False
    assert dag["tz_aware"]
    assert dag["doc_md"]
    assert all(2 <= r <= 4 for r in dag["retries"]), dag["retries"]


def test_the_dags_assets_come_from_the_deployments_contracts(tmp_path: Path) -> None:
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    for path in packaged_contracts_dir().glob("*.toml"):
        if path.stem != "vehicle-frames-acme-mobility":  # this deployment has no ACME vehicles
            (contracts / path.name).write_text(path.read_text())
    files = [DAGS_DIR / f"{name}.py" for name in ("fieldloop_refine", "fieldloop_train")]
    packaged = parse(tmp_path / "a", files)
    deployed = parse(tmp_path / "b", files, FIELDLOOP_CONTRACTS_DIR=str(contracts))

    acme_bronze = "x-fieldloop://bronze/vehicle_frames_acme_mobility"
    acme_gold = "x-fieldloop://gold/vehicle_longitudinal_acme_mobility"
    assert acme_bronze in packaged["fieldloop_refine"]["dags"]["fieldloop_refine"]["schedule_assets"]
    assert acme_bronze not in deployed["fieldloop_refine"]["dags"]["fieldloop_refine"]["schedule_assets"]
    assert acme_gold in packaged["fieldloop_train"]["dags"]["fieldloop_train"]["schedule_assets"]
    assert acme_gold not in deployed["fieldloop_train"]["dags"]["fieldloop_train"]["schedule_assets"]
    assert (
        "x-fieldloop://gold/vehicle_longitudinal_public"
        in (deployed["fieldloop_train"]["dags"]["fieldloop_train"]["schedule_assets"])
    )


def test_stage_tasks_announce_what_changed_through_an_alias_not_every_table(reports: dict[str, dict]) -> None:
    for stage in ("ingest", "refine"):
        dag = reports[f"fieldloop_{stage}"]["dags"][f"fieldloop_{stage}"]
        assert dag["aliases"] == [f"fieldloop.changed.{stage}"]
        assert dag["outlets"] == []  # no table announced unless the run changed it


def test_the_release_dag_has_a_deferred_task_per_stage_of_each_fleets_rollout_policy(reports: dict[str, dict]) -> None:
    from actuation.contract import load_fleets
    from actuation.rollout.policy import load_policy

    dag = reports["fieldloop_release"]["dags"]["fieldloop_release"]
    tasks = dag["tasks"]
    for fleet in load_fleets().fleet:
        stages = [f"{fleet.name}.{s.name}" for s in load_policy(fleet.name).stage]
        chain = [f"{fleet.name}.publish", *stages, f"{fleet.name}.champion"]
        for before, after in pairwise(chain):
            assert tasks[after]["upstream"] == [before], (after, tasks[after])
        assert tasks[f"{fleet.name}.publish"]["upstream"] == ["guardrail"]
        assert {tasks[s]["type"] for s in stages} == {"RolloutStage"}  # defers to the rollout trigger
        assert tasks[f"{fleet.name}.champion"]["outlets"] == [f"x-fieldloop://fleet/rollouts/{fleet.name}"]
    stage_tasks = {t for t, v in tasks.items() if v["type"] == "RolloutStage"}
    assert len(stage_tasks) == sum(len(load_policy(f.name).stage) for f in load_fleets().fleet)


def test_the_release_dag_runs_on_new_candidates_and_says_how_to_pause_and_roll_back(
    reports: dict[str, dict],
) -> None:
    from fieldloop.datasets import TASK_LAYOUTS

    dag = reports["fieldloop_release"]["dags"]["fieldloop_release"]
    assert dag["schedule_assets"] == sorted(f"x-fieldloop://models/{t}" for t in TASK_LAYOUTS)
    assert dag["aliases"] == ["fieldloop.approved"]  # the approved model's task is known once judged
    assert dag["tasks"]["guardrail"]["upstream"] == ["plan"]
    undocumented = [t for t, v in dag["tasks"].items() if not v["documented"]]
    assert undocumented == [], "every task of the release DAG says what it does"
    for command in ("rollout pause --fleet", "rollout rollback --fleet", "rollout resume --fleet", "approval = true"):
        assert command in dag["doc"], command


def test_a_safety_event_in_fleet_telemetry_starts_an_ingest_run_through_a_kafka_watcher(
    reports: dict[str, dict],
) -> None:
    from fieldloop.contracts import load_contracts

    dag = reports["fieldloop_ingest"]["dags"]["fieldloop_ingest"]
    assert dag["timetable"] == "AssetOrTimeSchedule"  # the clock, or the field, whichever comes first
    assert "x-fieldloop://fleet/safety-events" in dag["schedule_assets"]
    (watcher,) = dag["watchers"]["x-fieldloop://fleet/safety-events"]
    assert watcher["trigger"] == "MessageQueueTrigger"
    assert watcher["kwargs"]["topics"] == [load_contracts()["fleet-telemetry"].topic]
    assert watcher["kwargs"]["apply_function"] == "fieldloop.assets.safety_event"
    assert watcher["kwargs"]["kafka_config_id"] == "fieldloop_kafka"
    assert "pause this DAG" in dag["doc"]


def test_every_dag_and_asset_says_what_it_is_who_owns_it_and_its_data_class(reports: dict[str, dict]) -> None:
    from fieldloop.contracts import load_contracts

    dags = {dag_id: dag for report in reports.values() for dag_id, dag in report["dags"].items()}
    for dag_id, dag in dags.items():
        assert dag["owner"] not in ("", "airflow"), dag_id
        assert len(dag["description"]) > 20, dag_id
    extras = {uri: extra for dag in dags.values() for uri, extra in dag["asset_extras"].items()}
    assert len(extras) > 10
    for uri, extra in extras.items():
        assert {"description", "owner", "data_class"} <= set(extra or {}), uri
    contracts = load_contracts()
    assert extras["x-fieldloop://bronze/vehicle_frames_acme_mobility"]["data_class"] == "restricted"
    assert extras["x-fieldloop://bronze/vehicle_frames_acme_mobility"]["tenant"] == "acme-mobility"
    assert extras["x-fieldloop://gold/vehicle_longitudinal_public"]["data_class"] == "public"
    assert extras["x-fieldloop://gold/vehicle_longitudinal_public"]["description"].startswith(
        contracts["vehicle-frames-public"].description
    )


def test_hard_cases_and_completed_rollouts_start_an_ingest_run_too(reports: dict[str, dict]) -> None:
    from actuation.contract import load_fleets
    from fieldloop.contracts import load_contracts

    dag = reports["fieldloop_ingest"]["dags"]["fieldloop_ingest"]
    assert dag["timetable"] == "AssetOrTimeSchedule"  # the 15-minute clock stays
    fleets = [f"x-fieldloop://fleet/rollouts/{f.name}" for f in load_fleets().fleet]
    assert set(dag["schedule_assets"]) == {
        "x-fieldloop://fleet/safety-events",
        "x-fieldloop://fleet/hard-cases",
        *fleets,
    }
    (watcher,) = dag["watchers"]["x-fieldloop://fleet/hard-cases"]
    assert watcher["trigger"] == "MessageQueueTrigger"
    hard_case_topics = sorted(c.topic for c in load_contracts().values() if c.stream == "hard_cases")
    assert watcher["kwargs"]["topics"] == hard_case_topics
    assert "fieldloop.public.hard_cases.v1" in hard_case_topics
    assert watcher["kwargs"]["apply_function"] == "fieldloop.assets.hard_case"
    # its own connection, so its own consumer group: the safety-events consumer is not rebalanced by it
    assert (
        watcher["kwargs"]["kafka_config_id"]
        != dag["watchers"]["x-fieldloop://fleet/safety-events"][0]["kwargs"]["kafka_config_id"]
    )
    assert "To stop the loop" in dag["doc"]


# What each alias a stage announces through may resolve to (the tables of these layers, or these
# assets): the stage commands' --json contract (fieldloop.assets) and the release DAG's guardrail.
ALIASES = {
    "fieldloop.changed.ingest": ("x-fieldloop://bronze/",),
    "fieldloop.changed.refine": ("x-fieldloop://silver/", "x-fieldloop://gold/"),
    "fieldloop.approved": ("x-fieldloop://models/",),
}


def asset_graph(reports: dict[str, dict]) -> dict[str, set[str]]:
    """DAG -> the DAGs scheduled on an asset it updates (a static outlet, or one its aliases may announce)."""
    dags = {dag_id: dag for report in reports.values() for dag_id, dag in report["dags"].items()}
    graph: dict[str, set[str]] = {}
    for producer, dag in dags.items():
        prefixes = [p for alias in dag["aliases"] for p in ALIASES[alias]]
        for consumer, other in dags.items():
            for uri in other["schedule_assets"]:
                if uri in dag["outlets"] or any(uri.startswith(p) for p in prefixes):
                    graph.setdefault(producer, set()).add(consumer)
    return graph


def test_the_stage_dags_assets_form_one_loop_from_ingest_back_to_ingest(reports: dict[str, dict]) -> None:
    """bronze, silver/gold, models, approved, rolled out, (hard cases), bronze: the UI's asset graph is a cycle."""
    graph = asset_graph(reports)
    loop = ["fieldloop_ingest", "fieldloop_refine", "fieldloop_train", "fieldloop_release", "fieldloop_ingest"]
    for producer, consumer in pairwise(loop):
        assert consumer in graph.get(producer, set()), f"no asset of {producer} schedules {consumer}: {graph}"
    # the hard cases' way back: refine's hard-case gold tables are among train's schedule
    train = reports["fieldloop_train"]["dags"]["fieldloop_train"]
    assert "x-fieldloop://gold/hard_cases_vehicle_longitudinal_public" in train["schedule_assets"]
    assert "x-fieldloop://gold/hard_cases_vehicle_longitudinal_acme_mobility" in train["schedule_assets"]
    assert "fieldloop_stack_health" not in {d for ds in graph.values() for d in ds}  # outside the loop
