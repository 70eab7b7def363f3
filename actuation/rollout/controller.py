"""The rollout controller: moves an approved version through a fleet's stages by what the
devices report, halts and rolls back on a breach, and makes a good one the champion.

Workflow. :func:`start` checks the version as a publish does (approved, attested, this
fleet's task and tenant: :func:`actuation.release.publish.check`), records the rollout's
first decision and signs the first stage into the fleet's release pointer, next to the
champion it runs now. :class:`Controller` then looks every few seconds
(:meth:`Controller.step`):

1. the fleet's latest rollout from the audit table (:mod:`actuation.rollout.audit`); the
   fleet's pointer is made to say what that state calls for if it does not (a controller
   killed between its decision and the publish finishes the publish on resume);
2. the stage's telemetry since it began, from Kafka (:mod:`actuation.rollout.feed`),
   folded into the candidate's and the champion's cohorts (:mod:`actuation.rollout.figures`);
3. a decision: ``hold`` while a compared cohort has too few devices reporting (never judged),
   ``rollback`` on a breached gate whose action says so or on any device outside the cohort
   running the candidate, ``pause`` on the other breaches, ``advance`` once the stage has
   soaked with every gate holding (``await-approval`` first when the policy asks for a
   person), ``complete`` after the last stage;
4. the decision appended to the audit table (as the fleet's next decision: a concurrent
   decider makes this one look again), then published as a new version of the fleet's
   targets role: a rollback is a newer pointer without the stage (TUF never goes
   backwards); a completion a newer one whose champion is the candidate, and MLflow's
   ``champion`` alias moves to it while the previous champion is tagged retired.

A person's ``pause``, ``resume`` and ``rollback`` (:func:`request`) are decisions in the same
table, so the controller sees them on its next look.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from actuation.contract import Fleet, ReleasePointer, fleet_role, load_fleets, model_target_path
from actuation.errors import ReleaseError
from actuation.release.publish import Approved
from actuation.release.repository import Repository
from actuation.rollout.audit import (
    ADVANCE,
    AWAIT,
    AWAITING,
    COMPLETE,
    COMPLETED,
    HOLD,
    PAUSE,
    PAUSED,
    RESUME,
    ROLLBACK,
    ROLLED_BACK,
    RUNNING,
    START,
    Decision,
    Rollout,
    RolloutLog,
    rollouts_of,
)
from actuation.rollout.feed import TelemetryFeed
from actuation.rollout.figures import StageWindow, judge, reporting
from actuation.rollout.policy import PAUSE as GATE_PAUSE
from actuation.rollout.policy import ROLLBACK as GATE_ROLLBACK
from actuation.rollout.policy import RolloutPolicy, load_policy
from fieldloop.registry import CHAMPION

logger = logging.getLogger(__name__)

RETIRED_TAG = "fieldloop.rollout.retired"
CHAMPION_TAG = "fieldloop.rollout.champion"


@dataclass
class Site:
    """What a controller works with: the repository, the audit table, MLflow, the policy."""

    cfg: Any
    fleet: Fleet
    repo: Repository
    log: RolloutLog
    policy: RolloutPolicy
    client: Any = None  # an mlflow.MlflowClient, made on first use

    @classmethod
    def open(cls, cfg: Any, fleet: str, policy: RolloutPolicy | None = None) -> Site:
        from actuation.release.cli import open_repository

        try:
            the_fleet = load_fleets().get(fleet)
        except KeyError as e:
            raise ReleaseError(str(e.args[0])) from e
        repo = open_repository(cfg)
        if not repo.exists():
            raise ReleaseError(f"no release repository in {repo.dir}; create it with `fieldloop release init`")
        try:
            policy = policy or load_policy(fleet)
        except (FileNotFoundError, ValueError) as e:
            raise ReleaseError(f"fleet {fleet}'s rollout policy: {e}") from e
        return cls(cfg, the_fleet, repo, RolloutLog.for_config(cfg), policy)

    def mlflow(self) -> Any:
        if self.client is None:
            from mlflow import MlflowClient

            self.client = MlflowClient(self.cfg.mlflow.uri)
        return self.client


def _now() -> datetime:
    return datetime.now(UTC)


def _row(rollout: Rollout, action: str, state: str, by: str, reason: str, **changes: Any) -> Decision:
    """A decision about ``rollout``, like its last row but for what changes (the releases stay on
    the START row, figures and gates belong to the decision that measured them)."""
    fresh = {"figures": {}, "gates": [], "candidate_release": "", "champion_release": ""}
    return replace(
        rollout.last, seq=0, at=_now(), action=action, state=state, requested_by=by, reason=reason, **(fresh | changes)
    )


def _enter(rollout: Rollout, policy: RolloutPolicy, index: int, by: str, reason: str, **extra: Any) -> Decision:
    stage = policy.stage[index]
    return _row(
        rollout,
        ADVANCE,
        RUNNING,
        by,
        reason,
        stage=stage.name,
        stage_index=index,
        mode=stage.mode,
        share=stage.share,
        **extra,
    )


# -- a person's and a DAG's requests -----------------------------------------------------------
def start(site: Site, model: str, version: int, requested_by: str) -> Decision:
    """Begin rolling ``model`` ``version`` out to the site's fleet, once it passed every publish
    check (see the module docstring).

    Raises:
        ReleaseError: a rollout is running on the fleet, the fleet runs no release yet, the
            version already runs there, or a publish check failed; the message says what to do.
    """
    from actuation.release.publish import check

    _startable(site, model, version)
    return begin(site, check(site.mlflow(), site.repo, model, version, site.fleet), requested_by)


def _startable(site: Site, model: str, version: int) -> ReleasePointer:
    fleet = site.fleet.name
    running = site.log.current(fleet)
    if running is not None and not running.done:
        raise ReleaseError(_busy(running))
    pointer = site.repo.pointer(fleet)
    if pointer is None:
        raise ReleaseError(
            f"fleet {fleet} runs no release yet, so there is no champion to compare a rollout with: publish its "
            f"first release with `fieldloop release publish --model {model} --version {version} --fleet {fleet}`"
        )
    if (pointer.active.model, pointer.active.version) == (model, version):
        raise ReleaseError(f"fleet {fleet} already runs {model} version {version} (its champion): nothing to roll out")
    return pointer


def begin(site: Site, approved: Approved, requested_by: str, rollout_id: str | None = None) -> Decision:
    """:func:`start` for a version that passed :func:`actuation.release.publish.check` (``rollout_id``:
    a test's, to know the cohorts in advance; default a new one)."""
    from actuation.campaigns.book import ask_for_hard_cases
    from actuation.release.publish import release_of

    fleet, model, version = site.fleet.name, approved.model, approved.version
    champion = _startable(site, model, version).active
    candidate = release_of(approved)
    first = site.policy.stage[0]
    rollout_id = rollout_id or f"v{version}-{uuid.uuid4().hex[:8]}"
    plan = " → ".join(f"{s.name} ({s.mode} {s.share:.0%})" for s in site.policy.stage)

    def decide(rows: list[Decision]) -> Decision | None:
        latest = rollouts_of(rows)[-1] if rows else None
        if latest is not None and not latest.done:
            raise ReleaseError(_busy(latest))
        return Decision(
            rollout_id=rollout_id,
            seq=0,
            at=_now(),
            fleet=fleet,
            model=model,
            version=version,
            champion_model=champion.model,
            champion_version=champion.version,
            stage=first.name,
            stage_index=0,
            mode=first.mode,
            share=first.share,
            action=START,
            state=RUNNING,
            requested_by=requested_by,
            reason=f"policy {site.policy.fleet} v{site.policy.version}: {plan}",
            candidate_release=candidate.model_dump_json(),
            champion_release=champion.model_dump_json(),
        )

    ask_for_hard_cases(site.repo, fleet)  # before the decision: a bad campaign refuses the rollout
    decision = site.log.append_if(fleet, decide)
    assert decision is not None
    files = {model_target_path(fleet, model, version, name): data for name, data in approved.files.items()}
    _publish(site, Rollout((decision,)), files)
    logger.info("rollout %s of %s v%d on %s started: %s", rollout_id, model, version, fleet, decision.reason)
    return decision


def _busy(rollout: Rollout) -> str:
    last = rollout.last
    return (
        f"fleet {last.fleet} is already rolling out {last.model} version {last.version} (rollout {rollout.id}, "
        f"stage {last.stage}, {last.state} since {last.at:%Y-%m-%d %H:%M:%S} UTC): one rollout per fleet at a "
        f"time. See `fieldloop rollout status --fleet {last.fleet}`; `fieldloop rollout rollback --fleet "
        f"{last.fleet}` ends it"
    )


def request(site: Site, action: str, requested_by: str, reason: str = "") -> Decision:
    """A person's (or a DAG's) ``pause``, ``resume`` or ``rollback`` of the fleet's rollout.

    Raises:
        ReleaseError: no rollout is running, or the action does not apply to its state.
    """
    fleet = site.fleet.name
    why = reason or f"requested by {requested_by}"

    def decide(rows: list[Decision]) -> Decision | None:
        rollout = rollouts_of(rows)[-1] if rows else None
        if rollout is None or rollout.done:
            what = f"its last ended {rollout.state} ({rollout.id})" if rollout else "none has started"
            raise ReleaseError(f"fleet {fleet} has no rollout in progress ({what}): nothing to {action}")
        state = rollout.state
        if action == ROLLBACK:
            return _row(rollout, ROLLBACK, ROLLED_BACK, requested_by, why)
        if action == PAUSE:
            if state != RUNNING:
                raise ReleaseError(f"rollout {rollout.id} on {fleet} is {state}, not running: nothing to pause")
            return _row(rollout, PAUSE, PAUSED, requested_by, why)
        if action == RESUME:
            if state == AWAITING:  # the approval the policy asked for: on to the next stage
                index = rollout.stage_index + 1
                if index == len(site.policy.stage):
                    return _row(rollout, COMPLETE, COMPLETED, requested_by, f"approved: {why}")
                return _enter(rollout, site.policy, index, requested_by, f"approved: {why}")
            if state != PAUSED:
                raise ReleaseError(f"rollout {rollout.id} on {fleet} is {state}: nothing to resume")
            return _row(rollout, RESUME, RUNNING, requested_by, f"{why}; the stage's figures start again")
        raise ValueError(f"unknown request {action!r}")

    decision = site.log.append_if(fleet, decide)
    assert decision is not None
    _apply(site, decision)
    return decision


# -- the controller ------------------------------------------------------------------------------
class Controller:
    """Looks at one fleet's rollout every ``every_s`` seconds and decides (see the module docstring).

    Args:
        site: the fleet's repository, audit table, MLflow and policy.
        feed: makes the telemetry feed for a stage, from its start (default: Kafka).
        on_decision: called with each decision written (the CLI prints the timeline).
    """

    def __init__(
        self,
        site: Site,
        feed: Callable[[datetime], Any] | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        every_s: float = 1.0,
    ) -> None:
        self.site, self.every_s = site, every_s
        self._feed_for = feed or (lambda since: TelemetryFeed(site.cfg.kafka, since))
        self._on_decision = on_decision or (lambda d: None)
        self._feed: Any = None
        self._window: StageWindow | None = None
        self._window_key: tuple[str, int, datetime] | None = None
        self.window_figures: dict[str, Any] = {}

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def step(self) -> Decision | None:
        """One look (see the module docstring); the decision written, if any."""
        site = self.site
        rollout = site.log.current(site.fleet.name)
        if rollout is None:
            return None
        _reconcile(site, rollout)
        if rollout.state != RUNNING:
            return None
        window = self._read(rollout)
        proposal = self._judge(rollout, window)
        if proposal is None:
            return None
        seen = rollout.last.seq

        def decide(rows: list[Decision]) -> Decision | None:  # nobody decided since we looked
            return proposal if rows and rows[-1].seq == seen else None

        written = site.log.append_if(site.fleet.name, decide)
        if written is not None:
            _apply(site, written)
            self._on_decision(written)
        return written

    def run(self, stop: Callable[[], bool] = lambda: False) -> Rollout | None:
        """Step until the rollout is complete or rolled back (or ``stop()``), then return it."""
        try:
            while not stop():
                self.step()
                rollout = self.site.log.current(self.site.fleet.name)
                if rollout is None or rollout.done:
                    return rollout
                time.sleep(self.every_s)
            return self.site.log.current(self.site.fleet.name)
        finally:
            self.close()

    def _read(self, rollout: Rollout) -> StageWindow:
        key = (rollout.id, rollout.stage_index, rollout.window_start)
        if key != self._window_key:
            self.close()
            pointer = rollout.pointer(_now(), self.site.fleet.tenant)
            assert pointer.stage is not None
            self._window = StageWindow(
                fleet=self.site.fleet.name,
                stage=pointer.stage,
                champion=(rollout.champion.model, rollout.champion.version),
                start=rollout.window_start,
                ood_threshold=rollout.candidate.limits.ood_threshold,
                disagreement_threshold=self.site.policy.disagreement_threshold,
            )
            self._feed, self._window_key = self._feed_for(rollout.window_start), key
        assert self._window is not None
        for record in self._feed.drain():
            self._window.add(record)
        self.window_figures = self._window.figures()
        return self._window

    def _judge(self, rollout: Rollout, window: StageWindow) -> Decision | None:
        policy = self.site.policy
        stage = policy.stage[rollout.stage_index]
        baseline = _baseline(rollout)
        figures = window.figures()
        results = judge(window, policy.gates_for(stage), baseline)
        gates = [r.as_dict() for r in results]
        strays = [r for r in results if r.gate == "cohort"]
        waiting = None if strays else reporting(window, stage, baseline)
        if waiting:
            waited = (_now() - rollout.window_start).total_seconds()
            if waited > stage.max_wait_s:
                return _row(
                    rollout,
                    PAUSE,
                    PAUSED,
                    "controller",
                    f"paused at {stage.name}: still {waiting.removeprefix('waiting for ')} after "
                    f"{waited:.0f} s (max_wait_s {stage.max_wait_s:g}); the cohort may be too small for "
                    "the policy: resume to wait longer, or roll back",
                    figures=figures,
                    gates=gates,
                )
            return _hold(rollout, waiting, figures)
        breached = [r for r in results if not r.passed]
        if breached:
            worst = next((r for r in breached if r.action == GATE_ROLLBACK), None)
            said = "; ".join(
                f"{r.gate}: {r.metric} {_fmt(r.candidate)} (champion {_fmt(r.champion)}), limit {r.limit}"
                for r in breached
            )
            if worst is not None:
                return _row(
                    rollout,
                    ROLLBACK,
                    ROLLED_BACK,
                    "controller",
                    f"halted at {stage.name}: {said}",
                    figures=figures,
                    gates=gates,
                )
            assert all(r.action == GATE_PAUSE for r in breached)
            return _row(
                rollout,
                PAUSE,
                PAUSED,
                "controller",
                f"paused at {stage.name}: {said}; resume or roll back",
                figures=figures,
                gates=gates,
            )
        soaked = (_now() - rollout.window_start).total_seconds()
        if soaked < stage.soak_s:
            return _hold(rollout, f"soaking: gates hold, {soaked:.0f} of {stage.soak_s:g} s", figures, gates)
        passed = f"{stage.name} passed: every gate held over {soaked:.0f} s"
        if rollout.stage_index + 1 == len(policy.stage):
            return _row(
                rollout,
                COMPLETE,
                COMPLETED,
                "controller",
                f"{passed}; the candidate is the champion",
                figures=figures,
                gates=gates,
            )
        if stage.approval:
            return _row(
                rollout,
                AWAIT,
                AWAITING,
                "controller",
                f"{passed}; the policy asks a person to approve the next stage "
                f"(`fieldloop rollout resume --fleet {rollout.last.fleet}`)",
                figures=figures,
                gates=gates,
            )
        return _enter(rollout, policy, rollout.stage_index + 1, "controller", passed, figures=figures, gates=gates)


def _hold(
    rollout: Rollout, reason: str, figures: dict[str, Any], gates: list[dict[str, Any]] | None = None
) -> Decision | None:
    """A hold row when the reason's kind changes (waiting -> soaking), not on every look."""
    kind = reason.split(":", 1)[0]
    last = rollout.last
    if last.action == HOLD and last.reason.split(":", 1)[0] == kind:
        return None
    return _row(rollout, HOLD, RUNNING, "controller", reason, figures=figures, gates=gates or [])


def _baseline(rollout: Rollout) -> dict[str, Any] | None:
    """The champion's figures from the rollout's latest judged window that had a champion cohort."""
    for row in reversed(rollout.rows):
        champion = row.figures.get("champion") if row.figures else None
        if champion and champion.get("inferences"):
            return champion
    return None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


# -- publishing what a decision calls for ------------------------------------------------------
def _apply(site: Site, decision: Decision) -> None:
    rollout = site.log.current(site.fleet.name)
    assert rollout is not None and rollout.last.seq >= decision.seq
    _publish(site, rollout)
    if rollout.state == COMPLETED:
        _crown(site, rollout)


def _reconcile(site: Site, rollout: Rollout) -> None:
    """Make the fleet's pointer say what the rollout's state calls for (after a crash between a
    decision and its publish), and finish a completion's MLflow aliases."""
    current = site.repo.pointer(site.fleet.name)
    if current is None or not current.routes_like(rollout.pointer(_now(), site.fleet.tenant)):
        logger.warning(
            "fleet %s's pointer is not what rollout %s's state (%s) calls for: publishing it",
            site.fleet.name,
            rollout.id,
            rollout.state,
        )
        _publish(site, rollout)
    if rollout.state == COMPLETED:
        _crown(site, rollout)


def _publish(site: Site, rollout: Rollout, files: dict[str, bytes] | None = None) -> None:
    pointer: ReleasePointer = rollout.pointer(_now(), site.fleet.tenant, site.policy.disagreement_threshold)
    if files is None and not _has_files(site, rollout):
        files = _files_from_mlflow(site, rollout)
    last = rollout.last
    custom = {"rollout": rollout.id, "stage": last.stage, "state": last.state, "decision": last.seq}
    site.repo.publish(site.fleet.name, files or {}, custom, pointer)
    _mirror(site)


def _has_files(site: Site, rollout: Rollout) -> bool:
    targets = site.repo.targets(fleet_role(site.fleet.name)).signed.targets
    release = rollout.candidate
    return all(f.path in targets for f in (release.model_file, release.manifest, release.attestation))


def _files_from_mlflow(site: Site, rollout: Rollout) -> dict[str, bytes]:
    """The candidate's files again (the controller stopped between its first decision and publish)."""
    from actuation.release.publish import check

    approved = check(site.mlflow(), site.repo, rollout.first.model, rollout.first.version, site.fleet)
    first = rollout.first
    return {model_target_path(first.fleet, first.model, first.version, n): d for n, d in approved.files.items()}


def _mirror(site: Site) -> None:
    if site.cfg.release.s3:
        from actuation.release.cli import mirror_release

        mirror_release(site.cfg)


def _crown(site: Site, rollout: Rollout) -> None:
    """MLflow's ``champion`` alias on the candidate; the champion it replaced tagged retired."""
    client, first = site.mlflow(), rollout.first
    try:
        current = client.get_model_version_by_alias(first.model, CHAMPION)
        if int(current.version) == first.version:
            return
    except Exception:  # no champion alias yet
        current = None
    at = rollout.last.at.isoformat()
    client.set_registered_model_alias(first.model, CHAMPION, str(first.version))
    client.set_model_version_tag(first.model, str(first.version), CHAMPION_TAG, f"{site.fleet.name} {rollout.id} {at}")
    retired = [(first.champion_model, first.champion_version)]
    if current is not None:
        retired.append((first.model, int(current.version)))
    for model, version in set(retired):
        if (model, version) != (first.model, first.version):
            client.set_model_version_tag(
                model,
                str(version),
                RETIRED_TAG,
                f"replaced by {first.model} v{first.version} on {site.fleet.name} ({rollout.id}) at {at}",
            )
