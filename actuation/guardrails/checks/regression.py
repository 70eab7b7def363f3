"""Regression: on the frozen holdout, the candidate beats the trivial baseline and is not worse
than the champion beyond the policy's tolerance.

The baselines are the task's trivial answers, computed from the features alone:

* ``vehicle-longitudinal``: persistence, the newest frame's acceleration (RMSE vs the target);
* ``plant-anomaly``: a score drawn from the candidate's own score distribution, independent
  of the input (a seeded permutation of its holdout scores): what a detector that learned
  only how often readings are anomalous, not which, would rank (AUROC vs the BAD flag, 0.5
  in expectation). A learned score must beat that.

Gains and losses are relative for RMSE ((baseline - candidate) / baseline) and absolute for
AUROC (a difference of areas). ``mlflow.validate_evaluation_results`` cannot express "no more
than 2 % worse" (a ``MetricThreshold``'s changes are minimum improvements), so the champion
comparison is computed here and reported as a number like every other check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from actuation.contract import Check
from actuation.guardrails.policy import RegressionPolicy
from fieldloop.datasets import FeatureLayout


def _persistence(x: np.ndarray, layout: FeatureLayout) -> np.ndarray:
    return x[:, layout.index(layout.target_signal or "accel_mps2")]


def _score_distribution(x: np.ndarray, layout: FeatureLayout, scores: np.ndarray) -> np.ndarray:
    return np.random.default_rng(0).permutation(scores)


# task -> (name, baseline(features, layout, candidate's outputs) -> predictions or scores)
BASELINES: dict[str, tuple[str, Callable[[np.ndarray, FeatureLayout, np.ndarray], np.ndarray]]] = {
    "vehicle-longitudinal": ("persistence (the current acceleration)", lambda x, lay, _: _persistence(x, lay)),
    "plant-anomaly": ("scores drawn from its own score distribution (chance)", _score_distribution),
}


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred.astype(np.float64) - y) ** 2)))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve, or None when the labels hold one class only."""
    from sklearn.metrics import roc_auc_score

    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class Scores:
    """The holdout metric of the candidate, the baseline and the champion (None: none)."""

    metric: str
    candidate: float | None
    baseline: float | None
    champion: float | None
    baseline_name: str


def score(metric: str, out: np.ndarray, y: np.ndarray) -> float | None:
    return rmse(out, y) if metric == "rmse" else auroc(out, y)


def checks(scores: Scores, policy: RegressionPolicy) -> list[Check]:
    lower_better = scores.metric == "rmse"

    def gain(better: float | None, worse: float | None) -> float | None:
        if better is None or worse is None:
            return None
        if lower_better:
            return (worse - better) / worse if worse > 0 else 0.0
        return better - worse

    found = [
        Check.measure(
            f"regression.{scores.metric}.gain_over_baseline",
            "regression",
            gain(scores.candidate, scores.baseline),
            ">" if policy.min_gain_over_baseline == 0 else ">=",
            policy.min_gain_over_baseline,
            "relative" if lower_better else "AUROC",
            f"candidate {scores.metric} {_fmt(scores.candidate)}, baseline {scores.baseline_name} "
            f"{_fmt(scores.baseline)} on the frozen holdout",
        )
    ]
    if scores.champion is not None:
        loss = None
        if scores.candidate is not None:
            if lower_better:
                loss = (scores.candidate - scores.champion) / scores.champion if scores.champion > 0 else 0.0
            else:
                loss = scores.champion - scores.candidate
        found.append(
            Check.measure(
                f"regression.{scores.metric}.loss_vs_champion",
                "regression",
                loss,
                "<=",
                policy.max_loss_vs_champion,
                "relative" if lower_better else "AUROC",
                f"candidate {scores.metric} {_fmt(scores.candidate)}, champion {_fmt(scores.champion)}",
            )
        )
    return found


def _fmt(v: float | None) -> str:
    return "unmeasurable" if v is None else f"{v:.4f}"
