"""Gold datasets: what gold holds, which model task each dataset feeds, how its rows are laid out.

The contract between refinement, which writes gold, and training, which reads it: both import
this module and neither imports the other.

* **Declared as data.** A stream's contract file lists the gold datasets built from it in
  ``[[gold]]`` tables (:class:`GoldDataset`)::

      [[gold]]
      name = "vehicle_longitudinal_public"    # table <lake>/gold/<name>, unique in the deployment
      task = "vehicle-longitudinal"           # a training dataset of this model task

      [[gold]]
      name = "fleet_telemetry_hourly"
      kind = "telemetry-hourly"               # an aggregate, no task

      [[gold]]
      name = "hard_cases_vehicle_longitudinal_public"
      kind = "hard-cases"                     # campaign windows laid out as the task's rows
      task = "vehicle-longitudinal"

  Adding a tenant's stream with its training dataset is a new contract file (and its privacy
  policy), never a code change.
* **Named features.** A task's rows carry ``features``: a window of the last ``window``
  frames of ``signals`` (oldest first, flattened frame by frame), then ``extras`` once.
  :meth:`FeatureLayout.index` finds a feature by name, so no reader does index arithmetic.
* **Hard cases are no training input by default.** A ``hard-cases`` dataset holds the windows
  collection campaigns brought home, in its task's layout, but :func:`training_tables` (what
  a training run reads unless told otherwise) lists only ``training`` datasets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from fieldloop.classes import DataClass, Use

_TABLE = re.compile(r"^[a-z][a-z0-9_]{2,63}$")


class GoldKind(StrEnum):
    """What a gold table is: a task's training windows, a task's hard cases, or a fleet aggregate."""

    TRAINING = "training"
    HARD_CASES = "hard-cases"  # campaign windows in the task's layout; no default training input
    TELEMETRY_HOURLY = "telemetry-hourly"
    TELEMETRY_DP_DAILY = "telemetry-dp-daily"

    @property
    def has_task(self) -> bool:
        """Whether a table of this kind is laid out as a model task's rows."""
        return self in (GoldKind.TRAINING, GoldKind.HARD_CASES)


@dataclass(frozen=True)
class FeatureLayout:
    """How a task's ``features`` vector is laid out, and which gold columns go with it.

    Attributes:
        window: frames (or readings) per row, oldest first.
        signals: the values of one frame, in order.
        extras: values appended once after the window (the newest frame's context).
        device_column: the split unit; a device is never in both train and holdout.
        order_columns: rows are sorted by these, so every run reads them in one order.
        label_column: the training target, or a weak label judged on the holdout only.
        target_signal: the signal the label is a later value of (None: the label is no signal).
        horizon: frames between a row's newest frame and its label (0: no forecast).
    """

    window: int
    signals: tuple[str, ...]
    extras: tuple[str, ...]
    device_column: str
    order_columns: tuple[str, ...]
    label_column: str
    target_signal: str | None = None
    horizon: int = 0

    @property
    def width(self) -> int:
        """Length of the ``features`` vector."""
        return self.window * len(self.signals) + len(self.extras)

    def index(self, name: str, frame: int = -1) -> int:
        """Position of signal ``name`` in frame ``frame`` (-1: the newest), or of extra ``name``.

        Raises:
            KeyError: ``name`` is neither a signal nor an extra of this layout.
        """
        if name in self.extras:
            return self.window * len(self.signals) + self.extras.index(name)
        if name not in self.signals:
            raise KeyError(f"no feature '{name}'; signals {', '.join(self.signals)}, extras {', '.join(self.extras)}")
        if not -self.window <= frame < self.window:
            raise IndexError(f"frame {frame} outside a window of {self.window}")
        return (frame % self.window) * len(self.signals) + self.signals.index(name)

    @property
    def frame_names(self) -> tuple[str, ...]:
        """What one frame of a device's window must carry to be laid out: the signals, then the extras."""
        return (*self.signals, *self.extras)

    @property
    def labelled_by_frames(self) -> bool:
        """Whether a window of frames alone gives the label: it is a later value of a signal."""
        return self.target_signal is not None and self.target_signal in self.signals

    @property
    def shortest_window(self) -> int:
        """Frames a device's window needs for one row: ``window`` of history, then ``horizon`` to the label."""
        return self.window + self.horizon

    def window_rows(self, frames: int) -> range:
        """The rows a window of ``frames`` frames holds, by the index of each row's newest frame.

        A row needs ``window`` frames of history (its newest included) and its label ``horizon``
        frames after its newest, all inside the window; a window shorter than
        :attr:`shortest_window` holds none.
        """
        return range(self.window - 1, max(self.window - 1, frames - self.horizon))

    def names(self) -> list[str]:
        """Every feature's name, in vector order: ``speed_mps@-9`` ... ``speed_mps@0``, then the extras."""
        frames = [f"{signal}@{frame - self.window + 1}" for frame in range(self.window) for signal in self.signals]
        return frames + list(self.extras)


# The layouts of the model tasks. Refinement builds gold rows to them, training reads by them.
TASK_LAYOUTS: dict[str, FeatureLayout] = {
    # 2 s at 5 Hz of longitudinal and lateral state, the perception counts, and as label the
    # acceleration the driver chose 1 s later.
    "vehicle-longitudinal": FeatureLayout(
        window=10,
        signals=("speed_mps", "accel_mps2", "brake", "steering_deg", "yaw_rate_dps"),
        extras=("perception.vehicles", "perception.pedestrians", "perception.cyclists"),
        device_column="_device",
        order_columns=("_device", "ts"),
        label_column="target",
        target_signal="accel_mps2",
        horizon=5,
    ),
    # 10 readings of one sensor, z-scored per sensor; the sensor's own BAD flag as a weak label.
    "plant-anomaly": FeatureLayout(
        window=10,
        signals=("value_z",),
        extras=(),
        device_column="sensor_id",
        order_columns=("sensor_id", "ts"),
        label_column="bad_quality",
    ),
}


def layout(task: str) -> FeatureLayout:
    """The feature layout of ``task``.

    Raises:
        KeyError: no such task; the message names the known ones.
    """
    try:
        return TASK_LAYOUTS[task]
    except KeyError:
        raise KeyError(f"no model task '{task}'; known tasks: {', '.join(sorted(TASK_LAYOUTS))}") from None


class GoldDataset(BaseModel):
    """One ``[[gold]]`` entry of a contract file: a gold table built from the stream's silver table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: GoldKind = GoldKind.TRAINING
    task: str | None = None
    source: str | None = None  # silver table; default: the contract's pseudonymized table

    @field_validator("name", "source")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is not None and not _TABLE.match(value):
            raise ValueError(f"'{value}' must be a snake_case table name (a-z, 0-9, _), 3-64 characters")
        return value

    @model_validator(mode="after")
    def _task_fits_kind(self) -> GoldDataset:
        if self.kind.has_task:
            if self.task is None:
                raise ValueError(f"task: {self.kind} dataset {self.name} needs the model task it feeds")
            if self.task not in TASK_LAYOUTS:
                raise ValueError(f"task: no model task '{self.task}'; known tasks: {', '.join(sorted(TASK_LAYOUTS))}")
            lay = TASK_LAYOUTS[self.task]
            if self.kind is GoldKind.HARD_CASES and not lay.labelled_by_frames:
                raise ValueError(
                    f"task: hard cases of {self.task} cannot be laid out from a device's window: its label "
                    f"'{lay.label_column}' is no later value of the frames' signals ({', '.join(lay.signals)})"
                )
        elif self.task is not None:
            raise ValueError(f"task: a {self.kind} table feeds no task; remove task or use kind = 'training'")
        return self


class Governing(Protocol):
    """What a gold table needs of the contract that declares it (a ``fieldloop.contracts.DataContract``).

    A protocol, not the class: the contracts import this module to read their ``[[gold]]``.
    """

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def data_class(self) -> DataClass: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def allowed_uses(self) -> frozenset[Use]: ...
    @property
    def gold(self) -> tuple[GoldDataset, ...]: ...


@dataclass(frozen=True)
class GoldTable:
    """A declared gold dataset with the contract that governs it."""

    name: str
    kind: GoldKind
    task: str | None
    source: str  # silver table name
    contract: Governing

    @property
    def layout(self) -> FeatureLayout | None:
        return TASK_LAYOUTS[self.task] if self.task else None


def gold_tables(contracts: Mapping[str, Governing]) -> list[GoldTable]:
    """Every gold table the contracts declare, sorted by name (no Spark, cheap enough for DAG files)."""
    tables = [GoldTable(d.name, d.kind, d.task, d.source or c.table, c) for c in contracts.values() for d in c.gold]
    return sorted(tables, key=lambda t: t.name)


def training_tables(contracts: Mapping[str, Governing], task: str | None = None) -> list[GoldTable]:
    """The training datasets (of ``task`` when given), sorted by name: a training run's default
    inputs. Hard-case datasets are not among them."""
    return [t for t in gold_tables(contracts) if t.kind is GoldKind.TRAINING and (task is None or t.task == task)]


def hard_case_tables(contracts: Mapping[str, Governing], task: str | None = None) -> list[GoldTable]:
    """The hard-case datasets (of ``task`` when given), sorted by name."""
    return [t for t in gold_tables(contracts) if t.kind is GoldKind.HARD_CASES and (task is None or t.task == task)]


def duplicate_names(declared: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Gold table names declared by more than one contract: name -> the contract ids."""
    owners: dict[str, list[str]] = {}
    for contract_id, name in declared:
        owners.setdefault(name, []).append(contract_id)
    return {name: ids for name, ids in owners.items() if len(ids) > 1}
