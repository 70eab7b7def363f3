"""Rank 0's side of a run: lineage, inputs, edge build, metrics and models logged; the candidate registered.

Called by :func:`training_jobs.train._publish` in this order, inside the run:

1. :func:`record_lineage`: the rule once more, on the lineage exactly as it will be
   recorded (read back from its tags) and the contracts as they are now, so a use revoked
   during the run stops it here, before anything is uploaded; then the tags;
2. :func:`log_inputs`: each input and holdout table as an MLflow dataset at its Delta version;
3. :func:`log_artifacts`: the edge build (``edge/``: ONNX files and the typed
   :class:`~fieldloop.registry.EdgeManifest`) and the checkpoint a later run fine-tunes from;
4. :func:`log_metrics`, :func:`log_models`: the student (the registered model) and the teacher;
5. :func:`register`: the holdout frozen, the version registered with its lineage as tags
   and the ``candidate`` alias.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fieldloop.classes import enforce_training_rule
from fieldloop.lineage import ModelLineage
from fieldloop.registry import CANDIDATE, EDGE_ARTIFACT_DIR, MANIFEST_FILE, TASK_TAG, TENANT_TAG, EdgeBuild
from training_jobs.champion import CHECKPOINT, checkpoint
from training_jobs.data import rule_inputs
from training_jobs.holdout import HOLDOUT_CUT_TAG, HOLDOUT_TAG, Holdout

if TYPE_CHECKING:
    from fieldloop.config import FieldloopConfig
    from training_jobs.train import Fitted, TrainData, TrainPlan

EDGE_CHECK_ROWS = 256  # holdout rows each ONNX build is compared with PyTorch on (and timed on)


def git_commit() -> str:
    """The code's commit (``-dirty`` with uncommitted changes to tracked files), else ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage(plan: TrainPlan, holdout: Holdout, run_id: str, metrics: Mapping[str, float] | None = None) -> ModelLineage:
    """This run's inputs, plus those behind the champion's weights it started from (inherited);
    with hard cases, how they were mixed in and split, and how this model and the champion did
    on the held-out ones (``metrics``: the run's, ``hard_cases_*``)."""
    inputs = [p.lineage() for p in (*plan.inputs, *plan.hard_cases)]
    seen = {(i.table, i.delta_version) for i in inputs}
    if plan.champion is not None:
        inputs += [i for i in plan.champion.lineage.inputs if (i.table, i.delta_version) not in seen]
    extra = {
        "task": plan.target.task,
        "tenant": plan.target.tenant or "",
        "git_commit": git_commit(),
        "run_id": run_id,
        "seed": str(plan.seed),
        "init": plan.champion.label if plan.champion is not None else "scratch",
        "holdout": json.dumps(holdout.as_dict(), sort_keys=True),
        "contract_versions": ",".join(
            sorted({f"{p.governance.contract_id}@{p.governance.contract_version}" for p in plan.inputs})
        ),
    }
    if plan.champion is not None:
        extra["parent"] = plan.champion.label
    if plan.hard_cases:  # which inputs were hard cases, and how they were mixed in and split
        judged = {
            k.removeprefix("hard_cases_"): round(v, 6)
            for k, v in (metrics or {}).items()
            if k.startswith("hard_cases_rmse_") or k == "hard_cases_rows"
        }
        extra["hard_cases"] = json.dumps(
            {
                "tables": [f"{p.table}@v{p.version}" for p in plan.hard_cases],
                "weight": plan.hard_case_weight,
                "holdout_salt": plan.hard_case_salt,
                "holdout_fraction": plan.hard_case_fraction,
                "held_out": judged,  # rmse_student, rmse_champion, ... rows: the gain the guardrails judge again
            },
            sort_keys=True,
        )
    return ModelLineage(inputs, extra)


def record_lineage(
    cfg: FieldloopConfig, plan: TrainPlan, holdout: Holdout, run_id: str, metrics: Mapping[str, float] | None = None
) -> dict[str, str]:
    """The rule on the lineage as it will be recorded, then its tags on the run; returns the tags.

    Raises:
        ContaminationError: the contracts as they are now refuse an input (nothing uploaded).
    """
    import mlflow

    from fieldloop.contracts import load_contracts

    tags = lineage(plan, holdout, run_id, metrics).to_mlflow_tags()
    recorded = ModelLineage.from_mlflow_tags(tags)
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    enforce_training_rule(rule_inputs(recorded.inputs, contracts), plan.target)
    mlflow.set_tags(tags)
    return tags


def log_inputs(plan: TrainPlan, data: TrainData) -> None:
    """Every table read, as a dataset of the run at its Delta version: ``training`` or ``holdout``."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    logged = [(p, data.training[p.name], "", "training") for p in plan.inputs]
    logged += [(p, data.held[p.table], " holdout", "holdout") for p in plan.held]
    for p, rows, suffix, context in logged:
        dataset = mlflow.data.from_numpy(
            rows.x,
            targets=rows.y,
            name=f"{p.table}@v{p.version}{suffix}",
            source=DeltaDatasetSource(path=p.path, delta_table_version=p.version),
        )
        mlflow.log_input(dataset, context=context)


def log_artifacts(plan: TrainPlan, data: TrainData, fitted: Fitted) -> dict[str, EdgeBuild]:
    """The edge build with its manifest under ``edge/``, and the checkpoint; returns the builds."""
    import mlflow
    import torch

    from training_jobs.export import build_edge, edge_manifest, self_test_rows

    student, teacher = fitted.nets.student, fitted.nets.teacher
    check = np.ascontiguousarray(data.holdout_rows.x[:EDGE_CHECK_ROWS])
    self_test = self_test_rows(data.holdout_rows.x)
    with tempfile.TemporaryDirectory() as tmp:
        edge_dir = Path(tmp) / EDGE_ARTIFACT_DIR
        builds = build_edge(student, check, edge_dir, self_test=self_test)
        manifest = edge_manifest(plan.target.task, plan.target.name, list(type(student).outputs), builds, self_test)
        (edge_dir / MANIFEST_FILE).write_text(manifest.to_json())
        mlflow.log_artifacts(str(edge_dir), EDGE_ARTIFACT_DIR)
        weights = Path(tmp) / CHECKPOINT
        weights.parent.mkdir()
        torch.save(checkpoint(plan.target.task, data.dim, teacher, student), weights)
        mlflow.log_artifact(str(weights), str(Path(CHECKPOINT).parent))
    return builds


def log_metrics(judged: dict[str, float], fitted: Fitted, edge: dict[str, EdgeBuild]) -> dict[str, float]:
    """The holdout metrics, each edge build's size, latency and deviation, the networks' sizes; returns them all."""
    import mlflow

    from training_jobs.models import parameter_count

    metrics = dict(judged)
    for label, build in edge.items():
        metrics.update(
            {
                f"edge_{label}_bytes": build.bytes,
                f"edge_{label}_p50_us": build.p50_us,
                f"edge_{label}_p99_us": build.p99_us,
                f"edge_{label}_max_abs_diff": build.max_abs_diff,
            }
        )
    metrics["teacher_parameters"] = parameter_count(fitted.nets.teacher)
    metrics["student_parameters"] = parameter_count(fitted.nets.student)
    mlflow.log_metrics(metrics)
    return metrics


def log_models(fitted: Fitted, example: np.ndarray) -> str:
    """The student as ``model`` (what is registered) and the teacher as ``teacher``; returns the student's URI."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    student, teacher = fitted.nets.student, fitted.nets.teacher
    example = np.ascontiguousarray(example)
    with torch.no_grad():
        signature = infer_signature(example, student(torch.from_numpy(example)).numpy())
        teacher_signature = infer_signature(example, teacher(torch.from_numpy(example)).numpy())
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    info = mlflow.pytorch.log_model(
        student, name="model", signature=signature, input_example=example, pip_requirements=requirements
    )
    mlflow.pytorch.log_model(
        teacher, name="teacher", signature=teacher_signature, input_example=example, pip_requirements=requirements
    )
    return info.model_uri


def register(
    cfg: FieldloopConfig,
    plan: TrainPlan,
    holdout: Holdout,
    model_uri: str,
    tags: dict[str, str],
    echo: Callable[[str], None],
) -> str:
    """Freeze the holdout, register the student with its lineage tags as ``candidate``; returns the version."""
    import mlflow

    target = plan.target
    client = mlflow.MlflowClient(cfg.mlflow.uri)
    # The holdout is frozen by the first version registered (trial runs leave it alone).
    if plan.cut is None:
        client.set_experiment_tag(plan.experiment_id, HOLDOUT_CUT_TAG, holdout.cut.to_tag())
    client.set_experiment_tag(plan.experiment_id, HOLDOUT_TAG + target.name, holdout.tables_tag())
    version = mlflow.register_model(model_uri, target.name, tags=tags)
    client.set_registered_model_alias(target.name, CANDIDATE, version.version)
    client.set_registered_model_tag(target.name, TASK_TAG, target.task)
    if target.tenant:
        client.set_registered_model_tag(target.name, TENANT_TAG, target.tenant)
    echo(f"registered {target.name} v{version.version} as @{CANDIDATE}")
    return str(version.version)
