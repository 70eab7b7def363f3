"""Errors of the training jobs.

Every one is a :class:`TrainingError`, so a caller that only wants "training refused"
catches one type; the domain errors carry what a caller could act on (``.model``,
``.table``, ``.tables``) and format their own message, which says what was wrong and
what to do next. The kernel's :class:`~fieldloop.errors.ContaminationError` (an input
may not train the model) is raised as it is: the rule is the kernel's, not training's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fieldloop.errors import FieldloopError
from fieldloop.registry import CHAMPION


class TrainingError(FieldloopError):
    """Base of every error the training jobs raise on purpose."""


class UnknownTaskError(TrainingError):
    """No model task of that name."""

    def __init__(self, task: str, known: Sequence[str]) -> None:
        self.task, self.known = task, tuple(known)
        super().__init__(f"no model task '{task}'; known tasks: {', '.join(self.known)}")


class RequestError(TrainingError):
    """A train request that cannot be valid, whatever the lake holds (``.option`` names the flag)."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        self.option, self.value = option, value
        super().__init__(f"{option} {value!r}: {expected}")


class DatasetError(TrainingError):
    """The inputs cannot be found, read or used as asked; ``.table`` is the one at fault, when one is."""

    def __init__(self, message: str, table: str | None = None) -> None:
        self.table = table
        super().__init__(message)


class HoldoutMovedError(DatasetError):
    """The model's frozen holdout lies in tables this run does not read (the lake moved, or its inputs changed)."""

    def __init__(self, model: str, tables: Sequence[str], reason: str) -> None:
        self.model, self.tables = model, tuple(tables)
        super().__init__(f"the holdout of {model} {reason}", self.tables[0] if self.tables else None)


ChampionProblem = Literal["lineage", "checkpoint", "format", "width", "architecture"]


class ChampionError(TrainingError):
    """The champion's weights cannot be built upon: what they learned from cannot be checked
    (no lineage), they cannot be loaded (no checkpoint, another format), or they do not fit
    this job's networks (another width or architecture).

    ``.model`` is the registered model whose champion it is, ``.version`` its version,
    ``.problem`` which of those it was.
    """

    def __init__(
        self, model: str, version: str, problem: ChampionProblem, detail: str, advice: str = "train with --from-scratch"
    ) -> None:
        self.model, self.version, self.problem = model, version, problem
        super().__init__(f"{CHAMPION} v{version} of {model} {detail}; {advice}")


class ExportError(TrainingError):
    """An ONNX build does not reproduce the PyTorch model it was exported from."""

    def __init__(self, build: str, max_abs_diff: float, tolerance: float) -> None:
        self.build, self.max_abs_diff, self.tolerance = build, max_abs_diff, tolerance
        super().__init__(
            f"the ONNX student differs from PyTorch by {max_abs_diff:.2e} (> {tolerance}); "
            "the export is wrong, the run is marked failed and nothing was registered: "
            "check that the model's forward uses only operators ONNX export supports, "
            "with torch and onnxscript at the locked versions"
        )


class DistributedRunError(TrainingError):
    """A training job under torchrun ended without a result; each failed rank logged its own error."""

    def __init__(self, nproc: int, exit_code: int) -> None:
        self.nproc, self.exit_code = nproc, exit_code
        super().__init__(
            f"torchrun with {nproc} processes failed (exit {exit_code}); the 'error (rank N ...)' lines above "
            "say why (run without --json to see the ranks' logs)"
        )
