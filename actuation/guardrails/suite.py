"""The suite: every check of a task's policy on one model, with no registry in sight.

:func:`run_suite` takes a :class:`Subject` (the model as a device runs it, the holdout, the
champion if any, the governance facts) and returns a :class:`SuiteResult`: the checks in a
fixed order (regression, envelope, property, ood, edge, governance), the data the plots are
drawn from, the incidents found and where the time went. :mod:`actuation.guardrails.judge`
gathers the subject from MLflow and records the result; the unit tests build one in memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from actuation.contract import Check, Fleet
from actuation.guardrails import scenarios
from actuation.guardrails.checks import edge, envelope, governance, ood, properties, regression
from actuation.guardrails.policy import LoadedPolicy
from actuation.guardrails.runner import Model, OnnxModel
from fieldloop.datasets import FeatureLayout, layout

if TYPE_CHECKING:
    from actuation.guardrails.source import HardCases


@dataclass(frozen=True)
class Subject:
    """What is judged: one model version as a device runs it, and what it is judged on."""

    task: str
    tenant: str | None
    model: Model
    size: int  # bytes of the file a device runs
    x: np.ndarray  # the frozen holdout's features, sorted by device and time
    y: np.ndarray  # its labels (vehicle: the target; plant: the BAD flag)
    devices: np.ndarray
    fleets: list[Fleet]
    facts: governance.Facts
    champion: Model | None = None
    hard_cases: HardCases | None = None  # the second holdout, for a version that learned from hard cases
    met: Model | None = None  # the model that met most of them (None: it can no longer be loaded)
    met_label: str = ""  # its "<name> v<version>"

    @property
    def layout(self) -> FeatureLayout:
        return layout(self.task)


@dataclass(frozen=True)
class SuiteResult:
    checks: list[Check]
    scores: regression.Scores
    outcomes: dict[str, envelope.Outcome]
    roc: ood.Roc
    p99_us: float
    incidents: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def run_suite(subject: Subject, policy: LoadedPolicy) -> SuiteResult:
    """Every check of ``policy`` on ``subject``; see the module docstring."""
    rules, seconds, found = policy.rules, {}, []
    ref = scenarios.Reference.of(subject.x)
    columns = list(subject.model.outputs)

    start = time.perf_counter()
    scores = _scores(subject, policy)
    found += regression.checks(scores, rules.regression)
    if subject.hard_cases is not None and rules.regression.metric == "rmse":
        found.append(
            _hard_case_check(subject, policy, list(subject.model.outputs).index(rules.runtime.outputs[0].name))
        )
    seconds["regression"] = time.perf_counter() - start

    start = time.perf_counter()
    outcomes, steps = _envelope(subject, policy, ref, columns)
    found += envelope.checks(outcomes, steps, columns, rules.runtime, rules.envelope)
    seconds["envelope"] = time.perf_counter() - start

    start = time.perf_counter()
    found_props, incidents = properties.checks(subject.model, subject.x, subject.layout, rules.properties)
    found += found_props
    seconds["property"] = time.perf_counter() - start

    start = time.perf_counter()
    k = columns.index(rules.ood.output)
    shifted = scenarios.shifted(ref, rules.ood.shift_std, rules.envelope.rows, rules.envelope.seed)
    curve = ood.roc(outcomes["normal"].outputs[:, k], subject.model(shifted)[:, k])
    found += ood.checks(curve, rules.ood)
    seconds["ood"] = time.perf_counter() - start

    start = time.perf_counter()
    p99 = subject.model.p99_us(subject.x) if isinstance(subject.model, OnnxModel) else float("nan")
    found += edge.checks(subject.size, p99, subject.fleets)
    seconds["edge"] = time.perf_counter() - start

    found += governance.checks(subject.facts, subject.task, subject.tenant, subject.fleets)
    incidents += [
        f"{c.name}: {_value(c)} against {c.op} {c.limit:g} {c.unit}".rstrip()
        for c in found
        if not c.passed and c.kind != "property"
    ]
    return SuiteResult(found, scores, outcomes, curve, p99, incidents, seconds)


def _hard_case_check(subject: Subject, policy: LoadedPolicy, k: int) -> Check:
    """The candidate against the model that met the hard cases, on those of held-out devices."""
    hard = subject.hard_cases
    assert hard is not None
    candidate = regression.rmse(subject.model(hard.x)[:, k], hard.y)
    met = regression.rmse(subject.met(hard.x)[:, k], hard.y) if subject.met is not None else None
    gain = None if met is None else ((met - candidate) / met if met > 0 else 0.0)
    against = "unmeasurable (its edge file cannot be loaded)" if met is None else f"{met:.4f}"
    limit = policy.rules.regression.min_gain_on_hard_cases
    return Check.measure(
        "regression.hard_cases.rmse.gain_vs_met",
        "regression",
        gain,
        ">" if limit == 0 else ">=",
        limit,
        "relative",
        f"candidate rmse {candidate:.4f}, {subject.met_label or 'the model that met them'} "
        f"{against} on {len(hard.y)} hard-case rows of {len(set(hard.devices.tolist()))} held-out devices",
    )


def _value(check: Check) -> str:
    return "unmeasurable" if check.value is None else f"{check.value:.6g}"


def _scores(subject: Subject, policy: LoadedPolicy) -> regression.Scores:
    rules = policy.rules.regression
    lim = policy.rules.runtime.outputs[0].name if rules.metric == "rmse" else policy.rules.ood.output
    k = list(subject.model.outputs).index(lim)
    name, baseline = regression.BASELINES[subject.task]
    out = subject.model(subject.x)[:, k]
    cand = regression.score(rules.metric, out, subject.y)
    base = regression.score(rules.metric, baseline(subject.x, subject.layout, out), subject.y)
    champ = None
    if subject.champion is not None:
        champ = regression.score(rules.metric, subject.champion(subject.x)[:, k], subject.y)
    return regression.Scores(rules.metric, cand, base, champ, name)


def _envelope(
    subject: Subject, policy: LoadedPolicy, ref: scenarios.Reference, columns: list[str]
) -> tuple[dict[str, envelope.Outcome], dict[str, float]]:
    rules = policy.rules
    runtime = rules.runtime
    built = scenarios.build(ref, subject.layout, rules.envelope)

    def margin(rows: np.ndarray) -> np.ndarray:
        out = subject.model(rows).astype(np.float64)
        worst = np.full(len(rows), -np.inf)
        for limit in runtime.outputs:
            col = out[:, columns.index(limit.name)]
            worst = np.maximum(worst, np.nan_to_num(np.maximum(col - limit.max, limit.min - col), nan=np.inf))
        return worst

    built["adversarial"] = scenarios.adversarial(ref, rules.envelope, margin)
    outcomes = {}
    for name, rows in built.items():
        out = subject.model(rows)
        outcomes[name] = envelope.Outcome(out, envelope.monitor_replaces(out, columns, runtime))
    steps = {}
    runs = scenarios.sequences(subject.devices)
    rng = np.random.default_rng(rules.envelope.seed + 3)
    noisy = (subject.x + rng.normal(0, rules.envelope.noise_std, subject.x.shape) * ref.std).astype(np.float32)
    for limit in runtime.outputs:
        if limit.max_step is not None:
            k = columns.index(limit.name)
            follows = rules.envelope.step_reference.get(limit.name)
            ref_clean = subject.x[:, subject.layout.index(follows)] if follows else None
            ref_noisy = noisy[:, subject.layout.index(follows)] if follows else None
            steps[limit.name] = max(
                envelope.largest_step(subject.model(subject.x), runs, k, ref_clean),
                envelope.largest_step(subject.model(noisy), runs, k, ref_noisy),
            )
    return outcomes, steps
