"""OOD separation: the OOD score ranks shifted inputs above in-distribution ones.

The convention (stated in every report): the **shifted** rows are the positive class, the
holdout rows the negative one, as pytorch-ood counts it. AUROC is the probability that a
shifted row scores above a holdout row; FPR at 95 % TPR is the share of holdout rows the
device would flag at the threshold that catches 95 % of shifted rows (how often the
monitor would fall back on ordinary inputs if set to catch nearly all shifted ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actuation.contract import Check
from actuation.guardrails.policy import OodPolicy

POSITIVE = "shifted inputs (out of distribution) are the positive class; holdout rows the negative"


@dataclass(frozen=True)
class Roc:
    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    fpr_at_95: float


def roc(in_scores: np.ndarray, out_scores: np.ndarray) -> Roc:
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    # A NaN score is the worst answer: rank it as in-distribution (the monitor would miss it).
    scores = np.nan_to_num(np.concatenate([in_scores, out_scores]).astype(np.float64), nan=-np.inf)
    scores = np.clip(scores, -1e30, 1e30)
    fpr, tpr, _ = roc_curve(labels, scores)
    at = float(fpr[np.searchsorted(tpr, 0.95, side="left")])
    return Roc(fpr, tpr, float(roc_auc_score(labels, scores)), at)


def checks(curve: Roc, policy: OodPolicy) -> list[Check]:
    how = f"{policy.output} on holdout rows vs rows shifted by {policy.shift_std} std; {POSITIVE}"
    return [
        Check.measure("ood.auroc", "ood", curve.auroc, ">=", policy.min_auroc, "", how),
        Check.measure("ood.fpr_at_95_tpr", "ood", curve.fpr_at_95, "<=", policy.max_fpr_at_95_tpr, "share", how),
    ]
