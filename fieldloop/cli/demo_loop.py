"""The demo's later iterations: what the field found hard trains the next model.

Every release and rollout asks the fleet for the hard cases its rollout policy names (the
``[campaign]`` of ``actuation/rollout/policies/<fleet>.toml``), so by the end of an iteration
the cars have spooled windows around their hard brakings, met by the version they ran. The
next iteration starts from them:

1. the field's records (the cars' telemetry and their hard cases) land in bronze;
2. refinement takes them to silver and to the hard-case gold table;
3. a fine-tune starts from the champion, mixes the hard cases in, is judged on the devices it
   held out beside the champion that met them, and the guardrails judge it (their
   ``regression.hard_cases`` check against the model that met them included);
4. the approved version goes through the staged rollout, whose cars send the hard cases of
   the iteration after.

:class:`Iteration` times each stage of one iteration. **Loop closure** is the time from the
iteration's first field record (iteration 1: the fleet's first record; later ones: the first
hard case a car spooled) to the approved model acting on a car of the canary cohort.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from fieldloop.config import FieldloopConfig

# The stage a closure figure names while the field collects what the iteration learns from.
FIELD = "field (hard cases collected while the previous iteration ran)"


@dataclass
class Iteration:
    """The wall-clock times of one iteration (see the module docstring)."""

    number: int
    began: float | None = None  # epoch seconds of its first field record
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds, in the order run
    starts: dict[str, float] = field(default_factory=dict)  # stage -> epoch seconds it started
    canary_at: float | None = None  # epoch seconds: the approved version first acted on a canary car

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.time()
        self.starts.setdefault(name, t0)
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.time() - t0

    @property
    def closure_s(self) -> float | None:
        if self.began is None or self.canary_at is None:
            return None
        return self.canary_at - self.began

    def closure_stages(self) -> dict[str, float]:
        """Where the loop-closure time went: each stage's seconds up to the canary's activation
        (the rollout's up to it; the field's from the first hard case to the first stage)."""
        if self.began is None or self.canary_at is None:
            return {}
        out: dict[str, float] = {}
        first = min(self.starts.values(), default=self.began)
        if first - self.began >= 1.0:  # iteration 1's first stage is the fleet: its first record is sent at once
            out[FIELD] = first - self.began
        for name, seconds in self.stages.items():
            start = self.starts[name]
            if start >= self.canary_at:
                continue
            out[name] = min(seconds, self.canary_at - start)
        return out

    def as_dict(self) -> dict[str, Any]:
        closure = self.closure_s
        return {
            "number": self.number,
            "stages": {k: round(v, 1) for k, v in self.stages.items()},
            "loop_closure_s": None if closure is None else round(closure, 1),
            "closure_stages": {k: round(v, 1) for k, v in self.closure_stages().items()},
        }


def print_times(console: Console, it: Iteration, target_s: float) -> None:
    """Each stage's seconds, and the loop closure against its target."""
    table = Table(title=f"iteration {it.number}: where the time went")
    for col in ("stage", "seconds", "before the canary (s)", "share of loop closure"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    closure, shares = it.closure_s, it.closure_stages()
    for name in [FIELD, *it.stages] if FIELD in shares else list(it.stages):
        seconds = it.stages.get(name, shares.get(name, 0.0))
        if closure and name in shares:
            table.add_row(name, f"{seconds:.0f}", f"{shares[name]:.0f}", f"{shares[name] / closure:.0%}")
        else:
            table.add_row(name, f"{seconds:.0f}", "-", "after the canary")
    console.print(table)
    if closure is None:
        console.print(f"  [yellow]iteration {it.number}: no approved version reached a canary car: no loop closure[/]")
        return
    slowest = max(shares, key=lambda k: shares[k])
    colour = "green" if closure <= target_s else "red"
    console.print(
        f"  [{colour}]loop closure, iteration {it.number}: {closure / 60:.1f} min[/] from its first field record to "
        f"the approved model active on a canary car (target {target_s / 60:.0f} min); the largest stage: {slowest} "
        f"({shares[slowest]:.0f} s)"
    )


def first_hard_case(agents: dict[str, Any], rollouts: dict[str, Any]) -> float | None:
    """Epoch seconds of the first hard case any of the demo's cars spooled (None: none did)."""
    firsts = [s.get("campaigns", {}).get("first_sent_at") for s in agents.get("devices", {}).values()]
    firsts += [(r or {}).get("hard_cases", {}).get("first_sent_at") for r in rollouts.values()]
    found = [f for f in firsts if f is not None]
    return min(found) if found else None


def hard_case_gain(console: Console, next_version: dict[str, Any], champion: int | None) -> dict[str, Any] | None:
    """Print how the new version did on the previous iterations' hard cases (the devices it held
    out) against the champion that met them; the figures the lineage records."""
    metrics = next_version.get("metrics") or {}
    if "hard_cases_rmse_student" not in metrics:
        console.print("  [yellow]the fine-tune read no hard case: nothing to compare on them[/]")
        return None
    new, old = metrics["hard_cases_rmse_student"], metrics.get("hard_cases_rmse_champion")
    persistence = metrics.get("hard_cases_rmse_persistence")
    gain = None if not old else 1 - new / old
    rows = int(metrics.get("hard_cases_rows", 0))
    devices = next_version.get("rows", {}).get("hard_cases_holdout_devices")
    if gain is not None and gain > 0:
        verdict = f"[green]{gain:.1%} lower[/]"
    else:
        verdict = "[red]not lower[/]"
    console.print(
        f"  on the previous rollout's hard cases ({rows} rows of {devices} cars it never trained on): "
        f"v{next_version.get('version')} RMSE {new:.3f} m/s² against the champion v{champion}'s "
        f"{old:.3f} ({verdict}); persistence {persistence:.3f}"
    )
    return {
        "version": next_version.get("version"),
        "champion": champion,
        "rmse_new": new,
        "rmse_champion": old,
        "rmse_persistence": persistence,
        "gain": gain,
        "rows": rows,
        "devices": devices,
    }


def next_iteration(
    cfg: FieldloopConfig,
    contracts: dict[str, Any],
    it: Iteration,
    console: Console,
    progress: Callable[[str], None],
    steps: Callable[[str], None],
    field: Any,
) -> dict[str, Any]:
    """One later iteration from the field's records in Kafka to the next rollout (see the module
    docstring); ``field`` lands Kafka in bronze and hands on its summary and Spark session."""
    from fieldloop.cli import demo
    from fieldloop.cli import demo_rollout as rollout

    out: dict[str, Any] = {}
    steps("the field's records (telemetry and hard cases) land in bronze")
    with it.stage("bronze"):
        out["bronze"], spark = field()
    steps("refinement: the hard cases join silver and the hard-case gold table")
    with it.stage("refine"):  # the Spark session's stop is the refinement's last second
        try:
            out["refine"] = demo.refine_lake(cfg, spark, console, progress)
        finally:
            spark.stop()
    with it.stage("train and judge"):
        champion = _champion(cfg)
        steps(f"a fine-tune from the champion v{champion} that learns from the hard cases, judged by the guardrails")
        out["next"] = demo.fine_tune_judged(cfg, console, progress)
        out["hard_cases"] = hard_case_gain(console, out["next"], champion)
    steps("staged rollout of the new version: shadow, canary, half, all (its cars send the next hard cases)")
    with it.stage("rollout"):
        out["rollouts"] = rollout.rollouts(
            cfg, out["next"].get("approved"), console, progress, lambda v: demo.judge_version(cfg, v), drill=False
        )
    it.canary_at = (out["rollouts"].get("good") or {}).get("active_at")
    return out


def _champion(cfg: FieldloopConfig) -> int | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from fieldloop.registry import CHAMPION

    try:
        found = MlflowClient(cfg.mlflow.uri).get_model_version_by_alias("fieldloop.vehicle-longitudinal", CHAMPION)
    except MlflowException:
        return None
    return int(found.version)
