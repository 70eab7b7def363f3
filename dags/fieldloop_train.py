"""Train: fine-tune the models whose gold datasets changed and register them as candidates.

Scheduled on the gold training datasets (the refine DAG updates them) and on the gold
hard-case tables (`gold/hard_cases_*`: what the fleets running a release sent home under its
campaign). A tenant's table changing retrains that tenant's model
(`fieldloop.<task>.<tenant>`); a public one retrains the base model (`fieldloop.<task>`) and
every tenant model of the task. Each model is one mapped `fieldloop train` run: inputs
pinned to their current Delta versions, the contamination rule applied before anything is
read, the teacher fine-tuned from the `champion` alias when there is one, the student
distilled and exported to ONNX, the version registered in MLflow with its lineage and the
`candidate` alias. A fine-tune from the champion also learns from the hard cases the rule
lets the model read, and is judged on the held-out devices' ones (lineage tag
`fieldloop.lineage.hard_cases`). Pause this DAG to stop the loop from making new models
while the lake keeps filling.

Trigger it by hand with params to train one model: `task` (and `tenant` for a tenant's
model). A refused run names the table and the rule; nothing was registered.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import AssetAny, Param, dag, task

from fieldloop.assets import gold_assets, hard_case_assets, model_asset
from fieldloop.config import load_config
from fieldloop.contracts import load_contracts
from fieldloop.datasets import TASK_LAYOUTS

FIELDLOOP = Path(sys.executable).parent / "fieldloop"
CFG = load_config()  # files and environment only: no network at parse time
CONTRACTS = load_contracts(CFG.contracts_dir, CFG.allowed_regions)
TASKS = sorted(TASK_LAYOUTS)


@dag(
    dag_id="fieldloop_train",
    description="Fine-tune the models whose gold data changed and register candidates in MLflow",
    schedule=AssetAny(
        *[a for name in TASKS for a in [*gold_assets(CONTRACTS, name), *hard_case_assets(CONTRACTS, name)]]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs move the same aliases and frozen holdouts
    tags=["fieldloop", "training"],
    doc_md=__doc__,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": pendulum.duration(minutes=2)},
    params={
        "task": Param(
            None,
            type=["null", "string"],
            enum=[None, *TASKS],
            description="Train only this task's models (default: those whose gold data changed).",
        ),
        "tenant": Param(
            None,
            type=["null", "string"],
            description="With task: train fieldloop.<task>.<tenant>; alone: only that tenant's models.",
        ),
    },
)
def fieldloop_train() -> None:
    @task
    def plan(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> list[str]:
        """The `fieldloop train` arguments of each model to train (a TrainRequest's flags, shell-quoted)."""
        from training_jobs.request import TrainRequest
        from training_jobs.schedule import models_for

        params = params or {}
        changed = [a.name.removeprefix("fieldloop.gold.") for a in triggering_asset_events or []] or None
        targets = models_for(CONTRACTS, changed, params.get("task"), params.get("tenant"))
        print("models to train: " + (", ".join(t.name for t in targets) or "none"))
        return [shlex.join(TrainRequest(t.task, t.tenant).to_argv()) for t in targets]

    @task.bash(outlets=[model_asset(name) for name in TASKS])
    def train_model(args: str) -> str:
        return f"{FIELDLOOP} train {args}"

    train_model.expand(args=plan())


fieldloop_train()
