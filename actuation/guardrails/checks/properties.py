"""Properties the task must never violate, searched with hypothesis from holdout rows.

A rule (policy ``[[properties.rule]]``) moves some features one way (``increase``, or
``away-from-zero`` for a deviation) and says what the output must not do. Each example is a
holdout row and a move of each feature in ``[0, max_change]``; the violation is how far the
output moved the forbidden way (0 when it did not). hypothesis' ``target()`` steers the
search toward the worst case; before it, every holdout row is tried with the largest move,
so the search starts from the worst known point. The check is the worst violation found,
in output units, against the rule's tolerance, with the row that gave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actuation.contract import Check
from actuation.guardrails.policy import PropertiesPolicy, PropertyPolicy
from actuation.guardrails.runner import Model
from fieldloop.datasets import FeatureLayout


@dataclass(frozen=True)
class Worst:
    violation: float
    row: int
    move: tuple[float, ...]


def _columns(layout: FeatureLayout, names: list[str]) -> list[int]:
    """Feature positions by name: an extra, or ``signal@frame`` (frame 0 the newest, -1 the one before)."""
    cols = []
    for name in names:
        if "@" in name:
            signal, frame = name.split("@")
            cols.append(layout.index(signal, int(frame) - 1))
        else:
            cols.append(layout.index(name))
    return cols


def _moved(x: np.ndarray, cols: list[int], move: np.ndarray, rule: PropertyPolicy) -> np.ndarray:
    out = x.copy()
    if rule.change == "increase":
        out[:, cols] += move
    else:
        sign = np.where(out[:, cols] >= 0, 1.0, -1.0).astype(np.float32)
        out[:, cols] += sign * move
    return out


def violations(model: Model, x: np.ndarray, cols: list[int], move: np.ndarray, rule: PropertyPolicy) -> np.ndarray:
    """Per row, how far the output moved the forbidden way (≥ 0)."""
    k = list(model.outputs).index(rule.output)
    before = model(x)[:, k].astype(np.float64)
    after = model(_moved(x, cols, move, rule))[:, k].astype(np.float64)
    delta = after - before if rule.output_must_not == "increase" else before - after
    return np.nan_to_num(np.maximum(delta, 0.0), nan=np.inf)


def search(model: Model, x: np.ndarray, layout: FeatureLayout, rule: PropertyPolicy, examples: int) -> Worst:
    """The worst violation of ``rule`` found: every row at the largest move, then hypothesis."""
    from hypothesis import HealthCheck, given, settings, target
    from hypothesis import strategies as st

    cols = _columns(layout, rule.features)
    full = np.full(len(cols), rule.max_change, dtype=np.float32)
    grid = violations(model, x, cols, full, rule)
    i = int(grid.argmax())
    worst = [Worst(float(grid[i]), i, tuple(full.tolist()))]

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.integers(0, len(x) - 1),
        st.lists(st.floats(0, rule.max_change, allow_nan=False, width=32), min_size=len(cols), max_size=len(cols)),
    )
    def explore(row: int, move: list[float]) -> None:
        step = np.array(move, dtype=np.float32)
        v = float(violations(model, x[row : row + 1], cols, step, rule)[0])
        target(v if np.isfinite(v) else 1e9)
        if v > worst[0].violation:
            worst[0] = Worst(v, row, tuple(move))

    explore()
    return worst[0]


def checks(
    model: Model, x: np.ndarray, layout: FeatureLayout, policy: PropertiesPolicy
) -> tuple[list[Check], list[str]]:
    """One check per rule, and an incident line per rule violated (with its counterexample)."""
    found, incidents = [], []
    for rule in policy.rule:
        worst = search(model, x, layout, rule, policy.examples)
        check = Check.measure(
            f"property.{rule.name}",
            "property",
            worst.violation,
            "<=",
            rule.tolerance,
            "",
            f"worst {rule.output} change the forbidden way ({rule.output_must_not}) when "
            f"{', '.join(rule.features)} {rule.change.replace('-', ' ')} by "
            f"{', '.join(f'{m:.2f}' for m in worst.move)} (holdout row {worst.row}); {rule.why}",
        )
        found.append(check)
        if not check.passed:
            incidents.append(f"{check.name}: {check.detail}")
    return found, incidents
