"""The training job: pinned gold inputs -> teacher -> distilled student -> MLflow model version.

One entry point for one process (``fieldloop train``) and for many
(``torchrun --nproc-per-node N -m training_jobs.train ...``, DDP over gloo on CPU):

1. inputs are pinned and the contamination rule is applied before anything is read;
2. the holdout is frozen on a model's first run (the hash cut-off over devices and the
   table versions, kept as a tag of the task's MLflow experiment), so every later model
   of that name is judged on the same rows;
3. the teacher starts from the ``champion`` alias's weights when there is one, else from
   scratch, and trains; the student is distilled from it. Seeded and deterministic on CPU;
4. rank 0 evaluates on the holdout, builds the edge files (ONNX fp32 and int8, checked and
   timed), logs everything to the task's experiment, applies the rule again to the lineage
   it is about to write, registers the student as ``fieldloop.<task>[.<tenant>]`` and points
   ``candidate`` at it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fieldloop.classes import ModelTarget, enforce_training_rule, valid_tenant
from fieldloop.errors import FieldloopError
from fieldloop.lineage import LineageError, ModelLineage
from training_jobs.data import (
    DatasetError,
    PinnedInput,
    Rows,
    device_hash,
    in_holdout,
    pin,
    read,
    resolve,
    rule_inputs,
    training_inputs,
)
from training_jobs.tasks import Task, get_task

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fieldloop.config import FieldloopConfig

logger = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
HOLDOUT_TAG = "fieldloop.holdout."  # + model name: the frozen holdout's tables and versions
HOLDOUT_CUT_TAG = "fieldloop.holdout_cut"  # the task's device-hash cut-off, shared by its models
CHECKPOINT = "checkpoint/weights.pt"
CHECKPOINT_FORMAT = 1


class HoldoutMovedError(DatasetError):
    """The model's frozen holdout lies in tables this run does not read (the lake moved, or its inputs changed)."""


@dataclass(frozen=True)
class TrainRequest:
    task: str
    tenant: str | None = None
    tables: tuple[str, ...] = ()  # NAME or NAME@VERSION; default: what the task may use
    epochs: int | None = None
    seed: int | None = None
    register: bool = True
    from_champion: bool = True
    reset_holdout: bool = False


@dataclass
class TrainResult:
    model_name: str
    run_id: str
    experiment: str
    version: str | None
    uri: str | None
    init: str
    inputs: list[str]
    holdout: dict[str, Any]
    rows: dict[str, int]
    metrics: dict[str, float]
    epochs: dict[str, list[float]]
    edge: dict[str, dict[str, Any]]
    lineage_tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world


def start_distributed() -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only; no other interface is ours to use
    dist.init_process_group("gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def git_commit() -> str:
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


class _Objective:
    """``loss(model, frozen, x, y)`` as a module whose forward DDP can wrap (the frozen one is hidden)."""

    def __new__(cls, loss: Callable[..., torch.Tensor], model: nn.Module, frozen: nn.Module | None = None) -> nn.Module:
        from torch import nn

        class Objective(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model
                self._frozen = (frozen,)  # a tuple: not a submodule, so its parameters are not trained

            def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return loss(self.model, self._frozen[0], x, y)

        return Objective()


def _fit(
    objective: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    dist: Dist,
    on_epoch: Callable[[int, float], None],
) -> list[float]:
    """Adam over this rank's equal share of a seeded shuffle each epoch; mean loss per epoch."""
    import torch

    module: nn.Module = objective
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(objective, forward_sync_buffers=False)
    opt = torch.optim.Adam(objective.parameters(), lr=lr)
    share = len(y) // dist.world  # every rank takes as many steps as the others, or DDP would wait forever
    per_rank = max(1, batch // dist.world)
    losses = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(y), generator=g)[dist.rank * share : (dist.rank + 1) * share]
        total = 0.0
        module.train()
        for start in range(0, share, per_rank):
            idx = order[start : start + per_rank]
            loss = module(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(dist.mean(total / max(share, 1)))
        on_epoch(epoch, losses[-1])
    module.eval()
    return losses


def _new_cut(task: Task, rows: dict[str, Rows], fraction: float) -> dict[str, Any]:
    """The task's holdout cut-off over device hashes, from the devices of its first registered model.

    It is at least ``fraction`` of the hash space, and high enough to hold out one device of
    the first run (however few there are). It is frozen for the task, for every model of it:
    a device is on the same side for the base model and each tenant's, so weights passed
    from one to another (a champion) never saw another model's holdout.
    """
    devices = sorted({str(d) for r in rows.values() for d in r.device})
    if len(devices) < 2:
        raise DatasetError(
            f"{task.name} needs rows of at least 2 devices (one for the holdout), the inputs have "
            f"{len(devices)}; let the fleet send more, then `fieldloop refine`"
        )
    hashes = sorted(device_hash(task.name, d) for d in devices)
    first = hashes[max(1, int(np.ceil(fraction * len(devices)))) - 1]
    cut = min(max(first, int(fraction * 2**64)), hashes[-2])  # ... and at least one device left to train on
    return {"salt": task.name, "cut": str(cut), "fraction": fraction}


def _is_holdout(rows: Rows, spec: dict[str, Any]) -> np.ndarray:
    return in_holdout(rows.device, spec["salt"], int(spec["cut"]))


@dataclass
class _Champion:
    label: str  # "champion vN of <model>"
    checkpoint: dict[str, Any]
    lineage: ModelLineage


def _champion(client: Any, target: ModelTarget) -> _Champion | None:
    """The model's champion (weights and lineage), else None.

    A tenant model without a champion of its own starts from the base model's champion:
    base weights hold only data any model may train on, so nothing crosses a tenant line.
    """
    import torch
    from mlflow.exceptions import MlflowException

    names = [target.name] + ([ModelTarget(target.task).name] if target.tenant else [])
    for name in names:
        try:
            version = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # no such model or alias
                continue
            raise
        label = f"{CHAMPION} v{version.version} of {name}"
        try:
            lineage = ModelLineage.from_mlflow_tags(version.tags)
        except LineageError as e:
            raise FieldloopError(
                f"{label} has no fieldloop lineage, so what its weights learned from cannot be "
                f"checked ({e}); point {CHAMPION} at a version fieldloop registered, or train with "
                "--from-scratch"
            ) from e
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = client.download_artifacts(version.run_id, CHECKPOINT, tmp)
            except (MlflowException, OSError) as e:
                raise FieldloopError(
                    f"{label}: its run {version.run_id} has no {CHECKPOINT} ({e}); train with --from-scratch"
                ) from e
            checkpoint = torch.load(local, map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise FieldloopError(
                f"{label} has a checkpoint of format {checkpoint.get('format')}, this job reads "
                f"{CHECKPOINT_FORMAT}; train with --from-scratch"
            )
        return _Champion(label, checkpoint, lineage)
    return None


def _holdout_pins(
    cfg: FieldloopConfig,
    target: ModelTarget,
    frozen: dict[str, Any],
    pinned: list[PinnedInput],
    contracts: Mapping[str, Any],
) -> list[PinnedInput]:
    """The frozen holdout's tables at their frozen versions, checked by the rule before anything is read."""
    by_path = {p.path: p for p in pinned}
    missing = sorted(path for path in frozen["tables"] if path not in by_path)
    if missing:
        raise HoldoutMovedError(
            f"the holdout of {target.name} was frozen on {', '.join(missing)}, which this run does "
            "not read, so its metrics would not compare with earlier versions; read those tables "
            "too, or pass --reset-holdout to freeze a new holdout"
        )
    pins = []
    for path, version in sorted(frozen["tables"].items()):
        current = by_path[path]
        if int(version) == current.version:
            pins.append(current)
            continue
        try:
            pins.append(pin(cfg, current.name, int(version)))
        except DatasetError as e:
            raise HoldoutMovedError(
                f"the holdout of {target.name} is {current.table}@v{version}, which can no longer "
                f"be read ({e}); pass --reset-holdout to freeze a new one"
            ) from e
    enforce_training_rule(training_inputs(pins, contracts), target)
    return pins


def train(
    cfg: FieldloopConfig, request: TrainRequest, dist: Dist | None = None, echo: Callable[[str], None] = logger.info
) -> TrainResult | None:
    """Run one training job; returns the result on rank 0 (None on the other ranks).

    Raises:
        ContaminationError: an input, or the data behind the champion's weights, may not
            train this model (nothing read, logged or registered).
        DatasetError: inputs missing, unreadable or too small.
    """
    import mlflow
    import torch
    from mlflow import MlflowClient

    from fieldloop.contracts import load_contracts

    dist = dist or Dist()
    task = get_task(request.task)
    if request.tenant is not None and not valid_tenant(request.tenant):
        raise FieldloopError(f"'{request.tenant}' is not a tenant id (lowercase letters, digits, '-')")
    target = ModelTarget(task.name, request.tenant)
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    seed = cfg.train.seed if request.seed is None else request.seed
    epochs = request.epochs or cfg.train.epochs
    client = MlflowClient(cfg.mlflow.uri)
    mlflow.set_tracking_uri(cfg.mlflow.uri)

    # Rank 0 decides what is read, applying the rule before any row is: the inputs, the data
    # behind the champion's weights, the frozen holdout. Every rank then reads exactly that.
    plan = None
    if dist.lead:
        pinned = resolve(cfg, task, target, request.tables, contracts)
        champion = _champion(client, target) if request.from_champion else None
        if champion is not None:
            enforce_training_rule(rule_inputs(champion.lineage.inputs, contracts), target)
        experiment_id = mlflow.set_experiment(f"fieldloop.{task.name}").experiment_id
        tags = client.get_experiment(experiment_id).tags
        frozen = (
            None
            if request.reset_holdout or HOLDOUT_TAG + target.name not in tags
            else json.loads(tags[HOLDOUT_TAG + target.name])
        )
        held_pins = _holdout_pins(cfg, target, frozen, pinned, contracts) if frozen else pinned
        cut = json.loads(tags[HOLDOUT_CUT_TAG]) if HOLDOUT_CUT_TAG in tags else None
        plan = {
            "pins": [(p.name, p.version) for p in pinned],
            "held": [(p.name, p.version) for p in held_pins],
            "experiment_id": experiment_id,
            "champion": champion,
            "cut": cut,
            "frozen_at": frozen["frozen_at"] if frozen else None,
        }
    plan = dist.share(plan)
    if not dist.lead:
        pinned = [pin(cfg, name, version) for name, version in plan["pins"]]
        held_pins = [pin(cfg, name, version) for name, version in plan["held"]]
    champion = plan["champion"]

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.train.threads)
    rows = {p.name: read(cfg, task, p) for p in pinned}
    cut = plan["cut"] or _new_cut(task, rows, cfg.train.holdout_fraction)  # the same on every rank: same rows
    spec = {
        **cut,
        "tables": {p.path: p.version for p in held_pins},
        "frozen_at": plan["frozen_at"] or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    # Train on the current versions minus holdout devices; evaluate on the frozen versions' holdout devices.
    training = {name: r.take(~_is_holdout(r, spec)) for name, r in rows.items()}
    held = {}
    for p in held_pins:
        source = rows[p.name] if (p.name, p.version) in plan["pins"] else read(cfg, task, p)
        held[p.table] = source.take(_is_holdout(source, spec))
    train_rows, holdout_rows = Rows.concat(list(training.values())), Rows.concat(list(held.values()))
    if len(train_rows) == 0 or len(holdout_rows) == 0 or train_rows.x.shape[1] != holdout_rows.x.shape[1]:
        raise DatasetError(
            f"{target.name}: {len(train_rows)} training rows and {len(holdout_rows)} holdout rows "
            f"(features {train_rows.x.shape[1]} and {holdout_rows.x.shape[1]}); both need rows of one "
            "width: let the fleet send more and `fieldloop refine`, or --reset-holdout"
        )
    dim = train_rows.x.shape[1]
    echo(
        f"{target.name}: {len(train_rows)} training rows from {len(set(train_rows.device))} devices, "
        f"{len(holdout_rows)} holdout rows from {len(set(holdout_rows.device))} devices "
        f"({', '.join(f'{p.table}@v{p.version}' for p in pinned)})"
    )

    teacher, student = task.build(dim)
    init = "scratch"
    if champion is not None:
        init, checkpoint = champion.label, champion.checkpoint
        if checkpoint["dim"] != dim:
            raise FieldloopError(
                f"the {init} takes {checkpoint['dim']} features, the gold rows have {dim}; train with --from-scratch"
            )
        try:
            teacher.load_state_dict(checkpoint["teacher"])
            student.load_state_dict(checkpoint["student"])
        except RuntimeError as e:
            raise FieldloopError(
                f"the {init} has another architecture than this job's {task.name} networks; train with --from-scratch"
            ) from e
    x = torch.from_numpy(train_rows.x)
    y = torch.from_numpy(train_rows.y)
    task.calibrate(teacher, student, x, normalization=champion is None)

    run = (
        mlflow.start_run(experiment_id=plan["experiment_id"], run_name=f"{target.name} seed {seed}")
        if dist.lead
        else None
    )
    try:
        curves: dict[str, list[float]] = {}
        params = {
            "task": task.name,
            "tenant": request.tenant or "",
            "model_name": target.name,
            "seed": seed,
            "epochs": epochs,
            "batch_size": cfg.train.batch_size,
            "learning_rate": cfg.train.learning_rate,
            "teacher_hidden": list(task.teacher_hidden),
            "student_hidden": list(task.student_hidden),
            "features": dim,
            "init": init,
            "world_size": dist.world,
            "holdout_fraction": spec["fraction"],
            "rows_train": len(train_rows),
            "rows_holdout": len(holdout_rows),
        }
        if run:
            mlflow.log_params(params)

        def logger_for(metric: str) -> Callable[[int, float], None]:
            def log(epoch: int, loss: float) -> None:
                curves.setdefault(metric, []).append(loss)
                if run:
                    mlflow.log_metric(metric, loss, step=epoch)
                    echo(f"  {metric} epoch {epoch + 1}/{epochs}: {loss:.5f}")

            return log

        started = time.perf_counter()
        _fit(
            _Objective(lambda m, _, xb, yb: task.teacher_loss(m, xb, yb), teacher),
            x,
            y,
            epochs,
            cfg.train.batch_size,
            cfg.train.learning_rate,
            seed,
            dist,
            logger_for("teacher_loss"),
        )
        task.after_teacher(teacher, student, x)
        teacher.eval()
        _fit(
            _Objective(task.student_loss, student, teacher),
            x,
            y,
            epochs,
            cfg.train.batch_size,
            cfg.train.learning_rate,
            seed + 1,
            dist,
            logger_for("student_loss"),
        )
        elapsed = time.perf_counter() - started
        if not dist.lead:
            return None
        metrics = task.evaluate(teacher, student, torch.from_numpy(holdout_rows.x), torch.from_numpy(holdout_rows.y))
        metrics["train_samples_per_s"] = 2 * epochs * len(train_rows) / elapsed
        metrics["first_epoch_loss"] = curves["teacher_loss"][0]
        job = _Job(
            cfg,
            request,
            task,
            target,
            pinned,
            held_pins,
            spec,
            plan["cut"] is None,
            champion,
            init,
            seed,
            plan["experiment_id"],
        )
        return _publish(
            job, teacher, student, dim, training, held, train_rows, holdout_rows, metrics, curves, run, echo
        )
    except BaseException:
        if run:
            mlflow.end_run("FAILED")
        raise
    finally:
        if run and mlflow.active_run():
            mlflow.end_run()


@dataclass
class _Job:
    """What rank 0 publishes a trained model with."""

    cfg: FieldloopConfig
    request: TrainRequest
    task: Task
    target: ModelTarget
    pinned: list[PinnedInput]
    held_pins: list[PinnedInput]
    spec: dict[str, Any]
    new_cut: bool
    champion: _Champion | None
    init: str
    seed: int
    experiment_id: str

    def lineage(self, run_id: str) -> ModelLineage:
        """This run's inputs, plus those behind the champion's weights it started from (inherited)."""
        inputs = [p.lineage() for p in self.pinned]
        seen = {(i.table, i.delta_version) for i in inputs}
        if self.champion is not None:
            inputs += [i for i in self.champion.lineage.inputs if (i.table, i.delta_version) not in seen]
        extra = {
            "task": self.task.name,
            "tenant": self.target.tenant or "",
            "git_commit": git_commit(),
            "run_id": run_id,
            "seed": str(self.seed),
            "init": self.init,
            "holdout": json.dumps(self.spec, sort_keys=True),
            "contract_versions": ",".join(
                sorted({f"{p.governance.contract_id}@{p.governance.contract_version}" for p in self.pinned})
            ),
        }
        if self.champion is not None:
            extra["parent"] = self.champion.label
        return ModelLineage(inputs, extra)


def _publish(
    job: _Job,
    teacher: nn.Module,
    student: nn.Module,
    dim: int,
    training: dict[str, Rows],
    held: dict[str, Rows],
    train_rows: Rows,
    holdout_rows: Rows,
    metrics: dict[str, float],
    curves: dict[str, list[float]],
    run: Any,
    echo: Callable[[str], None],
) -> TrainResult:
    """Rank 0: the rule on the lineage to be recorded, then edge build, artifacts, inputs; register."""
    import mlflow
    import torch
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.models import infer_signature

    from fieldloop.contracts import load_contracts
    from training_jobs.export import build_edge
    from training_jobs.models import parameter_count

    target, task = job.target, job.task
    lineage = job.lineage(run.info.run_id)
    tags = lineage.to_mlflow_tags()
    # The rule once more, on the lineage exactly as it will be recorded (read back from its
    # tags) and the contracts as they are now: a use revoked during the run stops it here.
    recorded = ModelLineage.from_mlflow_tags(tags)
    enforce_training_rule(
        rule_inputs(recorded.inputs, load_contracts(job.cfg.contracts_dir, job.cfg.allowed_regions)), target
    )
    mlflow.set_tags(tags)

    for p in job.pinned:
        r = training[p.name]
        mlflow.log_input(
            mlflow.data.from_numpy(
                r.x,
                targets=r.y,
                name=f"{p.table}@v{p.version}",
                source=DeltaDatasetSource(path=p.path, delta_table_version=p.version),
            ),
            context="training",
        )
    for p in job.held_pins:
        r = held[p.table]
        mlflow.log_input(
            mlflow.data.from_numpy(
                r.x,
                targets=r.y,
                name=f"{p.table}@v{p.version} holdout",
                source=DeltaDatasetSource(path=p.path, delta_table_version=p.version),
            ),
            context="holdout",
        )

    check = np.ascontiguousarray(holdout_rows.x[:256])
    with tempfile.TemporaryDirectory() as tmp:
        edge = build_edge(student, check, Path(tmp) / "edge")
        manifest = {
            "task": task.name,
            "model": target.name,
            "input": {"name": "features", "shape": ["batch", dim], "dtype": "float32"},
            "outputs": list(type(student).outputs),
            "latency": "batch 1, one ONNX Runtime thread, through the Python API (its call overhead included)",
            "builds": {k: v.as_dict() for k, v in edge.items()},
        }
        (Path(tmp) / "edge" / "manifest.json").write_text(json.dumps(manifest, indent=2))
        mlflow.log_artifacts(str(Path(tmp) / "edge"), "edge")
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "task": task.name,
            "dim": dim,
            "teacher": teacher.state_dict(),
            "student": student.state_dict(),
        }
        Path(tmp, "checkpoint").mkdir()
        torch.save(checkpoint, Path(tmp) / CHECKPOINT)
        mlflow.log_artifact(str(Path(tmp) / CHECKPOINT), "checkpoint")
    for label, build in edge.items():
        metrics.update(
            {
                f"edge_{label}_bytes": build.bytes,
                f"edge_{label}_p50_us": build.p50_us,
                f"edge_{label}_p99_us": build.p99_us,
                f"edge_{label}_max_abs_diff": build.max_abs_diff,
            }
        )
    metrics["teacher_parameters"], metrics["student_parameters"] = parameter_count(teacher), parameter_count(student)
    mlflow.log_metrics(metrics)

    example = check[:5]
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

    result = TrainResult(
        target.name,
        run.info.run_id,
        f"fieldloop.{task.name}",
        None,
        None,
        job.init,
        [f"{p.table}@v{p.version}" for p in job.pinned],
        job.spec,
        {
            "train": len(train_rows),
            "holdout": len(holdout_rows),
            "train_devices": len(set(train_rows.device)),
            "holdout_devices": len(set(holdout_rows.device)),
        },
        metrics,
        curves,
        {k: v.as_dict() for k, v in edge.items()},
        tags,
    )
    if not job.request.register:
        return result
    client = mlflow.MlflowClient(job.cfg.mlflow.uri)
    # The holdout is frozen by the first version registered (trial runs leave it alone).
    if job.new_cut:
        client.set_experiment_tag(
            job.experiment_id,
            HOLDOUT_CUT_TAG,
            json.dumps({k: job.spec[k] for k in ("salt", "cut", "fraction")}, sort_keys=True),
        )
    client.set_experiment_tag(
        job.experiment_id,
        HOLDOUT_TAG + target.name,
        json.dumps({"tables": job.spec["tables"], "frozen_at": job.spec["frozen_at"]}, sort_keys=True),
    )
    version = mlflow.register_model(info.model_uri, target.name, tags=tags)
    client.set_registered_model_alias(target.name, CANDIDATE, version.version)
    client.set_registered_model_tag(target.name, "fieldloop.task", task.name)
    if target.tenant:
        client.set_registered_model_tag(target.name, "fieldloop.tenant", target.tenant)
    result.version = str(version.version)
    result.uri = f"models:/{target.name}@{CANDIDATE}"
    echo(f"registered {target.name} v{version.version} as @{CANDIDATE}")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m training_jobs.train`` (what ``torchrun`` and ``fieldloop train --nproc`` start)."""
    from fieldloop.config import load_config

    parser = argparse.ArgumentParser(prog="python -m training_jobs.train", description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--tenant")
    parser.add_argument("--table", action="append", default=[])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-register", action="store_true")
    parser.add_argument("--from-scratch", action="store_true")
    parser.add_argument("--reset-holdout", action="store_true")
    parser.add_argument("--result-file", type=Path, help="where rank 0 writes the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config()
    except FieldloopError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    dist = start_distributed()
    request = TrainRequest(
        args.task,
        args.tenant,
        tuple(args.table),
        args.epochs,
        args.seed,
        not args.no_register,
        not args.from_scratch,
        args.reset_holdout,
    )
    try:
        result = train(cfg, request, dist, echo=print if dist.lead else logger.debug)
    except FieldloopError as e:
        print(f"error (rank {dist.rank} of {dist.world}): {e}", file=sys.stderr)
        return 1
    finally:
        if dist.world > 1:
            import torch.distributed

            torch.distributed.destroy_process_group()
    if result is not None and args.result_file:
        args.result_file.write_text(json.dumps(result.as_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
