"""The model registry's vocabulary: model names, aliases, tag keys and the edge manifest.

The contract between training, which registers models, and actuation, which judges,
signs and ships them: both import this module and neither imports the other.

* A task's models are ``fieldloop.<task>`` (base weights) and ``fieldloop.<task>.<tenant>``.
* A version moves through three aliases: :data:`CANDIDATE` (training registered it),
  :data:`APPROVED` (a passing guardrail run), :data:`CHAMPION` (a completed rollout).
* What a version was made from is in ``fieldloop.lineage.*`` tags
  (:class:`fieldloop.lineage.ModelLineage`), what the guardrails found in
  ``fieldloop.guardrail.*`` tags.
* What a device runs is described by the :class:`EdgeManifest` logged beside the model
  under ``edge/manifest.json``: every file with its size and sha256, the latency measured
  at batch 1 on one thread, and self-test vectors with the outputs each build must give.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldloop.classes import ModelTarget

CANDIDATE = "candidate"
APPROVED = "approved"
CHAMPION = "champion"
ALIASES = (CANDIDATE, APPROVED, CHAMPION)

LINEAGE_TAG_PREFIX = "fieldloop.lineage."
GUARDRAIL_TAG_PREFIX = "fieldloop.guardrail."
TASK_TAG = "fieldloop.task"  # registered-model tags: the task and tenant a model name stands for
TENANT_TAG = "fieldloop.tenant"

EDGE_ARTIFACT_DIR = "edge"  # under the version's run: the ONNX files and manifest.json
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1


def model_name(task: str, tenant: str | None = None) -> str:
    """``fieldloop.<task>`` or ``fieldloop.<task>.<tenant>``."""
    return ModelTarget(task, tenant).name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EdgeBuild(_Strict):
    """One ONNX file of the edge build and what was measured of it."""

    file: str = Field(description="file name under edge/")
    bytes: int = Field(ge=1, description="file size (bytes)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex digest of the file")
    p50_us: float = Field(ge=0, description="median latency, batch 1, one thread (microseconds)")
    p99_us: float = Field(ge=0, description="99th percentile latency, batch 1, one thread (microseconds)")
    max_abs_diff: float = Field(ge=0, description="largest deviation from the PyTorch student on the check inputs")
    max_abs_diff_per_output: list[float] = Field(description="the same, per output")
    self_test_outputs: list[list[float]] = Field(description="this file's outputs for the manifest's self-test inputs")


class EdgeManifest(_Strict):
    """What a device needs to know to verify, load and self-test a model version's edge build.

    The self-test runs ``self_test_inputs`` as ONE batch: the int8 build quantizes its
    activations with one scale per batch, so row by row it gives other outputs.
    """

    format: Literal[1] = MANIFEST_FORMAT
    task: str
    model: str = Field(description="registered model name")
    input_name: str = Field(description="the ONNX graph's input")
    input_dim: int = Field(ge=1, description="features per row (the task's FeatureLayout.width)")
    dtype: Literal["float32"] = "float32"
    outputs: list[str] = Field(min_length=1, description="names of the output columns, in order")
    latency: str = Field(description="how the latencies were measured")
    self_test_inputs: list[list[float]] = Field(min_length=1, description="rows a device runs after loading")
    self_test_tolerance: float = Field(gt=0, description="largest |output - expected| a self-test accepts")
    builds: dict[str, EdgeBuild] = Field(min_length=1, description="by variant: fp32, int8")

    @model_validator(mode="after")
    def _consistent(self) -> EdgeManifest:
        for row in self.self_test_inputs:
            if len(row) != self.input_dim:
                raise ValueError(f"self_test_inputs: a row of {len(row)} values, the input takes {self.input_dim}")
        for label, build in self.builds.items():
            if len(build.self_test_outputs) != len(self.self_test_inputs):
                raise ValueError(
                    f"builds.{label}: {len(build.self_test_outputs)} self-test outputs for "
                    f"{len(self.self_test_inputs)} inputs"
                )
            if any(len(out) != len(self.outputs) for out in build.self_test_outputs):
                raise ValueError(f"builds.{label}: self-test outputs must have {len(self.outputs)} values each")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EdgeManifest:
        """Parse and validate a manifest (raises pydantic's ValidationError naming the field)."""
        return cls.model_validate_json(text)
