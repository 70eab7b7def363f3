"""The champion a teacher starts from: the weights behind a model's ``champion`` alias.

Fine-tuning builds on what the champion learned, so its lineage must be checkable (the
kernel's rule is applied to it as to any input, and its inputs are inherited into the new
version's lineage) and its checkpoint must fit this job's networks. A tenant model without
a champion of its own starts from the base model's: base weights hold only data any model
may train on, so nothing crosses a tenant line.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fieldloop.classes import ModelTarget
from fieldloop.lineage import LineageError, ModelLineage
from fieldloop.registry import CHAMPION
from training_jobs.errors import ChampionError

if TYPE_CHECKING:
    from torch import nn

CHECKPOINT = "checkpoint/weights.pt"  # under the version's run: both networks' weights and buffers
# 2: the longitudinal nets predict a correction to persistence; format 1 weights meant the command itself
# 3: their road-user and brake features enter through a never-raising linear term, not the MLP
CHECKPOINT_FORMAT = 3


@dataclass(frozen=True)
class Champion:
    """A champion's weights and the lineage of the data behind them."""

    model: str
    version: str
    checkpoint: dict[str, Any]
    lineage: ModelLineage

    @property
    def label(self) -> str:
        """``champion vN of <model>``: how params, lineage and messages name it."""
        return f"{CHAMPION} v{self.version} of {self.model}"

    def load_into(self, teacher: nn.Module, student: nn.Module, dim: int, task: str) -> None:
        """Both networks take the champion's weights.

        Raises:
            ChampionError: the champion takes another number of features, or its networks
                have another architecture than ``task``'s.
        """
        if self.checkpoint["dim"] != dim:
            raise ChampionError(
                self.model,
                self.version,
                "width",
                f"takes {self.checkpoint['dim']} features, the gold rows have {dim}",
            )
        try:
            teacher.load_state_dict(self.checkpoint["teacher"])
            student.load_state_dict(self.checkpoint["student"])
        except RuntimeError as e:
            raise ChampionError(
                self.model, self.version, "architecture", f"has another architecture than this job's {task} networks"
            ) from e


def checkpoint(task: str, dim: int, teacher: nn.Module, student: nn.Module) -> dict[str, Any]:
    """What a later run needs to start from these networks (logged as :data:`CHECKPOINT`)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "task": task,
        "dim": dim,
        "teacher": teacher.state_dict(),
        "student": student.state_dict(),
    }


def find_champion(client: Any, target: ModelTarget) -> Champion | None:
    """The model's champion (weights and lineage), else the base model's for a tenant model, else None.

    Raises:
        ChampionError: the champion has no fieldloop lineage, no checkpoint, or one of
            another format.
    """
    from mlflow.exceptions import MlflowException

    names = [target.name] + ([ModelTarget(target.task).name] if target.tenant else [])
    for name in names:
        try:
            version = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # no such model or alias
                continue
            raise
        return _load(client, name, version)
    return None


def _load(client: Any, name: str, version: Any) -> Champion:
    import torch
    from mlflow.exceptions import MlflowException

    number = str(version.version)
    try:
        lineage = ModelLineage.from_mlflow_tags(version.tags)
    except LineageError as e:
        raise ChampionError(
            name,
            number,
            "lineage",
            f"has no fieldloop lineage, so what its weights learned from cannot be checked ({e})",
            f"point {CHAMPION} at a version fieldloop registered, or train with --from-scratch",
        ) from e
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(version.run_id, CHECKPOINT, tmp)
        except (MlflowException, OSError) as e:
            raise ChampionError(
                name, number, "checkpoint", f"has no {CHECKPOINT} in its run {version.run_id} ({e})"
            ) from e
        weights = torch.load(local, map_location="cpu", weights_only=True)
    if weights.get("format") != CHECKPOINT_FORMAT:
        raise ChampionError(
            name,
            number,
            "format",
            f"has a checkpoint of format {weights.get('format')}, this job reads {CHECKPOINT_FORMAT}",
        )
    return Champion(name, number, weights, lineage)
