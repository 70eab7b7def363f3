"""A stage's figures from device telemetry, and the gates judged on them.

:class:`StageWindow` takes a rollout stage's telemetry records (``telemetry.v3`` as the agents
send them) and keeps, per cohort, what the gates need:

* the **candidate** cohort: records of devices actuating the candidate;
* the **champion** cohort: records of devices actuating the champion over the same window
  (the control group: the same fleet, the same hours, the same roads);
* the **shadow** figures: champion records that carry the candidate's shadow output.

A record of the candidate from a device outside the stage's cohort is a **stray**: a device
acted on a version it was not given, which no gate tolerates. Records from before the window,
of other fleets or of other versions are counted as ignored, never judged.

:func:`judge` compares the cohorts by the policy's gates (:mod:`actuation.rollout.policy`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from actuation.contract import Stage
from actuation.rollout.policy import ROLLBACK, Gate, StagePolicy

_FAILED_UPDATE = ("refused", "error")


@dataclass
class Cohort:
    """Per-inference figures of one cohort over a window."""

    devices: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    ood_hits: int = 0
    interventions: int = 0
    errors: int = 0
    last_update: dict[str, str] = field(default_factory=dict)  # device -> its latest update_state

    def add(self, record: dict[str, Any], ood_threshold: float) -> None:
        self.devices.add(record["device_id"])
        self.latencies.append(float(record["latency_ms"]))
        self.ood_hits += record["ood_score"] >= ood_threshold
        self.interventions += bool(record["intervention"])
        self.errors += record.get("error") not in (None, "shadow")  # a shadow's failure is not the actuated model's
        if record.get("update_state"):
            self.last_update[record["device_id"]] = record["update_state"]

    @property
    def inferences(self) -> int:
        return len(self.latencies)

    def metrics(self) -> dict[str, float | None]:
        n = self.inferences
        failed = sum(s.split(":", 1)[0] in _FAILED_UPDATE for s in self.last_update.values())
        return {
            "latency_p99_ms": float(np.percentile(self.latencies, 99)) if n else None,
            "ood_rate": self.ood_hits / n if n else None,
            "intervention_rate": self.interventions / n if n else None,
            "error_rate": self.errors / n if n else None,
            "update_failure_rate": failed / len(self.devices) if self.devices else None,
        }


@dataclass
class Shadowed:
    """The candidate's shadow figures over a window."""

    devices: set[str] = field(default_factory=set)
    disagreements: list[float] = field(default_factory=list)
    ood_hits: int = 0

    def add(self, record: dict[str, Any], ood_threshold: float) -> None:
        self.devices.add(record["device_id"])
        self.disagreements.append(float(record["shadow_disagreement"] or 0.0))
        score = record.get("shadow_ood_score")
        self.ood_hits += score is not None and score >= ood_threshold

    @property
    def inferences(self) -> int:
        return len(self.disagreements)

    def metrics(self, threshold: float) -> dict[str, float | None]:
        n = self.inferences
        d = np.asarray(self.disagreements)
        return {
            "shadow_disagreement_rate": float((d > threshold).mean()) if n else None,
            "shadow_disagreement_p95": float(np.percentile(d, 95)) if n else None,
            "shadow_ood_rate": self.ood_hits / n if n else None,
        }


@dataclass
class StageWindow:
    """Telemetry of one stage since ``start`` (see the module docstring)."""

    fleet: str
    stage: Stage
    champion: tuple[str, int]  # model, version
    start: datetime
    ood_threshold: float
    disagreement_threshold: float
    candidate_cohort: Cohort = field(default_factory=Cohort)
    champion_cohort: Cohort = field(default_factory=Cohort)
    shadow: Shadowed = field(default_factory=Shadowed)
    strays: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    last_record_at: datetime | None = None

    def add(self, record: dict[str, Any]) -> None:
        ts = record["ts"]
        if record.get("fleet") != self.fleet or ts < self.start:
            self.ignored += 1
            return
        self.last_record_at = max(self.last_record_at or ts, ts)
        running = (record["model_name"], record["model_version"])
        candidate = (self.stage.candidate.model, str(self.stage.candidate.version))
        if running == candidate:
            if self.stage.mode != "active" or not self.stage.includes(record["device_id"]):
                self.strays[record["device_id"]] += 1
            self.candidate_cohort.add(record, self.ood_threshold)
        elif running == (self.champion[0], str(self.champion[1])):
            self.champion_cohort.add(record, self.ood_threshold)
            if record.get("shadow_version") == str(self.stage.candidate.version):
                self.shadow.add(record, self.ood_threshold)
        else:
            self.ignored += 1

    def figures(self) -> dict[str, Any]:
        return {
            "candidate": {
                "devices": len(self.candidate_cohort.devices),
                "inferences": self.candidate_cohort.inferences,
                **self.candidate_cohort.metrics(),
            },
            "champion": {
                "devices": len(self.champion_cohort.devices),
                "inferences": self.champion_cohort.inferences,
                **self.champion_cohort.metrics(),
            },
            "shadow": {
                "devices": len(self.shadow.devices),
                "inferences": self.shadow.inferences,
                **self.shadow.metrics(self.disagreement_threshold),
            },
            "strays": dict(self.strays),
            "ignored": self.ignored,
            "window_start": self.start.isoformat(),
        }


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    candidate: float | None
    champion: float | None
    limit: str
    passed: bool
    action: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def reporting(window: StageWindow, policy: StagePolicy, baseline: dict[str, Any] | None) -> str | None:
    """Why the stage cannot be judged yet (too few devices or inferences in a compared cohort), or None."""
    if window.stage.mode == "shadow":
        cohorts = [("shadowing", window.shadow.devices, window.shadow.inferences)]
    else:
        cohorts = [("candidate", window.candidate_cohort.devices, window.candidate_cohort.inferences)]
        if window.stage.share < 1 or baseline is None:
            cohorts.append(("champion", window.champion_cohort.devices, window.champion_cohort.inferences))
    for name, devices, inferences in cohorts:
        if len(devices) < policy.min_devices or inferences < policy.min_inferences:
            return (
                f"waiting for the {name} cohort: {len(devices)} devices reporting ({policy.min_devices} needed), "
                f"{inferences} inferences ({policy.min_inferences} needed)"
            )
    return None


def judge(window: StageWindow, gates: list[Gate], baseline: dict[str, Any] | None = None) -> list[GateResult]:
    """Each gate on the window's figures. In a stage on the whole fleet there is no champion
    cohort left: ``baseline`` (the champion's figures from the last stage that had one) stands in."""
    figures = window.figures()
    champion = figures["champion"] if figures["champion"]["inferences"] else (baseline or {})
    results = []
    for gate in gates:
        source = figures["shadow"] if gate.mode == "shadow" else figures["candidate"]
        value, base = source.get(gate.metric), champion.get(gate.metric)
        limits, ok = [], value is not None
        if gate.max is not None:
            limits.append(f"<= {gate.max:g}")
            ok = ok and value <= gate.max
        if gate.max_increase is not None:
            limits.append(f"<= champion + {gate.max_increase:g}")
            ok = ok and base is not None and value <= base + gate.max_increase
        results.append(GateResult(gate.name, gate.metric, value, base, " and ".join(limits), bool(ok), gate.action))
    if window.strays:  # a device acted on a version it was not given: nothing else matters
        devices = ", ".join(sorted(window.strays)[:5])
        results.append(
            GateResult(
                "cohort", f"outside the cohort: {devices}", float(len(window.strays)), 0.0, "== 0", False, ROLLBACK
            )
        )
    return results
