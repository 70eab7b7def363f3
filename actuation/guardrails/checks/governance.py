"""Governance: the version's lineage is complete and still passes the training rule, the model
may run on every fleet it is judged for, and its artifacts' storage passed residency.

The facts are gathered against MLflow and the contracts by :mod:`actuation.guardrails.source`;
here they become counts against a limit of 0, each naming what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actuation.contract import Check, Fleet

# What a version's lineage must carry to be traced (fieldloop.lineage.* minus the prefix).
REQUIRED_LINEAGE = ("inputs", "tables", "classes", "contracts", "task", "run_id", "holdout", "git_commit")


@dataclass(frozen=True)
class Facts:
    lineage_missing: list[str] = field(default_factory=list)
    rule_violations: list[str] = field(default_factory=list)
    residency_problem: str | None = None
    artifact_location: str = ""


def missing_lineage(lineage: dict[str, str]) -> list[str]:
    return [key for key in REQUIRED_LINEAGE if not lineage.get(key)]


def checks(facts: Facts, task: str, tenant: str | None, fleets: list[Fleet]) -> list[Check]:
    refused = [
        f"{f.name} ({'runs ' + f.task if f.task != task else 'belongs to ' + (f.tenant or 'no tenant')})"
        for f in fleets
        if f.task != task or not f.may_run(tenant)
    ]
    return [
        Check.measure(
            "governance.lineage_missing",
            "governance",
            len(facts.lineage_missing),
            "<=",
            0,
            "tags",
            "missing: " + ", ".join(facts.lineage_missing) if facts.lineage_missing else "lineage complete",
        ),
        Check.measure(
            "governance.training_rule_violations",
            "governance",
            len(facts.rule_violations),
            "<=",
            0,
            "inputs",
            "; ".join(facts.rule_violations) or "the training rule passes with the contracts as they are now",
        ),
        Check.measure(
            "governance.fleets_not_allowed",
            "governance",
            len(refused),
            "<=",
            0,
            "fleets",
            (f"a {'model of ' + tenant if tenant else 'base model'} may not run on " + ", ".join(refused))
            if refused
            else "every judged fleet may run it",
        ),
        Check.measure(
            "governance.residency_refused",
            "governance",
            1 if facts.residency_problem else 0,
            "<=",
            0,
            "",
            facts.residency_problem or f"artifacts at {facts.artifact_location} are in an allowed region",
        ),
    ]
