"""Running a model on the device: ONNX Runtime with one thread, and the self-test a build must pass.

The self-test runs the manifest's ``self_test_inputs`` as ONE batch (the int8 build quantizes
activations with one scale per batch, so row by row it gives other outputs) and compares
every output with the int8 build's recorded ``self_test_outputs`` within the manifest's
``self_test_tolerance``; the result is a measured number against its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actuation.agent.errors import UpdateRefusedError
from actuation.contract import EDGE_VARIANT
from fieldloop.registry import EdgeManifest


@dataclass(frozen=True)
class SelfTest:
    """A self-test's result: the largest deviation against the tolerance."""

    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


class ModelRunner:
    """One loaded model: ``predict(row)`` gives its outputs for one feature vector."""

    def __init__(self, path: Path, manifest: EdgeManifest) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as the guardrails timed it, and a device's other work keeps its cores
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise UpdateRefusedError("self-test", f"{path.name} does not load in ONNX Runtime: {e}") from e
        self.manifest = manifest
        self.input_name = manifest.input_name
        self._row = np.zeros((1, manifest.input_dim), dtype=np.float32)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The outputs (one row, in the manifest's order) for one feature vector."""
        self._row[0, :] = features
        return self.session.run(None, {self.input_name: self._row})[0][0]

    def self_test(self) -> SelfTest:
        manifest = self.manifest
        x = np.asarray(manifest.self_test_inputs, dtype=np.float32)
        expected = np.asarray(manifest.builds[EDGE_VARIANT].self_test_outputs, dtype=np.float64)
        try:
            got = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64)
        except Exception as e:  # a graph whose input does not fit the manifest
            raise UpdateRefusedError("self-test", f"the model does not run on its self-test inputs: {e}") from e
        if got.shape != expected.shape:
            return SelfTest(float("inf"), manifest.self_test_tolerance)
        diff = np.abs(got - expected)
        return SelfTest(float(diff.max()) if np.isfinite(diff).all() else float("inf"), manifest.self_test_tolerance)
