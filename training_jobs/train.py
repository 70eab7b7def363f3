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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fieldloop.classes import ModelTarget, enforce_training_rule, valid_tenant
from fieldloop.errors import FieldloopError
from fieldloop.lineage import ModelLineage
from training_jobs.data import DatasetError, PinnedInput, Rows, device_hash, in_holdout, pin, read, resolve, training_inputs
from training_jobs.tasks import Task, get_task

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fieldloop.config import FieldloopConfig

logger = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
HOLDOUT_TAG = "fieldloop.holdout."
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
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
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


def _fit(objective: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float, seed: int,
         dist: Dist, on_epoch: Callable[[int, float], None]) -> list[float]:
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
        order = torch.randperm(len(y), generator=g)[dist.rank * share:(dist.rank + 1) * share]
        total = 0.0
        module.train()
        for start in range(0, share, per_rank):
            idx = order[start:start + per_rank]
            loss = module(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(dist.mean(total / max(share, 1)))
        on_epoch(epoch, losses[-1])
    module.eval()
    return losses


def _holdout_spec(client: Any, experiment_id: str, model: str, pinned: list[PinnedInput], task: Task, rows: dict[str, Rows],
                  fraction: float, reset: bool) -> dict[str, Any]:
    """The model's frozen holdout, freezing it now if this is its first run (or ``reset``)."""
    tag = HOLDOUT_TAG + model
    existing = client.get_experiment(experiment_id).tags.get(tag)
    if existing and not reset:
        return json.loads(existing)
    devices = sorted({str(d) for r in rows.values() for d in r.device})
    if len(devices) < 2:
        raise DatasetError(f"{model} needs rows of at least 2 devices (one for the holdout), the inputs have "
                           f"{len(devices)}; let the fleet send more, then `fieldloop refine`")
    # The cut-off is the hash of the ceil(fraction * n)-th device: at least one device is held out,
    # and the same cut-off (frozen here) decides every later run, new devices included.
    hashes = sorted(device_hash(task.name, d) for d in devices)
    cut = hashes[max(1, int(np.ceil(fraction * len(devices)))) - 1]
    spec = {"tables": {p.path: p.version for p in pinned}, "salt": task.name, "cut": str(cut), "fraction": fraction,
            "frozen_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    client.set_experiment_tag(experiment_id, tag, json.dumps(spec, sort_keys=True))
    return spec


def _is_holdout(rows: Rows, spec: dict[str, Any]) -> np.ndarray:
    return in_holdout(rows.device, spec["salt"], int(spec["cut"]))


def _champion(client: Any, target: ModelTarget) -> tuple[str, dict[str, Any]] | None:
    """(``champion vN of <name>``, checkpoint) of the model's champion, else None.

    A tenant model without a champion of its own starts from the base model's champion:
    base weights hold only data any model may train on, so nothing crosses a tenant line.
    """
    import torch
    from mlflow.exceptions import MlflowException

    names = [target.name] + ([ModelTarget(target.task).name] if target.tenant else [])
    for name in names:
        try:
            version = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(version.run_id, CHECKPOINT, tmp)
            checkpoint = torch.load(local, map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise FieldloopError(f"{name}@{CHAMPION} (v{version.version}) has a checkpoint of format "
                                 f"{checkpoint.get('format')}, this job reads {CHECKPOINT_FORMAT}; train with --from-scratch")
        return f"{CHAMPION} v{version.version} of {name}", checkpoint
    return None


def train(cfg: FieldloopConfig, request: TrainRequest, dist: Dist | None = None,
          echo: Callable[[str], None] = logger.info) -> TrainResult | None:
    """Run one training job; returns the result on rank 0 (None on the other ranks).

    Raises:
        ContaminationError: an input may not train this model (nothing read, logged or registered).
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
    pinned = resolve(cfg, task, target, request.tables, contracts)  # the rule, before any data is read
    seed = cfg.train.seed if request.seed is None else request.seed
    epochs = request.epochs or cfg.train.epochs
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.train.threads)

    client = MlflowClient(cfg.mlflow.uri)
    mlflow.set_tracking_uri(cfg.mlflow.uri)
    experiment_name = f"fieldloop.{task.name}"
    rows = {p.name: read(cfg, task, p) for p in pinned}

    plan = None
    if dist.lead:
        experiment = mlflow.set_experiment(experiment_name)
        spec = _holdout_spec(client, experiment.experiment_id, target.name, pinned, task, rows,
                             cfg.train.holdout_fraction, request.reset_holdout)
        champion = _champion(client, target) if request.from_champion else None
        plan = {"experiment_id": experiment.experiment_id, "holdout": spec, "champion": champion}
    plan = dist.share(plan)
    spec, champion = plan["holdout"], plan["champion"]

    # Train on the current versions minus holdout devices; evaluate on the frozen versions' holdout devices.
    dim = next((r.x.shape[1] for r in rows.values() if len(r)), 0)
    train_rows = Rows.concat([r.take(~_is_holdout(r, spec)) for r in rows.values() if len(r)], dim)
    held: dict[str, Rows] = {}
    by_path = {p.path: p for p in pinned}
    for path, version in sorted(spec["tables"].items()):
        p = by_path.get(path)
        if p is None:
            continue  # a table this run does not read (and whose rule was not checked for this target)
        source = rows[p.name] if version == p.version else read(cfg, task, pin(cfg, p.name, version))
        held[p.table] = source.take(_is_holdout(source, spec))
    holdout_rows = Rows.concat(list(held.values()), dim)
    if not held:
        raise HoldoutMovedError(f"the holdout of {target.name} was frozen on {', '.join(sorted(spec['tables']))}, none of "
                           "which this run reads; pass --reset-holdout to freeze a new one (metrics will not "
                           "compare with earlier versions)")
    if len(train_rows) == 0 or len(holdout_rows) == 0:
        raise DatasetError(f"{target.name}: {len(train_rows)} training rows and {len(holdout_rows)} holdout rows; "
                           "both need rows: let the fleet send more, `fieldloop refine`, or --reset-holdout")
    echo(f"{target.name}: {len(train_rows)} training rows from {len(set(train_rows.device))} devices, "
         f"{len(holdout_rows)} holdout rows from {len(set(holdout_rows.device))} devices "
         f"({', '.join(f'{p.table}@v{p.version}' for p in pinned)})")

    teacher, student = task.build(dim)
    init = "scratch"
    if champion is not None:
        init, checkpoint = champion
        if checkpoint["dim"] != dim:
            raise FieldloopError(f"the {init} takes {checkpoint['dim']} features, the gold rows have {dim}; "
                                 "train with --from-scratch")
        teacher.load_state_dict(checkpoint["teacher"])
        student.load_state_dict(checkpoint["student"])
    x = torch.from_numpy(train_rows.x)
    y = torch.from_numpy(train_rows.y)
    task.calibrate(teacher, student, x, normalization=champion is None)

    run = mlflow.start_run(experiment_id=plan["experiment_id"], run_name=f"{target.name} seed {seed}") if dist.lead else None
    try:
        curves: dict[str, list[float]] = {}
        params = {"task": task.name, "tenant": request.tenant or "", "model_name": target.name, "seed": seed,
                  "epochs": epochs, "batch_size": cfg.train.batch_size, "learning_rate": cfg.train.learning_rate,
                  "teacher_hidden": list(task.teacher_hidden), "student_hidden": list(task.student_hidden),
                  "features": dim, "init": init, "world_size": dist.world, "holdout_fraction": spec["fraction"],
                  "rows_train": len(train_rows), "rows_holdout": len(holdout_rows)}
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
        _fit(_Objective(lambda m, _, xb, yb: task.teacher_loss(m, xb, yb), teacher), x, y, epochs,
             cfg.train.batch_size, cfg.train.learning_rate, seed, dist, logger_for("teacher_loss"))
        task.after_teacher(teacher, student, x)
        teacher.eval()
        _fit(_Objective(task.student_loss, student, teacher), x, y, epochs, cfg.train.batch_size,
             cfg.train.learning_rate, seed + 1, dist, logger_for("student_loss"))
        elapsed = time.perf_counter() - started
        if not dist.lead:
            return None
        metrics = task.evaluate(teacher, student, torch.from_numpy(holdout_rows.x), torch.from_numpy(holdout_rows.y))
        metrics["train_samples_per_s"] = 2 * epochs * len(train_rows) / elapsed
        metrics["first_epoch_loss"] = curves["teacher_loss"][0]
        return _publish(cfg, request, task, target, pinned, contracts, spec, init, teacher, student, dim,
                        train_rows, holdout_rows, rows, held, metrics, curves, run, echo)
    except BaseException:
        if run:
            mlflow.end_run("FAILED")
        raise
    finally:
        if run and mlflow.active_run():
            mlflow.end_run()


def _publish(cfg: FieldloopConfig, request: TrainRequest, task: Task, target: ModelTarget, pinned: list[PinnedInput],
             contracts: dict, spec: dict[str, Any], init: str, teacher: nn.Module, student: nn.Module, dim: int,
             train_rows: Rows, holdout_rows: Rows, rows: dict[str, Rows], held: dict[str, Rows], metrics: dict[str, float],
             curves: dict[str, list[float]], run: Any, echo: Callable[[str], None]) -> TrainResult:
    """Rank 0: edge build, artifacts, dataset inputs, lineage; the rule again; register."""
    import mlflow
    import torch
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.models import infer_signature

    from training_jobs.export import build_edge

    client = mlflow.MlflowClient(cfg.mlflow.uri)
    for p in pinned:
        source = DeltaDatasetSource(path=p.path, delta_table_version=p.version)
        r = rows[p.name]
        mlflow.log_input(mlflow.data.from_numpy(r.x, targets=r.y, source=source, name=f"{p.table}@v{p.version}"),
                         context="training")
    for p in pinned:
        if p.table in held:
            version = int(spec["tables"][p.path])
            r = held[p.table]
            source = DeltaDatasetSource(path=p.path, delta_table_version=version)
            mlflow.log_input(mlflow.data.from_numpy(r.x, targets=r.y, source=source, name=f"{p.table}@v{version} holdout"),
                             context="holdout")

    check = holdout_rows.x[:256] if len(holdout_rows) else train_rows.x[:256]
    with tempfile.TemporaryDirectory() as tmp:
        edge = build_edge(student, np.ascontiguousarray(check), Path(tmp) / "edge")
        manifest = {"task": task.name, "model": target.name, "input": {"name": "features", "shape": ["batch", dim],
                    "dtype": "float32"}, "outputs": list(type(student).outputs),
                    "builds": {k: v.as_dict() for k, v in edge.items()}}
        (Path(tmp) / "edge" / "manifest.json").write_text(json.dumps(manifest, indent=2))
        mlflow.log_artifacts(str(Path(tmp) / "edge"), "edge")
        checkpoint = {"format": CHECKPOINT_FORMAT, "task": task.name, "dim": dim,
                      "teacher": teacher.state_dict(), "student": student.state_dict()}
        Path(tmp, "checkpoint").mkdir()
        torch.save(checkpoint, Path(tmp) / CHECKPOINT)
        mlflow.log_artifact(str(Path(tmp) / CHECKPOINT), "checkpoint")
    for label, build in edge.items():
        metrics.update({f"edge_{label}_bytes": build.bytes, f"edge_{label}_p50_us": build.p50_us,
                        f"edge_{label}_p99_us": build.p99_us, f"edge_{label}_max_abs_diff": build.max_abs_diff})
    from training_jobs.models import parameter_count

    metrics["teacher_parameters"], metrics["student_parameters"] = parameter_count(teacher), parameter_count(student)
    mlflow.log_metrics(metrics)

    example = np.ascontiguousarray(check[:5])
    with torch.no_grad():
        signature = infer_signature(example, student(torch.from_numpy(example)).numpy())
        teacher_signature = infer_signature(example, teacher(torch.from_numpy(example)).numpy())
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    info = mlflow.pytorch.log_model(student, name="model", signature=signature, input_example=example,
                                    pip_requirements=requirements)
    mlflow.pytorch.log_model(teacher, name="teacher", signature=teacher_signature, input_example=example,
                             pip_requirements=requirements)

    lineage = ModelLineage([p.lineage() for p in pinned], extra={
        "task": task.name, "tenant": target.tenant or "", "git_commit": git_commit(), "run_id": run.info.run_id,
        "seed": str(request.seed if request.seed is not None else cfg.train.seed), "init": init,
        "holdout": json.dumps(spec, sort_keys=True),
        "contract_versions": ",".join(sorted(f"{p.governance.contract_id}@{p.governance.contract_version}" for p in pinned)),
    })
    tags = lineage.to_mlflow_tags()
    mlflow.set_tags(tags)
    result = TrainResult(target.name, run.info.run_id, f"fieldloop.{task.name}", None, None, init,
                         [f"{p.table}@v{p.version}" for p in pinned], spec,
                         {"train": len(train_rows), "holdout": len(holdout_rows),
                          "train_devices": len(set(train_rows.device)), "holdout_devices": len(set(holdout_rows.device))},
                         metrics, curves, {k: v.as_dict() for k, v in edge.items()}, tags)
    if not request.register:
        return result
    # The rule once more, from the lineage as it will be recorded, against the contracts as they are now.
    enforce_training_rule(training_inputs(pinned, _reload_contracts(cfg, contracts)), target)
    version = mlflow.register_model(info.model_uri, target.name, tags=tags)
    client.set_registered_model_alias(target.name, CANDIDATE, version.version)
    client.set_registered_model_tag(target.name, "fieldloop.task", task.name)
    if target.tenant:
        client.set_registered_model_tag(target.name, "fieldloop.tenant", target.tenant)
    result.version = str(version.version)
    result.uri = f"models:/{target.name}@{CANDIDATE}"
    echo(f"registered {target.name} v{version.version} as @{CANDIDATE}")
    return result


def _reload_contracts(cfg: FieldloopConfig, fallback: dict) -> dict:
    from fieldloop.contracts import load_contracts

    try:
        return load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    except FieldloopError:
        return fallback


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
    dist = start_distributed()
    request = TrainRequest(args.task, args.tenant, tuple(args.table), args.epochs, args.seed,
                           not args.no_register, not args.from_scratch, args.reset_holdout)
    try:
        result = train(load_config(), request, dist, echo=print if dist.lead else logger.debug)
    except FieldloopError as e:
        if dist.lead:
            print(f"error: {e}", file=sys.stderr)
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
