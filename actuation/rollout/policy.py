"""A fleet's rollout policy: the stages a new version moves through and the gates that judge it.

One validated TOML file per fleet, ``actuation/rollout/policies/<fleet>.toml`` (unknown keys are
an error). A stage is a cohort of the fleet (:func:`actuation.contract.cohort_position`) that
runs the candidate (``active``) or runs it beside the champion without acting on it
(``shadow``); it is judged once ``min_devices`` devices of each cohort it compares have
reported, and left once it has soaked ``soak_s`` seconds with every gate holding. A gate
compares the candidate's cohort with the champion's over the same window: an absolute
ceiling (``max``), an increase over the champion (``max_increase``), or both; on a breach its
``action`` pauses the rollout for a person, or halts it and rolls the fleet back.

The optional ``[campaign]`` is what the fleet is asked to send home while a new version meets
it: every release and every rollout of the fleet signs it into the fleet's campaigns
(:func:`actuation.campaigns.book.ask_for_hard_cases`), so the hard cases of each rollout reach
the lake and the next fine-tune without a person remembering to ask.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actuation.contract import ACTIVE, SHADOW, Trigger, check_fleet_name

# What a gate can measure, per cohort and window (actuation.rollout.figures computes them):
ACTIVE_METRICS = (
    "latency_p99_ms",  # inference latency, 99th percentile
    "ood_rate",  # share of inferences whose OOD score reached the release's threshold
    "intervention_rate",  # share of inferences where the safety monitor took over (fallback)
    "error_rate",  # share of inferences that failed (bad frame, runtime error)
    "update_failure_rate",  # share of the cohort's devices whose last update was refused or failed
)
SHADOW_METRICS = (
    "shadow_disagreement_rate",  # share of shadowed inferences where |shadow - actuated| > the policy's threshold
    "shadow_disagreement_p95",  # 95th percentile of |shadow - actuated|, in the output's unit
    "shadow_ood_rate",  # share of shadowed inferences whose shadow OOD score reached the threshold
)
Metric = Literal[
    "latency_p99_ms",
    "ood_rate",
    "intervention_rate",
    "error_rate",
    "update_failure_rate",
    "shadow_disagreement_rate",
    "shadow_disagreement_p95",
    "shadow_ood_rate",
]
PAUSE, ROLLBACK = "pause", "rollback"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StagePolicy(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    mode: Literal["shadow", "active"]
    share: float = Field(gt=0, le=1, description="the cohort's share of the fleet")
    min_devices: int = Field(ge=1, description="reporting devices in each compared cohort before it is judged")
    min_inferences: int = Field(default=50, ge=1, description="inferences in each compared cohort before it is judged")
    soak_s: float = Field(ge=0, description="seconds the stage runs with every gate holding before the next")
    approval: bool = Field(default=False, description="a person resumes the rollout before the next stage")
    max_wait_s: float = Field(
        default=600, gt=0, description="too few devices reporting for this long pauses the rollout for a person"
    )


class Gate(_Strict):
    name: str
    metric: Metric
    max: float | None = Field(default=None, description="ceiling for the candidate's cohort")
    max_increase: float | None = Field(default=None, description="largest rise over the champion's cohort")
    action: Literal["pause", "rollback"]

    @model_validator(mode="after")
    def _has_a_limit(self) -> Gate:
        if self.max is None and self.max_increase is None:
            raise ValueError(f"gate {self.name}: set max, max_increase or both")
        if self.metric in SHADOW_METRICS and self.max_increase is not None:
            raise ValueError(f"gate {self.name}: {self.metric} has no champion figure to rise over; use max")
        return self

    @property
    def mode(self) -> str:
        """The stages it judges: shadow metrics in shadow stages, the others in active ones."""
        return SHADOW if self.metric in SHADOW_METRICS else ACTIVE


class CampaignPolicy(_Strict):
    """The collection campaign a release of the fleet starts (see the module docstring)."""

    trigger: str = Field(description="as `fieldloop campaign create --trigger` takes it, e.g. 'accel_mps2<-2'")
    max_per_hour: int = Field(gt=0, description="windows a device sends per hour at most")
    max_bytes_per_day: int = Field(gt=0, description="bytes of windows a device sends per day at most")
    window_before: int = Field(ge=1, le=100, description="frames up to the trigger's, its own included")
    window_after: int = Field(ge=0, le=100, description="frames after the trigger's")
    expires: str = Field(
        pattern=r"^\d+(\.\d+)?[smhd]$", description="how long after the release it stops asking, e.g. '6h'"
    )

    @field_validator("trigger")
    @classmethod
    def _parses(cls, text: str) -> str:
        Trigger.parse(text)  # its signals are checked against the fleet's task when it is signed
        return text


class RolloutPolicy(_Strict):
    fleet: str
    version: int = Field(ge=1)
    description: str = ""
    disagreement_threshold: float = Field(
        gt=0, description="|shadow - actuated| above which a shadowed inference counts as disagreeing"
    )
    stage: list[StagePolicy] = Field(min_length=1)
    gate: list[Gate] = Field(default_factory=list)
    campaign: CampaignPolicy | None = None

    @model_validator(mode="after")
    def _valid(self) -> RolloutPolicy:
        check_fleet_name(self.fleet)
        names = [s.name for s in self.stage]
        if len(set(names)) != len(names):
            raise ValueError("a stage name appears twice")
        if len({g.name for g in self.gate}) != len(self.gate):
            raise ValueError("a gate name appears twice")
        last = self.stage[-1]
        if last.mode != ACTIVE or last.share != 1:
            raise ValueError(f"the last stage ({last.name}) must run the candidate on the whole fleet: mode = "
                             '"active", share = 1.0')  # fmt: skip
        shares = [s.share for s in self.stage if s.mode == ACTIVE]
        if shares != sorted(shares):
            raise ValueError(f"active stages must not shrink their cohort: {shares}")
        return self

    def gates_for(self, stage: StagePolicy) -> list[Gate]:
        return [g for g in self.gate if g.mode == stage.mode]


def policy_file(fleet: str) -> Path:
    return Path(__file__).with_name("policies") / f"{check_fleet_name(fleet)}.toml"


def load_policy(fleet: str, path: str | Path | None = None) -> RolloutPolicy:
    """The fleet's rollout policy, validated (default: the packaged file for ``fleet``).

    Raises:
        FileNotFoundError: the fleet has no policy file; ValueError: it does not validate.
    """
    file = Path(path) if path else policy_file(fleet)
    if not file.exists():
        raise FileNotFoundError(f"fleet {fleet} has no rollout policy: write {file} (see actuation/rollout/policy.py)")
    with file.open("rb") as f:
        policy = RolloutPolicy.model_validate(tomllib.load(f))
    if policy.fleet != fleet:
        raise ValueError(f"{file} is the rollout policy of fleet {policy.fleet}, not of {fleet}")
    return policy
