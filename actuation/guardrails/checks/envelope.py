"""Safety envelope (mis-control): the actuated outputs stay finite, inside their limits and
within their step over the scenario suite (:mod:`actuation.guardrails.scenarios`).

Per scenario and actuated output, the worst excursion beyond ``[min, max]`` (0 inside; output
units) against the policy's tolerance; over all scenarios, the share of outputs that are not
finite (limit 0); per output with a ``max_step``, the largest change between consecutive
frames of one device, on the holdout's sequences as they are and with sensor noise.

In a scenario the policy lists as *monitored*, a row the device's monitor replaces anyway
(a non-finite output, or an OOD score at or above the runtime threshold) is not counted;
how many were excused is in the check's detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actuation.contract import Check, RuntimeLimits
from actuation.guardrails.policy import EnvelopePolicy


@dataclass(frozen=True)
class Outcome:
    """What one scenario gave: its outputs and which rows the device's monitor would replace."""

    outputs: np.ndarray  # [N, K]
    excused: np.ndarray  # bool [N]


def monitor_replaces(out: np.ndarray, columns: list[str], runtime: RuntimeLimits) -> np.ndarray:
    """Rows the device's monitor falls back on before looking at the envelope: non-finite, or OOD."""
    replaced = ~np.isfinite(out).all(1)
    if runtime.ood_output and runtime.ood_output in columns:
        ood = out[:, columns.index(runtime.ood_output)]
        replaced |= np.nan_to_num(ood, nan=1.0) >= runtime.ood_threshold
    return replaced


def excursion(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """How far each value is beyond ``[lo, hi]`` (0 inside; NaN for a non-finite value)."""
    with np.errstate(invalid="ignore"):
        return np.maximum(np.maximum(values - hi, lo - values), 0.0)


def checks(
    outcomes: dict[str, Outcome],
    steps: dict[str, float],
    columns: list[str],
    runtime: RuntimeLimits,
    policy: EnvelopePolicy,
) -> list[Check]:
    found = []
    nonfinite, counted, where = 0, 0, []
    for name, outcome in outcomes.items():
        monitored = name in policy.monitored
        keep = ~outcome.excused if monitored else np.ones(len(outcome.outputs), bool)
        for limit in runtime.outputs:
            col = outcome.outputs[keep, columns.index(limit.name)].astype(np.float64)
            finite = col[np.isfinite(col)]
            worst = float(excursion(finite, limit.min, limit.max).max()) if len(finite) else 0.0
            outside = int((excursion(finite, limit.min, limit.max) > policy.tolerance).sum())
            excused = f"; {int(outcome.excused.sum())} rows excused (the monitor replaces them)" if monitored else ""
            found.append(
                Check.measure(
                    f"envelope.{name}.{limit.name}",
                    "envelope",
                    worst,
                    "<=",
                    policy.tolerance,
                    limit.unit,
                    f"worst excursion beyond [{limit.min}, {limit.max}] over {int(keep.sum())} rows; "
                    f"{outside} outside{excused}",
                )
            )
            bad = int((~np.isfinite(col)).sum())
            nonfinite += bad
            counted += len(col)
            if bad:
                where.append(f"{name}: {bad}")
    found.append(
        Check.measure(
            "envelope.nonfinite_share",
            "envelope",
            nonfinite / counted if counted else 0.0,
            "<=",
            0.0,
            "share",
            "non-finite actuated outputs the monitor would not replace" + (f" ({', '.join(where)})" if where else ""),
        )
    )
    for limit in runtime.outputs:
        if limit.max_step is not None and limit.name in steps:
            found.append(
                Check.measure(
                    f"envelope.step.{limit.name}",
                    "envelope",
                    steps[limit.name],
                    "<=",
                    limit.max_step,
                    limit.unit,
                    "largest change between consecutive frames of one device, beyond the followed signal's own "
                    "where the policy names one (step_reference; holdout sequences, clean and noisy)",
                )
            )
    return found


def largest_step(out: np.ndarray, runs: list[np.ndarray], column: int, reference: np.ndarray | None = None) -> float:
    """The largest |change| of ``column`` between consecutive rows of each run (NaN-free rows only).

    With ``reference`` (the measured signal the output follows, one value per row), the change
    beyond the reference's own change between the same rows: a driver's 4.7 m/s² jump from one
    frame to the next is in the data, and a command that follows it adds no jerk of its own.
    """
    worst = 0.0
    for run in runs:
        col = out[run, column].astype(np.float64)
        diffs = np.abs(np.diff(col))
        if reference is not None:
            diffs = diffs - np.abs(np.diff(reference[run].astype(np.float64)))
        diffs = diffs[np.isfinite(diffs)]
        if len(diffs):
            worst = max(worst, float(diffs.max()))
    return worst
