"""The guardrail report: what was judged, every check with its value and limit, the readiness
figures, and plots a person would rather look at than a table of numbers.

Logged to the version's run under ``guardrail/``: ``report.json`` (this object), and
``envelope.png`` (each scenario's actuated outputs against the envelope), ``ood_roc.png``
(the ROC of the OOD score, shifted inputs positive) and ``regression.png`` (candidate vs
champion vs baseline on the frozen holdout). Readiness per model (checks passed and failed,
incidents found) is the consortium's "safety pipeline readiness" figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actuation.contract import RuntimeLimits, Verdict
from actuation.guardrails.checks.ood import POSITIVE
from actuation.guardrails.suite import SuiteResult

REPORT_DIR = "guardrail"
REPORT_FILE = "report.json"
PLOTS = ("envelope.png", "ood_roc.png", "regression.png")


@dataclass(frozen=True)
class Report:
    """What :func:`actuation.guardrails.judge` found and recorded for one model version."""

    verdict: Verdict
    subjects: dict[str, str]
    incidents: list[str]
    scores: dict[str, Any]
    p99_us: float
    seconds: dict[str, float]
    attestation: str = ""  # artifact path of the DSSE envelope in the version's run
    keyid: str = ""  # the guardrail key's id (public)
    approved: bool = False
    artifacts: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict.verdict == "pass"

    @property
    def readiness(self) -> dict[str, Any]:
        checks = self.verdict.checks
        return {
            "model": self.verdict.model,
            "version": self.verdict.version,
            "checks": len(checks),
            "passed": sum(c.passed for c in checks),
            "failed": sum(not c.passed for c in checks),
            "incidents": len(self.incidents),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": json.loads(self.verdict.model_dump_json()),
            "readiness": self.readiness,
            "failed": [_check_line(c) for c in self.verdict.failed],
            "incidents": self.incidents,
            "regression": self.scores,
            "ood_convention": POSITIVE,
            "p99_us_measured": self.p99_us,
            "subjects": self.subjects,
            "attestation": self.attestation,
            "guardrail_keyid": self.keyid,
            "approved": self.approved,
            "artifacts": self.artifacts,
            "seconds": self.seconds,
        }


def _check_line(check: Any) -> str:
    value = "unmeasurable" if check.value is None else f"{check.value:.6g}"
    return f"{check.name}: {value} {check.unit} (limit {check.op} {check.limit:g})".replace("  ", " ")


def plots(result: SuiteResult, runtime: RuntimeLimits, columns: list[str], out: Path) -> list[Path]:
    """The report's PNGs under ``out`` (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    limits = runtime.outputs
    fig, axes = plt.subplots(len(limits), 1, figsize=(10, 3.2 * len(limits)), squeeze=False)
    for ax, limit in zip(axes[:, 0], limits, strict=True):
        k = columns.index(limit.name)
        names = list(result.outcomes)
        data = []
        for name in names:
            col = result.outcomes[name].outputs[:, k].astype(np.float64)
            data.append(col[np.isfinite(col)] if np.isfinite(col).any() else np.array([np.nan]))
        ax.boxplot(data, whis=(0, 100))
        for i, col in enumerate(data, start=1):  # the share outside the envelope, above each box
            with np.errstate(invalid="ignore"):
                outside = float(np.mean((col < limit.min) | (col > limit.max))) if len(col) else 0.0
            ax.annotate(f"{outside:.0%} out", (i, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom")
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
        ax.axhline(limit.min, color="red", linestyle="--", label=f"envelope [{limit.min}, {limit.max}]")
        ax.axhline(limit.max, color="red", linestyle="--")
        ax.set_ylabel(f"{limit.name} ({limit.unit})" if limit.unit else limit.name)
        ax.set_title(f"{limit.name} per scenario (whiskers: min and max; share outside the envelope above)", pad=18)
        ax.legend(loc="upper right")
    fig.tight_layout()
    paths.append(_save(fig, out / "envelope.png", plt))

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(result.roc.fpr, result.roc.tpr, label=f"AUROC {result.roc.auroc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.axhline(0.95, color="red", linestyle="--", label=f"95 % TPR: FPR {result.roc.fpr_at_95:.3f}")
    ax.set_xlabel("false positive rate (holdout rows flagged)")
    ax.set_ylabel("true positive rate (shifted rows flagged)")
    ax.set_title("OOD score: shifted inputs are the positive class")
    ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(_save(fig, out / "ood_roc.png", plt))

    s = result.scores
    bars = [
        ("candidate", s.candidate, "tab:blue"),
        ("champion", s.champion, "tab:green"),
        (f"baseline:\n{s.baseline_name}", s.baseline, "tab:grey"),
    ]
    bars = [b for b in bars if b[1] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    for i, (_, v, _) in enumerate(bars):
        ax.text(i, v, f"{v:.4f}", ha="center", va="bottom")
    better = "lower is better" if s.metric == "rmse" else "higher is better"
    ax.set_title(f"holdout {s.metric.upper()} ({better})")
    fig.tight_layout()
    paths.append(_save(fig, out / "regression.png", plt))
    return paths


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
