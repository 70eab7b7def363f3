"""A device's feature vector, laid out as gold lays out its training rows.

The layout is the kernel's :class:`fieldloop.datasets.FeatureLayout` of the task (for
``vehicle-longitudinal``: the last 10 frames' five signals, oldest first and flattened frame
by frame, then the newest frame's three perception counts: 53 values), so the model sees on
the device what it was trained on. A signal or extra named ``a.b`` is field ``b`` of the
frame's record ``a`` (``perception.vehicles``), as gold reads the Avro record's struct. A
signal named ``<field>_z`` (``plant-anomaly``'s ``value_z``) is ``<field>`` z-scored with the
population mean and standard deviation, as gold computes it per sensor: gold over the sensor's
rows in the table, the device over the readings it has seen since it started (it has no others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fieldloop.datasets import FeatureLayout


class FeatureWindow:
    """The last ``layout.window`` frames; :meth:`push` returns the vector once the window is full.

    The vector is kept in place and shifted by one frame per push (one copy of 50 floats), not
    rebuilt from the window: it is on the inference path of every frame.
    """

    def __init__(self, layout: FeatureLayout) -> None:
        self.layout = layout
        self._signals = [_reader(s) for s in layout.signals]
        self._extras = [_reader(e) for e in layout.extras]
        self._end = layout.window * len(layout.signals)
        self._vector = np.zeros(layout.width, dtype=np.float32)
        self._seen = 0

    def push(self, frame: Mapping[str, Any]) -> np.ndarray | None:
        """Add a frame; the feature vector, or None while fewer than ``window`` frames were seen."""
        # read the whole frame first: one without a signal raises before the window moves
        raw = [_field(frame, reader.path) for reader in self._signals]
        extras = [_field(frame, reader.path) for reader in self._extras]
        signals = [reader.value(x) for reader, x in zip(self._signals, raw, strict=True)]
        v, end, n = self._vector, self._end, len(self._signals)
        v[: end - n] = v[n:end]  # oldest frame out (numpy copies overlapping slices correctly)
        v[end - n : end] = signals
        if extras:
            v[end:] = extras
        self._seen += 1
        return v if self._seen >= self.layout.window else None

    def reset(self) -> None:
        self._seen = 0


class _Reader:
    """A signal's path in the frame; :meth:`value` is the value the model sees."""

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path

    def value(self, x: float) -> float:
        return x


class _ZScore(_Reader):
    """``<field>_z``: the field z-scored over what was seen (Welford's running mean and variance)."""

    def __init__(self, path: tuple[str, ...]) -> None:
        super().__init__(path)
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def value(self, x: float) -> float:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        std = (self.m2 / self.n) ** 0.5
        return (x - self.mean) / max(std, 1e-9)  # gold's floor for a constant sensor


def _reader(name: str) -> _Reader:
    if name.endswith("_z"):
        return _ZScore(tuple(name.removesuffix("_z").split(".")))
    return _Reader(tuple(name.split(".")))


def _field(frame: Mapping[str, Any], path: tuple[str, ...]) -> float:
    value: Any = frame
    for part in path:
        value = value[part]
    return float(value)
