"""The training job: pinned gold inputs -> teacher -> distilled student -> MLflow model version.

One entry point for one process (``fieldloop train``) and for many
(``torchrun --nproc-per-node N -m training_jobs.train ...``, DDP over gloo on CPU).
:func:`train` is four steps:

1. :func:`_plan` (rank 0): the inputs are pinned and the contamination rule is applied to
   them, to the data behind the champion's weights and to the frozen holdout, before any
   row is read; the decision is a frozen :class:`TrainPlan` every rank trains from;
2. :func:`_read` (every rank): the pinned rows, split by the task's device cut-off
   (:mod:`training_jobs.holdout`) into training rows and the model's frozen holdout;
3. :func:`_fit_models` (every rank): the teacher starts from the ``champion`` alias's
   weights when there is one (:mod:`training_jobs.champion`), else from scratch, and
   trains; the student is distilled from it (:mod:`training_jobs.fit`). Seeded and
   deterministic on CPU;
4. :func:`_publish` (rank 0): evaluation on the holdout, the edge files (ONNX fp32 and
   int8, checked, timed, with their manifest), everything logged to the task's
   experiment, the rule once more on the lineage about to be written, the student
   registered as ``fieldloop.<task>[.<tenant>]`` with the ``candidate`` alias
   (:mod:`training_jobs.publish`).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldloop.classes import ModelTarget, enforce_training_rule
from fieldloop.errors import FieldloopError
from fieldloop.registry import CANDIDATE
from training_jobs.champion import Champion, find_champion
from training_jobs.data import PinnedInput, Rows, hard_case_inputs, read, resolve, rule_inputs
from training_jobs.distributed import Dist, start_distributed, stop_distributed
from training_jobs.errors import DatasetError
from training_jobs.holdout import FrozenTables, Holdout, HoldoutCut, frozen_pins, in_holdout, utc_stamp
from training_jobs.request import TrainRequest, parser
from training_jobs.tasks import Task, get_task

if TYPE_CHECKING:
    from torch import nn

    from fieldloop.config import FieldloopConfig

__all__ = ["TrainPlan", "TrainRequest", "TrainResult", "main", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPlan:
    """What rank 0 decided before any row was read; every rank trains from exactly this."""

    request: TrainRequest
    target: ModelTarget
    seed: int
    epochs: int
    inputs: tuple[PinnedInput, ...]  # the tables trained on, at the versions every rank reads
    held: tuple[PinnedInput, ...]  # the model's holdout tables, at their frozen versions
    experiment_id: str
    champion: Champion | None  # the weights the teacher starts from; None: from scratch
    cut: HoldoutCut | None  # the task's frozen cut-off; None: this run draws the first
    frozen_at: str | None  # when the model's holdout was frozen; None: this run would freeze it
    hard_cases: tuple[PinnedInput, ...] = ()  # hard-case tables a fine-tune mixes in (and judges on)
    hard_case_weight: int = 1  # times a training hard case counts per epoch
    hard_case_fraction: float = 0.5  # share of the hash space whose devices' hard cases are held out

    @property
    def hard_case_salt(self) -> str:
        """Salts the device split of the hard cases (not the frozen holdout's: another cut)."""
        return f"{self.target.task}:hard-cases"

    @property
    def task(self) -> Task:
        return get_task(self.target.task)

    @property
    def experiment(self) -> str:
        return experiment_name(self.target.task)


@dataclass(frozen=True)
class TrainData:
    """The rows a run learns from and is judged on (the same on every rank)."""

    holdout: Holdout
    training: Mapping[str, Rows]  # per input name, held-out devices removed
    held: Mapping[str, Rows]  # per holdout table (gold/<name>), held-out devices only
    train_rows: Rows  # the hard cases trained on among them, once
    holdout_rows: Rows
    hard_train: Rows  # hard cases of devices neither held out by the frozen cut nor by the hard-case split
    hard_held: Rows  # hard cases of held-out devices: the second holdout, never trained on

    @property
    def dim(self) -> int:
        return self.train_rows.x.shape[1]

    def fit_rows(self, hard_case_weight: int) -> Rows:
        """The rows an epoch goes through: each training hard case ``hard_case_weight`` times."""
        if hard_case_weight <= 1 or len(self.hard_train) == 0:
            return self.train_rows
        return Rows.concat([self.train_rows, *[self.hard_train] * (hard_case_weight - 1)])

    def counts(self) -> dict[str, int]:
        """Rows and devices on each side."""
        return {
            "train": len(self.train_rows),
            "holdout": len(self.holdout_rows),
            "train_devices": len(set(self.train_rows.device)),
            "holdout_devices": len(set(self.holdout_rows.device)),
            "hard_cases_train": len(self.hard_train),
            "hard_cases_holdout": len(self.hard_held),
            "hard_cases_holdout_devices": len(set(self.hard_held.device)),
        }


@dataclass(frozen=True)
class Networks:
    """The teacher and student before training, and what they start from (``scratch`` or the champion)."""

    teacher: nn.Module
    student: nn.Module
    init: str
    champion: nn.Module | None = None  # the champion's student as it was, judged on the hard cases too


@dataclass(frozen=True)
class Fitted:
    """The trained networks, their loss curves (one mean loss per epoch) and the time both took."""

    nets: Networks
    curves: dict[str, list[float]]
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What a run made: the model version (when registered), its inputs, metrics and edge build."""

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


def experiment_name(task: str) -> str:
    """The MLflow experiment of a task's runs (every model of it: base and tenants')."""
    return f"fieldloop.{task}"


def train(
    cfg: FieldloopConfig, request: TrainRequest, dist: Dist | None = None, echo: Callable[[str], None] = logger.info
) -> TrainResult | None:
    """Run one training job; returns the result on rank 0 (None on the other ranks).

    Raises:
        ContaminationError: an input, or the data behind the champion's weights, may not
            train this model (nothing read, logged or registered).
        DatasetError: inputs missing, unreadable or too small (HoldoutMovedError: the
            model's frozen holdout is not among them).
        ChampionError: the champion's weights cannot be built upon.
        ExportError: the ONNX student does not reproduce the PyTorch one (nothing registered).
    """
    dist = dist or Dist()
    plan = dist.share(_plan(cfg, request) if dist.lead else None)
    data = _read(cfg, plan, echo)
    nets = _networks(cfg, plan, data)
    with _mlflow_run(plan, dist) as run:
        fitted = _fit_models(cfg, plan, data, nets, dist, run, echo)
        return _publish(cfg, plan, data, fitted, run, echo) if dist.lead else None


def _plan(cfg: FieldloopConfig, request: TrainRequest) -> TrainPlan:
    """Rank 0: what is read, each part checked by the rule before any row is: the inputs, the
    data behind the champion's weights, the frozen holdout."""
    import mlflow
    from mlflow import MlflowClient

    from fieldloop.contracts import load_contracts

    task = get_task(request.task)
    target = ModelTarget(task.name, request.tenant)
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    client = MlflowClient(cfg.mlflow.uri)
    mlflow.set_tracking_uri(cfg.mlflow.uri)
    inputs = resolve(cfg, task, target, request.tables, contracts)
    _check_artifact_residency(cfg, inputs, None, contracts)  # before the registry is asked anything
    champion = find_champion(client, target) if request.from_champion else None
    hard: list[PinnedInput] = []
    if champion is not None:
        enforce_training_rule(rule_inputs(champion.lineage.inputs, contracts), target)
        # what the champion's fleets found hard is for the fine-tune that follows it
        hard = hard_case_inputs(cfg, task, target, contracts)[0] if request.hard_cases else []
        _check_artifact_residency(cfg, [*inputs, *hard], champion, contracts)
    experiment_id = mlflow.set_experiment(experiment_name(task.name)).experiment_id
    tags = client.get_experiment(experiment_id).tags
    frozen = None if request.reset_holdout else FrozenTables.frozen(tags, target.name)
    return TrainPlan(
        request,
        target,
        seed=cfg.train.seed if request.seed is None else request.seed,
        epochs=request.epochs or cfg.train.epochs,
        inputs=tuple(inputs),
        held=tuple(frozen_pins(cfg, target, frozen, inputs, contracts) if frozen else inputs),
        experiment_id=experiment_id,
        champion=champion,
        cut=HoldoutCut.frozen(tags),
        frozen_at=frozen.frozen_at if frozen else None,
        hard_cases=tuple(hard),
        hard_case_weight=cfg.train.hard_case_weight,
        hard_case_fraction=cfg.train.hard_case_holdout_fraction,
    )


def _check_artifact_residency(
    cfg: FieldloopConfig, inputs: list[PinnedInput], champion: Champion | None, contracts: Mapping[str, Any]
) -> None:
    """The model's artifacts hold what its inputs (and the champion's) taught it: they may only be
    stored where every one of those contracts allows, which is checked before a row is read."""
    from fieldloop.errors import ResidencyError
    from fieldloop.residency import ResidencyGuard

    root = cfg.mlflow_artifact_root
    if root is None:
        raise ResidencyError(
            f"the MLflow server at {cfg.mlflow.uri} stores artifacts where this job cannot see, so their residency "
            "cannot be checked; set FIELDLOOP_MLFLOW_ARTIFACT_ROOT to that server's artifact store"
        )
    ids = {i.governance.contract_id for i in inputs}
    if champion is not None:
        ids |= {i.contract_id for i in champion.lineage.inputs if i.contract_id}
    ResidencyGuard.from_config(cfg).check(root, [contracts[cid] for cid in sorted(ids) if cid in contracts])


def _read(cfg: FieldloopConfig, plan: TrainPlan, echo: Callable[[str], None]) -> TrainData:
    """Every rank: train on the current versions minus holdout devices; judge on the frozen
    versions' holdout devices."""
    task = plan.task
    rows = {p.name: read(cfg, task, p) for p in plan.inputs}
    cut = plan.cut or HoldoutCut.first(task.name, rows, cfg.train.holdout_fraction)  # the same on every rank
    holdout = Holdout(cut, {p.path: p.version for p in plan.held}, plan.frozen_at or utc_stamp())
    training = {name: r.take(~cut.contains(r)) for name, r in rows.items()}
    current = {(p.name, p.version) for p in plan.inputs}
    held = {}
    for p in plan.held:
        source = rows[p.name] if (p.name, p.version) in current else read(cfg, task, p)
        held[p.table] = source.take(cut.contains(source))
    hard_train, hard_held = _hard_cases(cfg, plan, cut)
    train_rows = Rows.concat([*training.values(), hard_train])
    holdout_rows = Rows.concat(list(held.values()))
    if len(train_rows) == 0 or len(holdout_rows) == 0 or train_rows.x.shape[1] != holdout_rows.x.shape[1]:
        raise DatasetError(
            f"{plan.target.name}: {len(train_rows)} training rows and {len(holdout_rows)} holdout rows "
            f"(features {train_rows.x.shape[1]} and {holdout_rows.x.shape[1]}); both need rows of one "
            "width: let the fleet send more and `fieldloop refine`, or --reset-holdout"
        )
    echo(
        f"{plan.target.name}: {len(train_rows)} training rows from {len(set(train_rows.device))} devices, "
        f"{len(holdout_rows)} holdout rows from {len(set(holdout_rows.device))} devices "
        f"({', '.join(f'{p.table}@v{p.version}' for p in plan.inputs)})"
    )
    if plan.hard_cases:
        echo(
            f"  hard cases: {len(hard_train)} rows trained on (each x{plan.hard_case_weight}), "
            f"{len(hard_held)} of {len(set(hard_held.device))} held-out devices to judge on "
            f"({', '.join(f'{p.table}@v{p.version}' for p in plan.hard_cases)})"
        )
    return TrainData(holdout, training, held, train_rows, holdout_rows, hard_train, hard_held)


def _hard_cases(cfg: FieldloopConfig, plan: TrainPlan, cut: HoldoutCut) -> tuple[Rows, Rows]:
    """Every rank: the hard cases split by device into what the fine-tune learns from and the
    second holdout. A device the frozen cut holds out keeps its hard cases out of training too,
    so the frozen holdout stays unseen; of the others, the hard-case split holds out a share."""
    rows = Rows.concat([read(cfg, plan.task, p) for p in plan.hard_cases])
    if len(rows) == 0:
        return rows, rows
    split = int(plan.hard_case_fraction * 2**64)
    held = cut.contains(rows) | in_holdout(rows.device, plan.hard_case_salt, split)
    return rows.take(~held), rows.take(held)


def _networks(cfg: FieldloopConfig, plan: TrainPlan, data: TrainData) -> Networks:
    """Every rank: the task's networks, seeded, from the champion's weights when there is one,
    calibrated on the training features (before a run is started: a champion that does not
    fit leaves no failed run behind)."""
    import torch

    torch.manual_seed(plan.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.train.threads)
    teacher, student = plan.task.build(data.dim)
    init, before = "scratch", None
    if plan.champion is not None:
        plan.champion.load_into(teacher, student, data.dim, plan.task.name)
        init = plan.champion.label
        before = copy.deepcopy(student) if len(data.hard_held) else None
    # Fine-tuning keeps the champion's input normalization: its weights expect it.
    plan.task.calibrate(teacher, student, torch.from_numpy(data.train_rows.x), normalization=plan.champion is None)
    return Networks(teacher, student, init, before)


@contextmanager
def _mlflow_run(plan: TrainPlan, dist: Dist) -> Iterator[Any]:
    """Rank 0's MLflow run (None on the other ranks), ended FAILED if the job fails inside it."""
    if not dist.lead:
        yield None
        return
    import mlflow

    run = mlflow.start_run(experiment_id=plan.experiment_id, run_name=f"{plan.target.name} seed {plan.seed}")
    try:
        yield run
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    finally:
        if mlflow.active_run():
            mlflow.end_run()


def _fit_models(
    cfg: FieldloopConfig,
    plan: TrainPlan,
    data: TrainData,
    nets: Networks,
    dist: Dist,
    run: Any,
    echo: Callable[[str], None],
) -> Fitted:
    """Every rank: the teacher on its own loss, then the student distilled from it."""
    import mlflow
    import torch

    from training_jobs.fit import Objective, fit

    task, teacher, student = plan.task, nets.teacher, nets.student
    if run:
        mlflow.log_params(_params(cfg, plan, data, nets, dist))
    rows = data.fit_rows(plan.hard_case_weight)
    x, y = torch.from_numpy(rows.x), torch.from_numpy(rows.y)
    curves: dict[str, list[float]] = {}

    def phase(metric: str, objective: nn.Module, seed: int) -> None:
        on_epoch = _epoch_logger(curves, metric, plan.epochs, run, echo)
        fit(objective, x, y, plan.epochs, cfg.train.batch_size, cfg.train.learning_rate, seed, dist, on_epoch)

    started = time.perf_counter()
    phase("teacher_loss", Objective(lambda m, _, xb, yb: task.teacher_loss(m, xb, yb), teacher), plan.seed)
    task.after_teacher(teacher, student, x)
    teacher.eval()
    phase("student_loss", Objective(task.student_loss, student, teacher), plan.seed + 1)
    return Fitted(nets, curves, time.perf_counter() - started)


def _params(cfg: FieldloopConfig, plan: TrainPlan, data: TrainData, nets: Networks, dist: Dist) -> dict[str, Any]:
    return {
        "task": plan.target.task,
        "tenant": plan.target.tenant or "",
        "model_name": plan.target.name,
        "seed": plan.seed,
        "epochs": plan.epochs,
        "batch_size": cfg.train.batch_size,
        "learning_rate": cfg.train.learning_rate,
        "teacher_hidden": list(plan.task.teacher_hidden),
        "student_hidden": list(plan.task.student_hidden),
        "features": data.dim,
        "init": nets.init,
        "world_size": dist.world,
        "holdout_fraction": data.holdout.cut.fraction,
        "rows_train": len(data.train_rows),
        "rows_holdout": len(data.holdout_rows),
        "hard_case_weight": plan.hard_case_weight if plan.hard_cases else 0,
        "hard_case_holdout_fraction": plan.hard_case_fraction if plan.hard_cases else 0,
        "rows_hard_cases_train": len(data.hard_train),
        "rows_hard_cases_holdout": len(data.hard_held),
    }


def _epoch_logger(
    curves: dict[str, list[float]], metric: str, epochs: int, run: Any, echo: Callable[[str], None]
) -> Callable[[int, float], None]:
    """Keeps each epoch's loss in ``curves``; rank 0 also logs it to the run and echoes it."""

    def log(epoch: int, loss: float) -> None:
        curves.setdefault(metric, []).append(loss)
        if run:
            import mlflow

            mlflow.log_metric(metric, loss, step=epoch)
            echo(f"  {metric} epoch {epoch + 1}/{epochs}: {loss:.5f}")

    return log


def _publish(
    cfg: FieldloopConfig, plan: TrainPlan, data: TrainData, fitted: Fitted, run: Any, echo: Callable[[str], None]
) -> TrainResult:
    """Rank 0: the rule on the lineage as it will be recorded, then inputs, edge build, metrics
    and models logged; the student registered as the candidate unless this is a trial run."""
    from training_jobs import publish

    run_id = run.info.run_id
    judged = _evaluate(plan, data, fitted)
    tags = publish.record_lineage(cfg, plan, data.holdout, run_id, judged)
    publish.log_inputs(plan, data)
    edge = publish.log_artifacts(plan, data, fitted)
    metrics = publish.log_metrics(judged, fitted, edge)
    model_uri = publish.log_models(fitted, data.holdout_rows.x[:5])
    version = publish.register(cfg, plan, data.holdout, model_uri, tags, echo) if plan.request.register else None
    return TrainResult(
        model_name=plan.target.name,
        run_id=run_id,
        experiment=plan.experiment,
        version=version,
        uri=f"models:/{plan.target.name}@{CANDIDATE}" if version else None,
        init=fitted.nets.init,
        inputs=[f"{p.table}@v{p.version}" for p in plan.inputs],
        holdout=data.holdout.as_dict(),
        rows=data.counts(),
        metrics=metrics,
        epochs=fitted.curves,
        edge={label: build.model_dump(exclude={"self_test_outputs"}) for label, build in edge.items()},
        lineage_tags=tags,
    )


def _evaluate(plan: TrainPlan, data: TrainData, fitted: Fitted) -> dict[str, float]:
    """Rank 0: the task's metrics of both networks on the holdout, and the training throughput."""
    import torch

    holdout, nets = data.holdout_rows, fitted.nets
    metrics = plan.task.evaluate(nets.teacher, nets.student, torch.from_numpy(holdout.x), torch.from_numpy(holdout.y))
    metrics["train_samples_per_s"] = 2 * plan.epochs * len(data.fit_rows(plan.hard_case_weight)) / fitted.seconds
    metrics["first_epoch_loss"] = fitted.curves["teacher_loss"][0]
    if len(data.hard_held):
        metrics |= _hard_case_metrics(plan, data.hard_held, nets)
    return metrics


def _hard_case_metrics(plan: TrainPlan, held: Rows, nets: Networks) -> dict[str, float]:
    """The task's metrics on the second holdout (``hard_cases_*``), with the champion's beside
    the new model's: the fine-tune should do better where the field found the champion wanting."""
    import torch

    x, y = torch.from_numpy(held.x), torch.from_numpy(held.y)
    found = plan.task.evaluate(nets.teacher, nets.student, x, y)
    metrics = {k.replace("holdout_", "hard_cases_", 1): v for k, v in found.items() if k.startswith("holdout_")}
    if nets.champion is not None:
        before = plan.task.evaluate(nets.champion, nets.champion, x, y)
        metrics |= {
            k.replace("holdout_", "hard_cases_", 1).replace("_student", "_champion"): v
            for k, v in before.items()
            if k.startswith("holdout_") and k.endswith("_student")
        }
    metrics["hard_cases_rows"] = float(len(held))
    return metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m training_jobs.train`` (what ``torchrun`` and ``fieldloop train --nproc`` start)."""
    from fieldloop.config import load_config

    options = parser(description=__doc__.split("\n")[0])
    options.add_argument("--result-file", type=Path, help="where rank 0 writes the result as JSON")
    args = options.parse_args(argv)
    request = TrainRequest.from_options(vars(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config()
    except FieldloopError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    dist = start_distributed()
    try:
        result = train(cfg, request, dist, echo=print if dist.lead else logger.debug)
    except FieldloopError as e:
        print(f"error (rank {dist.rank} of {dist.world}): {e}", file=sys.stderr)
        return 1
    finally:
        stop_distributed(dist)
    if result is not None and args.result_file:
        args.result_file.write_text(json.dumps(result.as_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
