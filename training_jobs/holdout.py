"""The holdout: which devices a model is judged on, frozen so every version is judged alike.

Rows are split by a stable hash of the device, so a device is in train or holdout, never
both, whatever run or machine computes it. Two things are frozen, both as tags of the
task's MLflow experiment and both by the first version registered (trial runs leave them
alone):

* the task's **cut-off** over device hashes (:class:`HoldoutCut`, one per task): a device
  is on the same side for the base model and every tenant's, so weights passed from one to
  another (a champion) never saw another model's holdout;
* each model's **holdout tables** at their Delta versions (:class:`Holdout`): every later
  version of that model is judged on the same rows, or the run is refused
  (:class:`~training_jobs.errors.HoldoutMovedError`) unless ``--reset-holdout``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fieldloop.classes import ModelTarget, enforce_training_rule
from training_jobs.data import PinnedInput, Rows, pin, training_inputs
from training_jobs.errors import DatasetError, HoldoutMovedError

if TYPE_CHECKING:
    from fieldloop.config import FieldloopConfig
    from fieldloop.contracts import DataContract

HOLDOUT_TAG = "fieldloop.holdout."  # + model name: the frozen holdout's tables and versions
HOLDOUT_CUT_TAG = "fieldloop.holdout_cut"  # the task's device-hash cut-off, shared by its models


def device_hash(salt: str, device: str) -> int:
    """A stable 64-bit hash of (salt, device): the same on every run and machine."""
    return int.from_bytes(hashlib.sha256(f"{salt}\x1f{device}".encode()).digest()[:8], "big")


def in_holdout(devices: np.ndarray, salt: str, cut: int) -> np.ndarray:
    """True for rows whose device hashes at or below ``cut`` (the frozen holdout's cut-off)."""
    member = {d: device_hash(salt, str(d)) <= cut for d in set(devices.tolist())}
    return np.fromiter((member[d] for d in devices.tolist()), bool, len(devices))


@dataclass(frozen=True)
class HoldoutCut:
    """The task's cut-off: devices whose hash (salted with ``salt``) is at most ``cut`` are held out."""

    salt: str
    cut: int
    fraction: float  # the share of the hash space asked for when it was frozen

    @classmethod
    def first(cls, task: str, rows: Mapping[str, Rows], fraction: float) -> HoldoutCut:
        """The cut-off frozen from the devices of a task's first registered model.

        It is at least ``fraction`` of the hash space, and high enough to hold out one device
        of the first run (however few there are), with at least one device left to train on.

        Raises:
            DatasetError: the rows come from fewer than 2 devices.
        """
        devices = sorted({str(d) for r in rows.values() for d in r.device})
        if len(devices) < 2:
            raise DatasetError(
                f"{task} needs rows of at least 2 devices (one for the holdout), the inputs have "
                f"{len(devices)}; let the fleet send more, then `fieldloop refine`"
            )
        hashes = sorted(device_hash(task, d) for d in devices)
        first = hashes[max(1, int(np.ceil(fraction * len(devices)))) - 1]
        return cls(task, min(max(first, int(fraction * 2**64)), hashes[-2]), fraction)

    @classmethod
    def frozen(cls, experiment_tags: Mapping[str, str]) -> HoldoutCut | None:
        """The task's cut-off as its experiment keeps it, or None before its first registered model."""
        if HOLDOUT_CUT_TAG not in experiment_tags:
            return None
        spec = json.loads(experiment_tags[HOLDOUT_CUT_TAG])
        return cls(spec["salt"], int(spec["cut"]), spec["fraction"])

    def to_tag(self) -> str:
        # The cut as a string: JSON readers that hold numbers as doubles would round a 64-bit integer.
        return json.dumps({"salt": self.salt, "cut": str(self.cut), "fraction": self.fraction}, sort_keys=True)

    def contains(self, rows: Rows) -> np.ndarray:
        """True for the rows of held-out devices."""
        return in_holdout(rows.device, self.salt, self.cut)


@dataclass(frozen=True)
class FrozenTables:
    """A model's frozen holdout tables (path -> Delta version), as its experiment tag keeps them."""

    tables: Mapping[str, int]
    frozen_at: str

    @classmethod
    def frozen(cls, experiment_tags: Mapping[str, str], model: str) -> FrozenTables | None:
        """The model's holdout tables as the task's experiment keeps them, or None before its first version."""
        if HOLDOUT_TAG + model not in experiment_tags:
            return None
        spec = json.loads(experiment_tags[HOLDOUT_TAG + model])
        return cls({path: int(version) for path, version in spec["tables"].items()}, spec["frozen_at"])


@dataclass(frozen=True)
class Holdout:
    """What a version is judged on: the task's cut-off over the frozen tables' devices."""

    cut: HoldoutCut
    tables: Mapping[str, int]  # path -> Delta version
    frozen_at: str  # UTC, when the model's first registered version froze it (or this run would)

    def as_dict(self) -> dict[str, Any]:
        """As the lineage's ``holdout`` and the result show it."""
        return {
            "salt": self.cut.salt,
            "cut": str(self.cut.cut),
            "fraction": self.cut.fraction,
            "tables": dict(self.tables),
            "frozen_at": self.frozen_at,
        }

    def tables_tag(self) -> str:
        return json.dumps({"tables": dict(self.tables), "frozen_at": self.frozen_at}, sort_keys=True)


def utc_stamp() -> str:
    """Now, as ``frozen_at`` records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def frozen_pins(
    cfg: FieldloopConfig,
    target: ModelTarget,
    frozen: FrozenTables,
    pinned: Sequence[PinnedInput],
    contracts: Mapping[str, DataContract],
) -> list[PinnedInput]:
    """The frozen holdout's tables at their frozen versions, checked by the rule before anything is read.

    Raises:
        HoldoutMovedError: a frozen table is not among this run's inputs, or its frozen
            version can no longer be read.
        ContaminationError: the rule refuses a frozen table for this model now.
    """
    by_path = {p.path: p for p in pinned}
    missing = sorted(path for path in frozen.tables if path not in by_path)
    if missing:
        raise HoldoutMovedError(
            target.name,
            missing,
            f"was frozen on {', '.join(missing)}, which this run does not read, so its metrics would not "
            "compare with earlier versions; read those tables too, or pass --reset-holdout to freeze a new holdout",
        )
    pins = []
    for path, version in sorted(frozen.tables.items()):
        current = by_path[path]
        if version == current.version:
            pins.append(current)
            continue
        try:
            pins.append(pin(cfg, current.name, version))
        except DatasetError as e:
            raise HoldoutMovedError(
                target.name,
                [path],
                f"is {current.table}@v{version}, which can no longer be read ({e}); "
                "pass --reset-holdout to freeze a new one",
            ) from e
    enforce_training_rule(training_inputs(pins, contracts), target)
    return pins
