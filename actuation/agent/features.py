"""A device's feature vector, laid out as gold lays out its training rows.

The layout is the kernel's :class:`fieldloop.datasets.FeatureLayout` of the task (for
``vehicle-longitudinal``: the last 10 frames' five signals, oldest first and flattened frame
by frame, then the newest frame's three perception counts: 53 values), so the model sees on
the device what it was trained on. A signal or extra named ``a.b`` is field ``b`` of the
frame's record ``a`` (``perception.vehicles``), as gold reads the Avro record's struct.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from fieldloop.datasets import FeatureLayout


class FeatureWindow:
    """The last ``layout.window`` frames; :meth:`push` returns the vector once the window is full."""

    def __init__(self, layout: FeatureLayout) -> None:
        self.layout = layout
        self._frames: deque[np.ndarray] = deque(maxlen=layout.window)
        self._vector = np.zeros(layout.width, dtype=np.float32)

    def push(self, frame: Mapping[str, Any]) -> np.ndarray | None:
        """Add a frame; the feature vector, or None while fewer than ``window`` frames were seen."""
        lay = self.layout
        self._frames.append(np.array([_field(frame, s) for s in lay.signals], dtype=np.float64))
        if len(self._frames) < lay.window:
            return None
        n = len(lay.signals)
        for i, signals in enumerate(self._frames):
            self._vector[i * n : (i + 1) * n] = signals
        for j, extra in enumerate(lay.extras):
            self._vector[lay.window * n + j] = _field(frame, extra)
        return self._vector

    def reset(self) -> None:
        self._frames.clear()


def _field(frame: Mapping[str, Any], name: str) -> float:
    value: Any = frame
    for part in name.split("."):
        value = value[part]
    return float(value)
