"""A task's guardrail policy: ``actuation/policies/<task>.toml``, validated before anything runs.

The file's ``[runtime]`` table is what a device's safety monitor enforces
(:class:`actuation.contract.RuntimeLimits`); the other tables say how the guardrails judge a
candidate before it may ship: the regression margins, the scenario suite of the safety
envelope, the properties the task must never violate, the OOD separation and the
dependency on the fleets' budgets (those live in ``actuation/fleets.toml``). Unknown keys are
an error naming the key and the file, so a typo never silently loosens a limit.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actuation.contract import RuntimeLimits, policy_digest, policy_path
from actuation.errors import GuardrailError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegressionPolicy(_Strict):
    """How the candidate's holdout metric must compare with the trivial baseline and the champion."""

    metric: Literal["rmse", "auroc"] = Field(description="the holdout metric (rmse: lower is better)")
    min_gain_over_baseline: float = Field(
        description="relative gain over the baseline the candidate needs (0.05: 5 % better)"
    )
    max_loss_vs_champion: float = Field(ge=0, description="relative loss against the champion allowed (0.02: 2 %)")
    min_gain_on_hard_cases: float = Field(
        0.0,
        description="relative gain over the model that met them needed on the hard cases of held-out devices "
        "(0: better than it; judged only when the version learned from hard cases)",
    )


class EnvelopePolicy(_Strict):
    """The scenario suite the actuated outputs must stay finite and inside their envelope on."""

    rows: int = Field(ge=16, le=100_000, description="input rows per scenario")
    seed: int = Field(description="the scenarios' random seed, so a verdict can be reproduced")
    noise_std: float = Field(gt=0, description="sensor noise, in training standard deviations per feature")
    adversarial_eps: float = Field(gt=0, description="L-inf bound of the adversarial search, in standard deviations")
    adversarial_tries: int = Field(ge=1, description="random sign vectors tried per row at the bound")
    out_of_range_std: float = Field(
        gt=0, description="how far beyond the reference rows' range, in standard deviations"
    )
    tolerance: float = Field(ge=0, description="excursion beyond min/max accepted (float32 rounding), output units")
    monitored: list[str] = Field(
        default_factory=list,
        description="scenarios where a row the device's monitor replaces (non-finite output, OOD score at or "
        "above the runtime threshold) is not counted: the device falls back on it",
    )
    step_reference: dict[str, str] = Field(
        default_factory=dict,
        description="output -> the input signal it follows (a FeatureLayout name, e.g. accel_mps2): its step "
        "limit judges the change the model adds beyond that signal's own change between the same frames",
    )


class PropertyPolicy(_Strict):
    """One property the task must never violate: moving ``features`` one way never moves ``output`` the other."""

    name: str
    output: str = Field(description="the output column the property is about")
    features: list[str] = Field(min_length=1, description="FeatureLayout names, e.g. perception.vehicles, value_z@0")
    change: Literal["increase", "away-from-zero"] = Field(description="how the features move")
    max_change: float = Field(gt=0, description="largest move of a feature tried (feature units)")
    output_must_not: Literal["increase", "decrease"] = Field(description="what the output must not do")
    tolerance: float = Field(ge=0, description="output change accepted as rounding (output units)")
    why: str = Field(description="the safety reason, shown in the report")


class PropertiesPolicy(_Strict):
    examples: int = Field(ge=10, description="hypothesis examples per property")
    rule: list[PropertyPolicy] = Field(min_length=1)


class OodPolicy(_Strict):
    """The OOD score must separate a shifted scenario set (positive class) from in-distribution rows."""

    output: str = Field(description="the output column scored (vehicle: ood_score; plant: anomaly_score)")
    shift_std: float = Field(gt=0, description="the shift, in standard deviations of the reference rows")
    min_auroc: float = Field(gt=0.5, le=1)
    max_fpr_at_95_tpr: float = Field(ge=0, le=1)


class GuardrailPolicy(_Strict):
    version: int = Field(ge=1)
    runtime: RuntimeLimits
    regression: RegressionPolicy
    envelope: EnvelopePolicy
    properties: PropertiesPolicy
    ood: OodPolicy

    @model_validator(mode="after")
    def _known_outputs(self) -> GuardrailPolicy:
        names = {"normal", "boundary", "out_of_range", "dropout_nan", "dropout_zero", "dropout_stuck", "noise"}
        names |= {"adversarial"}
        unknown = sorted(set(self.envelope.monitored) - names)
        if unknown:
            raise ValueError(f"envelope.monitored: no scenario {unknown}; the scenarios are {sorted(names)}")
        return self


SCENARIOS = (
    "normal",
    "boundary",
    "out_of_range",
    "dropout_nan",
    "dropout_zero",
    "dropout_stuck",
    "noise",
    "adversarial",
)


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy and the file it came from (its name, version and digest go into the verdict)."""

    task: str
    path: Path
    sha256: str
    rules: GuardrailPolicy

    @property
    def version(self) -> int:
        return self.rules.version


def load_policy(task: str, path: Path | None = None) -> LoadedPolicy:
    """The task's policy, validated (default: ``actuation/policies/<task>.toml``).

    Raises:
        GuardrailError: the file is missing, not TOML, or breaks the schema (naming key and file).
    """
    import hashlib

    file = path or policy_path(task)
    if not file.exists():
        raise GuardrailError(f"no guardrail policy for task {task!r} at {file}; write one (see the other tasks')")
    raw = file.read_bytes()
    try:
        rules = GuardrailPolicy.model_validate(tomllib.loads(raw.decode()))
    except tomllib.TOMLDecodeError as e:
        raise GuardrailError(f"{file} is not valid TOML: {e}") from e
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise GuardrailError(f"{file}: {problems}; fix the policy file (unknown keys are refused)") from e
    digest = policy_digest(task) if path is None else hashlib.sha256(raw).hexdigest()
    return LoadedPolicy(task, file, digest, rules)
