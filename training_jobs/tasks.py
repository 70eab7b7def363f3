"""Model tasks: what the networks are, how they learn and how they are judged.

Which gold tables feed a task is declared in the contract files (``[[gold]]``, read by
:func:`fieldloop.datasets.training_tables`), not known here.

A task trains a larger cloud **teacher** on the gold rows, then distils a small edge
**student** from it; the student is what goes to devices. Features and targets are the
gold tables', laid out as :data:`fieldloop.datasets.TASK_LAYOUTS` says:

* ``vehicle-longitudinal``: ``features`` = the last 10 frames (2 s at 5 Hz) of speed,
  acceleration, brake, steering and yaw rate, oldest first, then the perception counts
  (vehicles, pedestrians, cyclists): 53 values. ``target`` = the acceleration the driver
  chose 1 s later (m/s²). The student learns from the target and the teacher half each.
  Judged on the holdout by RMSE against the target, next to the persistence baseline
  (predict the current acceleration) that a useful model has to beat.
* ``plant-anomaly``: ``features`` = the last 10 readings of one sensor, z-scored per
  sensor. No labels are trusted for training (the teacher is an autoencoder); the sensor's
  own ``bad_quality`` flag is used on the holdout only, as a weak label for AUROC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fieldloop.datasets import FeatureLayout, layout
from training_jobs.errors import UnknownTaskError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Task:
    """What the training job needs to know of a model task; subclasses hold the learning."""

    name: ClassVar[str]
    summary: ClassVar[str]
    teacher_hidden: ClassVar[tuple[int, ...]]
    student_hidden: ClassVar[tuple[int, ...]]

    @property
    def layout(self) -> FeatureLayout:
        """The task's gold rows: features by name, and the device, order and label columns."""
        return layout(self.name)

    def build(self, dim: int) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def calibrate(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor, normalization: bool) -> None:
        """Set the buffers that depend on the training features (before the teacher trains)."""
        raise NotImplementedError

    def after_teacher(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> None:
        """Set buffers that depend on the trained teacher (before the student trains)."""

    def teacher_loss(self, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def student_loss(self, student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError


def _copy_buffers(source: nn.Module, dest: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        getattr(dest, name).copy_(getattr(source, name))


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean().sqrt())


class VehicleLongitudinal(Task):
    name = "vehicle-longitudinal"
    summary = "safe longitudinal acceleration from 2 s of vehicle signals, with an OOD score"
    teacher_hidden = (128, 128)
    student_hidden = (32,)
    distill_weight = 0.5  # share of the student's loss that is matching the teacher
    # features that must never raise the command (the guardrail policy's properties): more
    # road users in view, harder braking in the newest frame
    never_raise = ("perception.vehicles", "perception.pedestrians", "perception.cyclists", "brake")
    # the actuator's range (m/s²), as the vehicles have it; the guardrail policy's envelope is
    # the same (a unit test holds them equal)
    command_range = (-6.0, 3.0)
    # how far the command may depart from the current acceleration (m/s²): twice this is
    # the most the model adds to a frame-to-frame step, inside the runtime monitor's
    # max_step of 2 m/s² with room for int8 rounding (a unit test holds it there)
    max_correction = 0.9

    def build(self, dim: int) -> tuple[nn.Module, nn.Module]:
        from training_jobs.models import LongitudinalNet

        current = self.layout.index(self.layout.target_signal)  # the newest frame's acceleration
        decreasing = tuple(self.layout.index(name) for name in self.never_raise)
        return (
            LongitudinalNet(dim, self.teacher_hidden, current, decreasing, self.command_range, self.max_correction),
            LongitudinalNet(dim, self.student_hidden, current, decreasing, self.command_range, self.max_correction),
        )

    def calibrate(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor, normalization: bool) -> None:
        if normalization:
            teacher.calibrate(x)
        else:  # fine-tuning keeps the champion's normalization (its weights expect it)
            teacher.calibrate_ood(x)
        _copy_buffers(teacher, student, ("mean", "std", "precision", "q99"))

    def teacher_loss(self, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((teacher.predict(x).squeeze(-1) - y) ** 2).mean()

    def student_loss(self, student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            soft = teacher.predict(x).squeeze(-1)
        pred = student.predict(x).squeeze(-1)
        w = self.distill_weight
        return (1 - w) * ((pred - y) ** 2).mean() + w * ((pred - soft) ** 2).mean()

    def evaluate(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        import torch

        with torch.no_grad():
            t, s = teacher(x), student(x)
        current_accel = x[:, self.layout.index("accel_mps2")]  # the newest frame's
        return {
            "holdout_rmse_teacher": _rmse(t[:, 0], y),
            "holdout_rmse_student": _rmse(s[:, 0], y),
            "holdout_rmse_persistence": _rmse(current_accel, y),
            "holdout_rmse_student_vs_teacher": _rmse(s[:, 0], t[:, 0]),
            "holdout_ood_mean": float(s[:, 1].mean()),
            "holdout_ood_rate": float((s[:, 1] > 0.5).float().mean()),
        }


class PlantAnomaly(Task):
    name = "plant-anomaly"
    summary = "anomaly score for a window of plant sensor readings"
    teacher_hidden = (32, 3, 32)
    student_hidden = (32,)

    def build(self, dim: int) -> tuple[nn.Module, nn.Module]:
        from training_jobs.models import AnomalyNet

        return AnomalyNet(dim, self.teacher_hidden, autoencoder=True), AnomalyNet(
            dim, self.student_hidden, autoencoder=False
        )

    def calibrate(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor, normalization: bool) -> None:
        if normalization:
            teacher.calibrate(x)
        _copy_buffers(teacher, student, ("mean", "std"))

    def after_teacher(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> None:
        import torch

        with torch.no_grad():
            teacher.calibrate_score(x)
        _copy_buffers(teacher, student, ("q99",))

    def teacher_loss(self, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return teacher.error(x).mean()

    def student_loss(self, student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            soft = torch.log1p(teacher.error(x))
        return ((torch.log1p(student.error(x)) - soft) ** 2).mean()

    def evaluate(self, teacher: nn.Module, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        import torch

        with torch.no_grad():
            t, s = teacher(x).squeeze(-1), student(x).squeeze(-1)
            err = teacher.error(x).mean()
        metrics = {
            "holdout_reconstruction_error": float(err),
            "holdout_score_mae_student_vs_teacher": float((s - t).abs().mean()),
            "holdout_anomaly_rate": float((s > 0.5).float().mean()),
        }
        labels = y.numpy().astype(bool)
        if labels.any() and not labels.all():  # AUROC needs both classes
            metrics["holdout_auroc_teacher"] = auroc(t.numpy(), labels)
            metrics["holdout_auroc_student"] = auroc(s.numpy(), labels)
        return metrics


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos, neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


TASKS: dict[str, Task] = {t.name: t for t in (VehicleLongitudinal(), PlantAnomaly())}


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        UnknownTaskError: no such task; the message names the known ones.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(name, sorted(TASKS)) from None
