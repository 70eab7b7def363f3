"""Release: judge a new model version, ship it to each fleet that may run it, stage by stage.

Scheduled on the models' assets (training registered a candidate). `plan` finds each model
of the task whose `candidate` version has not been judged yet; `guardrail` judges each
(`fieldloop guardrail`): a pass sets the `approved` alias and announces the task's
approved-model asset, a fail ends the run here, naming every failed check, and nothing is
published. Then one group per fleet (`actuation/fleets.toml`), for the fleets the version
was judged for:

* `publish`: the fleet's first release is signed in as it is (`fieldloop release publish`);
  otherwise a staged rollout begins against the fleet's champion
  (`fieldloop rollout start --no-follow`).
* one task per stage of the fleet's rollout policy (`actuation/rollout/policies/<fleet>.toml`):
  it defers to the rollout controller, run by the triggerer (no worker slot is held while
  the stage soaks), and succeeds once the rollout has moved past its stage. A rollback, by
  a gate or a person, fails it with the decision's reason. Its log shows each decision.
* `champion`: confirms MLflow's `champion` alias is the new version, and announces the
  fleet's rollout asset.

**Where a rollout stands**: the deferred stage task of its fleet's group is the stage it is
in; its log has each decision and its XCom `where` the latest (state, stage, who, why);
`fieldloop rollout status --fleet F` shows every decision with its figures.

**Pause** a rollout with `fieldloop rollout pause --fleet F`: the fleet stays where it is,
and the stage task keeps waiting (its log says so) until `fieldloop rollout resume --fleet F`,
after which the stage is judged afresh. **Roll back** with `fieldloop rollout rollback --fleet F`:
every device returns to the champion (a newer signed pointer), the stage task fails with
the reason and the later stages do not run. A stage whose policy says `approval = true`
waits for a person after it passed: the rollout is `awaiting-approval` and the stage task
keeps waiting until `fieldloop rollout resume --fleet F` approves the next stage.

Trigger it by hand with params: `model` (and `version`, default its `candidate`) to release
one model, `fleet` to ship it to one fleet only.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pendulum
from airflow.sdk import AssetAny, BaseOperator, Param, TaskGroup, chain, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from actuation.contract import load_fleets
from actuation.rollout.policy import load_policy
from fieldloop.assets import approved_alias, approved_asset, model_asset, rollout_asset, run_judged, run_stage
from fieldloop.datasets import TASK_LAYOUTS

TASKS = sorted(TASK_LAYOUTS)
FLEETS = load_fleets().fleet  # files only: no network at parse time
POLICIES = {f.name: load_policy(f.name) for f in FLEETS}
GUARDRAIL_DOC = (
    "`fieldloop guardrail` on one version: a pass sets its `approved` alias and announces its task's "
    "approved-model asset (`x-fieldloop://models/<task>/approved`); a fail ends the run naming every failed check, "
    "and nothing is published."
)
POLL_S = 5.0  # seconds between two looks of the controller while a stage soaks


class RolloutStage(BaseOperator):
    """Waits, deferred, while the fleet's rollout is in one stage of its policy (see the DAG's doc).

    Args:
        fleet: the fleet.
        stage: the policy's stage name.
        stage_index: its position in the policy (0-based).
        publish_task: the task id whose XCom names the rollout (``<fleet>.publish``).
    """

    ui_color = "#d6eaf8"

    def __init__(self, *, fleet: str, stage: str, stage_index: int, publish_task: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fleet, self.stage, self.stage_index, self.publish_task = fleet, stage, stage_index, publish_task

    def execute(self, context: Any) -> Any:
        started = context["ti"].xcom_pull(task_ids=self.publish_task)
        if not started or not started.get("rollout"):
            raise AirflowSkipException(f"no staged rollout on {self.fleet} in this run (a first release has none)")
        self.log.info("waiting while rollout %s on %s is in stage %s", started["rollout"], self.fleet, self.stage)
        self._wait(started["rollout"], "running")

    def moved(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """The trigger fired: the rollout left the stage and state this task waited in."""
        from actuation.rollout.audit import COMPLETED, ROLLED_BACK

        where = self._ours(context, event or {})
        last = where["last"]
        said = f"{last['action']} at {where['stage']} by {last['requested_by']}: {last['reason']}"
        self.log.info("rollout %s on %s: %s (%s)", where["rollout"], self.fleet, where["state"], said)
        context["ti"].xcom_push(key="where", value=where)  # the stage's latest news, in the UI's XCom tab
        if where["state"] == ROLLED_BACK:
            raise AirflowFailException(f"rollout {where['rollout']} on {self.fleet} was rolled back: {said}")
        if where["state"] == COMPLETED or where["stage_index"] > self.stage_index:
            return where
        self._tell(where)
        self._wait(where["rollout"], where["state"])

    def _ours(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The event, once it is news of this run's rollout (an error or another rollout fails the task)."""
        from actuation.rollout.trigger import ERROR

        if event.get("status") == ERROR:
            raise RuntimeError(f"the controller of {self.fleet} could not look at rollout {event.get('rollout')}: "
                               f"{event.get('error')}")  # fmt: skip
        ours = (context["ti"].xcom_pull(task_ids=self.publish_task) or {}).get("rollout")
        if event.get("rollout") != ours:
            raise AirflowFailException(
                f"the rollout on {self.fleet} is no longer {ours} but {event.get('rollout')}: see "
                f"`fieldloop rollout status --fleet {self.fleet}`"
            )
        return event

    def _tell(self, where: dict[str, Any]) -> None:
        """Say in the task's log why it waits again, and what a person does about it."""
        from actuation.rollout.audit import AWAITING, PAUSED

        rollout, fleet = where["rollout"], self.fleet
        then = f"`fieldloop rollout rollback --fleet {fleet}` ends it"
        if where["state"] == PAUSED:
            self.log.warning("rollout %s on %s is PAUSED in stage %s; the fleet stays where it is. "
                             "`fieldloop rollout resume --fleet %s` resumes it, %s", rollout, fleet, self.stage, fleet,
                             then)  # fmt: skip
        elif where["state"] == AWAITING:
            self.log.warning("stage %s of rollout %s on %s passed; the policy asks a person to approve the next: "
                             "`fieldloop rollout resume --fleet %s` approves it, %s", self.stage, rollout, fleet, fleet,
                             then)  # fmt: skip
        else:
            self.log.info("rollout %s on %s runs stage %s again; its figures start afresh", rollout, fleet, self.stage)

    def _wait(self, rollout_id: str, waiting_in: str) -> NoReturn:
        from actuation.rollout.trigger import StageTrigger

        trigger = StageTrigger(self.fleet, rollout_id, self.stage_index, waiting_in, POLL_S)
        self.defer(trigger=trigger, method_name="moved")


@dag(
    dag_id="fieldloop_release",
    description="Judge new candidates by guardrails, sign them, roll them out stage by stage",
    schedule=AssetAny(*[model_asset(name) for name in TASKS]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one rollout per fleet at a time: runs would race for the fleets
    tags=["fieldloop", "release"],
    doc_md=__doc__,
    default_args={"owner": "fleet-operations", "retries": 2, "retry_delay": pendulum.duration(minutes=1)},
    params={
        "model": Param(
            None,
            type=["null", "string"],
            description="Release this model (e.g. fieldloop.vehicle-longitudinal); default: the new candidates.",
        ),
        "version": Param(
            None, type=["null", "integer"], minimum=1, description="With model: this version (default: its candidate)."
        ),
        "fleet": Param(
            None,
            type=["null", "string"],
            enum=[None, *[f.name for f in FLEETS]],
            description="Ship to this fleet only (default: every fleet the version was judged for).",
        ),
    },
)
def fieldloop_release() -> None:
    @task
    def plan(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """The model versions to judge: the params' one, or each model of a triggering task whose
        `candidate` has no guardrail verdict yet."""
        params = params or {}
        if params.get("model"):
            return [{"model": params["model"], "version": params.get("version")}]
        from mlflow import MlflowClient

        from fieldloop.config import load_config

        tasks = sorted({a.name.removeprefix("fieldloop.models.") for a in triggering_asset_events or []})
        releases = unjudged_candidates(MlflowClient(load_config().mlflow.uri), tasks)
        print("to judge: " + (", ".join(f"{r['model']} v{r['version']}" for r in releases) or "nothing"))
        return releases

    @task(outlets=[approved_alias()], doc_md=GUARDRAIL_DOC)  # a mapped task shows no docstring
    def guardrail(release: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        argv = ["guardrail", "--model", release["model"]]
        if release.get("version"):
            argv += ["--version", str(release["version"])]
        code, report = run_judged(argv)
        if report is None:
            raise RuntimeError(f"`fieldloop {' '.join(argv)}` failed (exit {code}) with no report; its error is above")
        verdict = report["verdict"]
        name = f"{verdict['model']} v{verdict['version']}"
        if verdict["verdict"] != "pass" or not report.get("approved"):
            failed = "; ".join(report.get("failed") or []) or "see the report above"
            raise AirflowFailException(f"{name} FAILED its guardrails, nothing is published: {failed}")
        asset = approved_asset(verdict["task"])
        outlet_events[approved_alias()].add(asset, extra={"model": verdict["model"], "version": verdict["version"]})
        print(f"{name} approved for {', '.join(verdict['fleets'])}; announced {asset.uri}")
        return {k: verdict[k] for k in ("model", "version", "task", "tenant", "fleets")}

    approved = guardrail.expand(release=plan())

    for fleet in FLEETS:
        policy = POLICIES[fleet.name]
        with TaskGroup(group_id=fleet.name, tooltip=f"{fleet.description}: {policy.description}"):
            publish = _publish_task(fleet)(approved)
            stages = [
                RolloutStage(
                    task_id=stage.name,
                    fleet=fleet.name,
                    stage=stage.name,
                    stage_index=i,
                    publish_task=f"{fleet.name}.publish",
                    doc_md=_stage_doc(fleet.name, stage),
                )
                for i, stage in enumerate(policy.stage)
            ]
            champion = _champion_task(fleet)()
            chain(publish, *stages, champion)


def unjudged_candidates(client: Any, tasks: list[str]) -> list[dict[str, Any]]:
    """Each model of ``tasks`` whose ``candidate`` alias points at a version no guardrail has judged."""
    from fieldloop.registry import CANDIDATE, GUARDRAIL_TAG_PREFIX, TASK_TAG

    out = []
    for name in tasks:
        for model in client.search_registered_models(filter_string=f"tags.`{TASK_TAG}` = '{name}'"):
            try:
                version = client.get_model_version_by_alias(model.name, CANDIDATE)
            except Exception:  # no candidate: nothing new to judge
                continue
            if GUARDRAIL_TAG_PREFIX + "verdict" not in (version.tags or {}):
                out.append({"model": model.name, "version": int(version.version)})
    return sorted(out, key=lambda r: (r["model"], r["version"]))


def _publish_task(fleet: Any) -> Any:
    @task(task_id="publish")
    def publish(approved: list[dict[str, Any]], params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Ship the approved version to this fleet: its first release as is (`release publish`),
        otherwise a staged rollout against its champion (`rollout start --no-follow`)."""
        params = params or {}
        if params.get("fleet") and params["fleet"] != fleet.name:
            raise AirflowSkipException(f"this run ships to {params['fleet']} only")
        mine = [a for a in approved if fleet.name in a["fleets"]]
        if not mine:
            raise AirflowSkipException(f"no version approved for {fleet.name} in this run")
        # a tenant's fleet takes its tenant's own model over the base model when both were approved
        chosen = sorted(mine, key=lambda a: a["tenant"] != fleet.tenant)[0]
        for other in mine:
            if other is not chosen:
                print(f"{other['model']} v{other['version']} is not shipped to {fleet.name}: its tenant's model is")
        return _ship(fleet.name, chosen["model"], int(chosen["version"]))

    return publish


def _ship(fleet: str, model: str, version: int) -> dict[str, Any]:
    """Publish or start; a retry after a start that happened adopts that rollout instead of failing."""
    from actuation.release.cli import open_repository
    from actuation.rollout.audit import RolloutLog
    from fieldloop.config import load_config

    cfg = load_config()
    shipped = {"fleet": fleet, "model": model, "version": version, "rollout": None, "first_release": False}
    running = RolloutLog.for_config(cfg).current(fleet)
    if running is not None and not running.done and (running.last.model, running.last.version) == (model, version):
        print(f"rollout {running.id} of {model} v{version} on {fleet} is already {running.state}: following it")
        return shipped | {"rollout": running.id}
    pointer = open_repository(cfg).pointer(fleet)
    if pointer is not None and (pointer.active.model, pointer.active.version) == (model, version):
        raise AirflowSkipException(f"{fleet} already runs {model} v{version} (its champion): nothing to ship")
    if pointer is None:
        done = run_stage(["release", "publish", "--model", model, "--version", str(version), "--fleet", fleet])
        print(f"first release of {fleet}: {model} v{version} published (no stages: there is no champion to compare)")
        return shipped | {"first_release": True, "changed": done.get("changed")}
    first = run_stage(
        ["rollout", "start", "--model", model, "--version", str(version), "--fleet", fleet, "--no-follow"]
    )
    print(f"rollout {first['rollout_id']} of {model} v{version} on {fleet} started: {first['reason']}")
    return shipped | {"rollout": first["rollout_id"]}


def _stage_doc(fleet: str, stage: Any) -> str:
    approval = (
        f" Then it waits for a person: `fieldloop rollout resume --fleet {fleet}` approves the next stage."
        if stage.approval
        else ""
    )
    return (
        f"Stage **{stage.name}** of {fleet}'s rollout: the candidate runs {stage.mode} on {stage.share:.0%} of the "
        f"fleet; judged once {stage.min_devices} devices per cohort report, passed after {stage.soak_s:g} s with "
        f"every gate holding.{approval} Deferred to the rollout controller while it soaks (no worker slot). "
        f"`fieldloop rollout pause --fleet {fleet}` holds it, `fieldloop rollout rollback --fleet {fleet}` ends it."
    )


def _champion_task(fleet: Any) -> Any:
    @task(task_id="champion", outlets=[rollout_asset(fleet.name)], trigger_rule="none_failed")
    def champion(ti: Any = None) -> dict[str, Any]:
        """Confirm MLflow's `champion` alias is the version the fleet now runs; announce the fleet's rollout asset."""
        from mlflow import MlflowClient

        from actuation.rollout.controller import Controller, Site
        from fieldloop.config import load_config

        shipped = ti.xcom_pull(task_ids=f"{fleet.name}.publish")
        if not shipped:
            raise AirflowSkipException(f"nothing was shipped to {fleet.name} in this run")
        cfg, model, version = load_config(), shipped["model"], shipped["version"]
        client = MlflowClient(cfg.mlflow.uri)
        crowned = _champion_of(client, model)
        if shipped["first_release"]:
            print(f"{fleet.name} runs {model} v{version}, its first release; MLflow's champion of {model}: {crowned}")
            return {**shipped, "champion": crowned}
        if crowned != version:  # the completion's MLflow step did not finish: one look of the controller does
            Controller(Site.open(cfg, fleet.name)).step()
            crowned = _champion_of(client, model)
        if crowned != version:
            raise RuntimeError(
                f"rollout {shipped['rollout']} on {fleet.name} completed but {model}@champion is {crowned}, "
                f"not {version}: `fieldloop rollout status --fleet {fleet.name}`"
            )
        print(f"{model} v{version} is the champion of {fleet.name} (rollout {shipped['rollout']})")
        return {**shipped, "champion": crowned}

    return champion


def _champion_of(client: Any, model: str) -> int | None:
    from fieldloop.registry import CHAMPION

    try:
        return int(client.get_model_version_by_alias(model, CHAMPION).version)
    except Exception:  # no champion alias on the model yet
        return None


fieldloop_release()
