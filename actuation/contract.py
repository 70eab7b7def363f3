"""What the cloud side publishes and a device reads: the release repository's layout, the
release pointer and the guardrail attestation's predicate.

The contract between the guardrails (which judge and attest), the release repository
(which signs and serves) and the edge agent (which verifies and runs): each imports this
module, and it imports nothing but pydantic, so it installs on a device with the edge extra.

The repository (TUF, see ``actuation.release``):

* the top-level ``targets`` role signs :data:`GUARDRAIL_KEYS_TARGET`, the public keys the
  guardrail attestations are signed with (a device learns them through the update channel
  itself, so rotating the guardrail key needs no re-provisioning), and delegates
  ``<fleet>/*`` to one role per fleet, :func:`fleet_role`;
* a fleet's role signs its :func:`release_pointer_path` (which model version the fleet runs)
  and every file of that version under :func:`model_target_path`: the ONNX file a device runs,
  the :class:`fieldloop.registry.EdgeManifest` and the DSSE envelope of the attestation.

The attestation is an in-toto Statement v1 (:data:`STATEMENT_TYPE`) in a DSSE envelope
(:data:`PAYLOAD_TYPE`) signed with Ed25519; its subjects are the sha256 digests of the files
a device runs (the ONNX file and the manifest), its predicate a :class:`Verdict`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://fieldloop.dev/attestation/guardrail-verdict/v1"

GUARDRAIL_KEYS_TARGET = "keys/guardrail.json"  # top-level target: {"keys": {keyid: securesystemslib key dict}}
POINTER_FILE = "release.json"
ATTESTATION_FILE = "attestation.dsse.json"
MANIFEST_FILE = "manifest.json"
EDGE_VARIANT = "int8"  # the build a device runs (fieldloop.registry.EdgeManifest.builds key)

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_fleet_name(fleet: str) -> str:
    """``fleet`` if it is a valid fleet name (lower-case letters, digits, '-'), else ValueError."""
    if not _NAME.match(fleet):
        raise ValueError(f"fleet name {fleet!r}: use lower-case letters, digits and '-' (at most 63)")
    return fleet


def fleet_role(fleet: str) -> str:
    """The delegated targets role that signs what ``fleet`` runs."""
    return f"fleet-{check_fleet_name(fleet)}"


def fleet_paths(fleet: str) -> list[str]:
    """The target paths delegated to the fleet's role."""
    return [f"{check_fleet_name(fleet)}/*"]


def release_pointer_path(fleet: str) -> str:
    """The target naming the model version ``fleet`` runs (a :class:`ReleasePointer`)."""
    return f"{check_fleet_name(fleet)}/{POINTER_FILE}"


def model_target_path(fleet: str, model: str, version: int, file: str) -> str:
    """Where a file of a model version published to ``fleet`` lives in the repository.

    Directly under the fleet's directory, since a TUF path pattern's ``*`` does not match
    across '/': ``<fleet>/<model>@<version>.<file>``.
    """
    return f"{check_fleet_name(fleet)}/{model}@{version}.{file}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Check(_Strict):
    """One guardrail check: a measured number against its limit, never a bare yes/no."""

    name: str = Field(description="e.g. envelope.max_abs_output, ood.auroc, edge.p99_us")
    kind: str = Field(description="regression | envelope | property | ood | edge | governance")
    value: float | None = Field(description="what was measured (None: could not be measured, which fails)")
    limit: float
    op: Literal["<=", ">=", "<", ">"] = Field(description="passes when `value op limit`")
    unit: str = ""
    passed: bool
    detail: str = Field(default="", description="how it was measured, or why it failed")

    @classmethod
    def measure(
        cls, name: str, kind: str, value: float | None, op: str, limit: float, unit: str = "", detail: str = ""
    ) -> Check:
        """A check whose ``passed`` is computed from ``value op limit`` (a NaN or None fails)."""
        ok = value is not None and value == value and _OPS[op](float(value), float(limit))
        return cls(name=name, kind=kind, value=value, limit=limit, op=op, unit=unit, passed=ok, detail=detail)


_OPS = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


class PolicyRef(_Strict):
    name: str = Field(description="the task's guardrail policy, e.g. vehicle-longitudinal")
    version: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="digest of the policy file as judged")


class Verdict(_Strict):
    """The attestation's predicate: what the guardrails judged of one model version."""

    verdict: Literal["pass", "fail"]
    model: str = Field(description="registered model name")
    version: int = Field(ge=1)
    task: str
    tenant: str | None = Field(description="the tenant whose fleets alone may run it; None: a base model")
    fleets: list[str] = Field(description="the fleets it was judged for (their edge budgets, governance)")
    policy: PolicyRef
    checks: list[Check]
    mlflow_uri: str = Field(description="models:/<name>/<version>")
    run_id: str = Field(description="the MLflow run that logged the version")
    lineage: dict[str, str] = Field(description="the version's fieldloop.lineage.* tags")
    judged_at: datetime

    @field_validator("checks")
    @classmethod
    def _named_once(cls, checks: list[Check]) -> list[Check]:
        names = [c.name for c in checks]
        if len(names) != len(set(names)):
            raise ValueError("a check name appears twice")
        return checks

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


class OutputLimit(_Strict):
    """An actuated output's envelope: the values a device may act on, and how fast they may move."""

    name: str = Field(description="the output column (EdgeManifest.outputs)")
    min: float
    max: float
    max_step: float | None = Field(default=None, gt=0, description="largest change between consecutive outputs")
    unit: str = ""
    fallback: float = Field(description="what the safety monitor commands instead when it takes over")

    @model_validator(mode="after")
    def _fallback_inside(self) -> OutputLimit:
        if not self.min <= self.fallback <= self.max:
            raise ValueError(f"{self.name}: the fallback {self.fallback} is outside [{self.min}, {self.max}]")
        return self


class RuntimeLimits(_Strict):
    """What a device's safety monitor enforces (the ``[runtime]`` table of the task's guardrail
    policy, shipped inside the signed :class:`Release`): an output that is not finite, leaves its
    envelope or moves too fast, or one taken on an input whose OOD score passes the threshold, is
    replaced by the fallback and counted as an intervention."""

    outputs: list[OutputLimit] = Field(min_length=1, description="the actuated outputs")
    ood_output: str | None = Field(default=None, description="the output column holding the OOD score, if any")
    ood_threshold: float = Field(default=1.0, gt=0, le=1, description="an OOD score at or above this falls back")


class ReleaseFile(_Strict):
    path: str = Field(description="target path in the repository")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    length: int = Field(ge=1)


class Release(_Strict):
    """One model version as published to a fleet: the files a device fetches, by role."""

    model: str
    version: int = Field(ge=1)
    task: str
    tenant: str | None
    model_file: ReleaseFile = Field(description="the ONNX file the device runs")
    manifest: ReleaseFile = Field(description="the EdgeManifest")
    attestation: ReleaseFile = Field(description="the DSSE envelope of the guardrail attestation")
    limits: RuntimeLimits = Field(description="what the device's safety monitor enforces")


SHADOW, ACTIVE = "shadow", "active"


def cohort_position(rollout_id: str, device_id: str) -> float:
    """Where a device falls in a rollout's cohorts, in [0, 1): a stable hash of the two.

    A device is in a stage of share *s* when its position is below *s*, so a rollout's
    cohorts nest (the 5 % canary is inside the 25 % stage) and the controller knows every
    device's cohort from its id alone. The rollout id salts the hash: each rollout's canary is
    another slice of the fleet, so no device is always the first to run what is new.
    """
    digest = hashlib.sha256(f"{rollout_id}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Stage(_Strict):
    """A rollout's current stage, as a fleet's pointer tells its devices.

    In an ``active`` stage the devices of the cohort run the candidate and the others the
    pointer's ``active`` release (the champion); in a ``shadow`` stage the cohort runs the
    candidate beside the champion on the same inputs, never acting on its output, and reports
    how far the two disagree.
    """

    rollout_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="salts the cohort hash")
    name: str = Field(description="the policy's stage name, e.g. shadow, canary, half, all")
    index: int = Field(ge=0, description="the stage's place in the rollout policy")
    mode: Literal["shadow", "active"]
    share: float = Field(gt=0, le=1, description="the cohort: devices whose cohort_position is below it")
    candidate: Release
    disagreement_threshold: float | None = Field(
        default=None, gt=0, description="|shadow - actuated| above which a shadowed inference disagrees (the policy's)"
    )

    def includes(self, device_id: str) -> bool:
        return cohort_position(self.rollout_id, device_id) < self.share


class ReleasePointer(_Strict):
    """What a fleet runs: the content of :func:`release_pointer_path`.

    ``active`` is the fleet's release (its champion), ``stage`` a rollout in progress, if any:
    which cohort runs (or shadows) which candidate. A rollback is a newer pointer without the
    stage (TUF never goes backwards); a completed rollout a newer one whose ``active`` is the
    candidate. Format 1 pointers (no ``stage``) are read as before.
    """

    format: Literal[1, 2] = 2
    fleet: str
    tenant: str | None = Field(description="the fleet's tenant; None: a fleet that runs base models only")
    issued_at: datetime
    active: Release
    stage: Stage | None = None

    def routes_like(self, other: ReleasePointer) -> bool:
        """Whether ``other`` sends every device to the same versions, in the same stage (its time,
        limits or attestation may differ)."""

        def where(p: ReleasePointer) -> tuple[object, ...]:
            s = p.stage
            stage = (s.rollout_id, s.index, s.mode, s.share, s.candidate.model, s.candidate.version) if s else None
            return p.active.model, p.active.version, stage

        return where(self) == where(other)

    def release_for(self, device_id: str) -> Release:
        """The release ``device_id`` actuates: the candidate in an active stage's cohort, else ``active``."""
        if self.stage is not None and self.stage.mode == ACTIVE and self.stage.includes(device_id):
            return self.stage.candidate
        return self.active

    def shadow_for(self, device_id: str) -> Release | None:
        """The release ``device_id`` runs in shadow (never actuated), if any."""
        if self.stage is not None and self.stage.mode == SHADOW and self.stage.includes(device_id):
            return self.stage.candidate
        return None


class Fleet(_Strict):
    """A fleet the repository serves: which task its devices run, whose they are, their budgets."""

    name: str
    task: str
    tenant: str | None = Field(default=None, description="the owner; None: a fleet that runs base models")
    description: str = ""
    max_model_bytes: int = Field(ge=1, description="largest ONNX file a device of this fleet takes")
    max_p99_us: float = Field(gt=0, description="p99 latency budget, batch 1, one thread (microseconds)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_fleet_name(name)

    def may_run(self, tenant: str | None) -> bool:
        """A base model (no tenant) runs on any fleet; a tenant's model only on that tenant's fleets."""
        return tenant is None or tenant == self.tenant


class Fleets(_Strict):
    fleet: list[Fleet] = Field(min_length=1)

    @field_validator("fleet")
    @classmethod
    def _unique(cls, fleets: list[Fleet]) -> list[Fleet]:
        names = [f.name for f in fleets]
        if len(names) != len(set(names)):
            raise ValueError("a fleet name appears twice")
        return fleets

    def get(self, name: str) -> Fleet:
        for f in self.fleet:
            if f.name == name:
                return f
        known = ", ".join(f.name for f in self.fleet)
        raise KeyError(f"no fleet {name!r}; the fleets are: {known} (actuation/fleets.toml)")


def load_fleets(path: str | None = None) -> Fleets:
    """The fleets file (default: the packaged ``actuation/fleets.toml``), validated."""
    import tomllib

    file = Path(path) if path else Path(__file__).with_name("fleets.toml")
    with file.open("rb") as f:
        return Fleets.model_validate(tomllib.load(f))


def policy_path(task: str) -> Path:
    """The task's guardrail policy file, ``actuation/policies/<task>.toml``."""
    return Path(__file__).with_name("policies") / f"{task}.toml"


def policy_digest(task: str) -> str:
    """sha256 of the task's policy file as it is now (a verdict judged under another is stale)."""
    import hashlib

    return hashlib.sha256(policy_path(task).read_bytes()).hexdigest()


def load_runtime_limits(task: str) -> RuntimeLimits:
    """The ``[runtime]`` table of the task's guardrail policy, validated."""
    import tomllib

    with policy_path(task).open("rb") as f:
        return RuntimeLimits.model_validate(tomllib.load(f)["runtime"])


# -- collection campaigns ---------------------------------------------------------------
#
# A campaign asks a fleet's devices to send home the input windows around a trigger, within a
# budget and until it expires. The fleet's role signs the list as :func:`campaigns_path`
# (a :class:`Campaigns`), beside its release pointer; a new list is a new targets version.

CAMPAIGNS_FILE = "campaigns.json"
TRIGGER_KINDS = ("ood", "fallback", "disagreement", "signal")
_TRIGGER_OPS = ("<=", ">=", "<", ">")
_SIGNAL = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_TERM = re.compile(r"^\s*(?P<name>[A-Za-z0-9_.]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[^<>=\s]+)\s*$")


def campaigns_path(fleet: str) -> str:
    """The target listing ``fleet``'s collection campaigns (a :class:`Campaigns`)."""
    return f"{check_fleet_name(fleet)}/{CAMPAIGNS_FILE}"


class Condition(_Strict):
    """``<name> <op> <value>``: a frame signal (``speed_mps``, ``perception.vehicles``) or a model
    figure (``ood``: the OOD score, ``disagreement``: |shadow - actuated|)."""

    name: str
    op: Literal["<=", ">=", "<", ">"]
    value: float

    def holds(self, x: float | None) -> bool:
        return x is not None and x == x and _OPS[self.op](float(x), self.value)

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value:g}"


class Trigger(_Strict):
    """When a campaign fires. ``kind`` is ``ood`` (the actuated model's OOD score), ``fallback``
    (the safety monitor overruled the model), ``disagreement`` (the shadow's) or ``signal``
    (frame signals only); ``any_of`` is a disjunction of conjunctions (``a>1 and b<2 or c>3``)."""

    kind: Literal["ood", "fallback", "disagreement", "signal"]
    expression: str = Field(description="as typed, e.g. 'ood>=0.8' or 'speed_mps>20 and brake>0.5'")
    any_of: list[list[Condition]] = Field(default_factory=list, description="empty only for kind fallback")

    @classmethod
    def parse(cls, text: str) -> Trigger:
        """``fallback``, or ``<name> <op> <number>`` terms joined by ``and``/``or`` (``and`` binds
        tighter). The kind is the model figure the expression names (at most one), else ``signal``.

        Raises:
            ValueError: naming the term at fault and what is accepted.
        """
        text = text.strip()
        if text == "fallback":
            return cls(kind="fallback", expression=text)
        if not text:
            raise ValueError("the trigger is empty: give 'fallback' or terms like 'ood>=0.8' joined by and/or")
        any_of = [[_condition(term) for term in _split(group, "and")] for group in _split(text, "or")]
        figures = {c.name for group in any_of for c in group} & {"ood", "disagreement"}
        if len(figures) > 1:
            raise ValueError(f"trigger {text!r}: name one model figure (ood or disagreement), not both")
        kind = figures.pop() if figures else "signal"
        return cls(kind=kind, expression=text, any_of=any_of)

    @property
    def signals(self) -> list[str]:
        """The frame signals the expression reads."""
        return sorted({c.name for g in self.any_of for c in g} - {"ood", "disagreement"})

    def fires(self, values: Mapping[str, float | None], intervened_by_model: bool = False) -> bool:
        """Whether the trigger holds for one inference (a missing value never holds)."""
        if self.kind == "fallback":
            return intervened_by_model
        return any(all(c.holds(values.get(c.name)) for c in group) for group in self.any_of)


def _split(text: str, word: str) -> list[str]:
    parts = re.split(rf"(?:^|\s+){word}(?:\s+|$)", text.strip(), flags=re.IGNORECASE)
    if any(not p.strip() for p in parts):
        raise ValueError(f"trigger {text!r}: '{word}' needs a term on both sides")
    return parts


def _condition(term: str) -> Condition:
    m = _TERM.match(term)
    if m is None:
        raise ValueError(
            f"trigger term {term.strip()!r}: write '<signal> <op> <number>' with op one of "
            f"{', '.join(_TRIGGER_OPS)} (e.g. 'ood>=0.8', 'speed_mps>20')"
        )
    name, op, value = m["name"], m["op"], m["value"]
    if not _SIGNAL.match(name):
        raise ValueError(f"trigger term {term.strip()!r}: {name!r} is not a signal name (a-z, 0-9, _, '.')")
    if not _NUMBER.match(value):
        raise ValueError(f"trigger term {term.strip()!r}: {value!r} is not a number")
    number = float(value)
    if name == "ood" and not 0 <= number <= 1:
        raise ValueError(f"trigger term {term.strip()!r}: an OOD score lies in [0, 1]")
    return Condition(name=name, op=op, value=number)


class Budget(_Strict):
    """What one device may send for one campaign."""

    max_per_hour: int = Field(gt=0, description="windows per device per clock hour (UTC)")
    max_bytes_per_day: int = Field(gt=0, description="encoded bytes per device per UTC day")


class Campaign(_Strict):
    """A collection campaign: which fleet, when to collect, how much, until when."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    fleet: str
    trigger: Trigger
    budget: Budget
    window_before: int = Field(ge=1, le=100, description="frames up to the trigger's, which is the last of them")
    window_after: int = Field(ge=0, le=100, description="frames after the trigger")
    created_at: datetime
    expires_at: datetime
    stopped: bool = False
    stopped_at: datetime | None = None

    @field_validator("fleet")
    @classmethod
    def _valid_fleet(cls, fleet: str) -> str:
        return check_fleet_name(fleet)

    @model_validator(mode="after")
    def _sane(self) -> Campaign:
        if self.expires_at <= self.created_at:
            raise ValueError(f"campaign {self.id}: it expires ({self.expires_at}) before it was created")
        return self

    def active(self, now: datetime) -> bool:
        """Not stopped and not expired at ``now``."""
        return not self.stopped and self.created_at <= now < self.expires_at


class Campaigns(_Strict):
    """The content of :func:`campaigns_path`: every campaign of one fleet, stopped ones too."""

    def get(self, campaign_id: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.id == campaign_id), None)

    fleet: str
    issued_at: datetime
    campaigns: list[Campaign] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_fleet(self) -> Campaigns:
        ids = [c.id for c in self.campaigns]
        if len(ids) != len(set(ids)):
            raise ValueError("a campaign id appears twice")
        return self  # a campaign naming another fleet is the device's to ignore (and log)
