"""One guardrail run on one registered model version, recorded in MLflow.

:func:`judge` reads as its steps:

1. :func:`_gather`: the version (default: ``@candidate``), the task's policy, the fleets,
   the int8 edge file and manifest, the frozen holdout, the champion's file, the governance
   facts (:mod:`actuation.guardrails.source`);
2. :func:`actuation.guardrails.suite.run_suite`: every check, each a number against its limit;
3. :func:`_attest`: the :class:`~actuation.contract.Verdict`, signed with the ``guardrail``
   key as an in-toto statement in DSSE, logged as ``guardrail/attestation.dsse.json``
   (pass or fail: a refusal is evidence too);
4. :func:`_record`: report and plots, the model card as the version's description, the
   holdout and inputs linked to the logged model as datasets, the ``fieldloop.guardrail.*``
   tags, and last the alias: ``approved`` on a pass, removed from this version on a fail.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actuation.contract import Fleet, PolicyRef, Verdict
from actuation.guardrails import source
from actuation.guardrails.card import card
from actuation.guardrails.policy import LoadedPolicy, load_policy
from actuation.guardrails.report import REPORT_DIR, REPORT_FILE, Report, plots
from actuation.guardrails.runner import OnnxModel
from actuation.guardrails.suite import Subject, SuiteResult, run_suite
from fieldloop.registry import APPROVED, GUARDRAIL_TAG_PREFIX

if TYPE_CHECKING:
    from fieldloop.config import FieldloopConfig

logger = logging.getLogger(__name__)

ATTESTATION_ARTIFACT = f"{REPORT_DIR}/attestation.dsse.json"  # the release side reads exactly this path


@dataclass(frozen=True)
class _Gathered:
    version: source.Version
    policy: LoadedPolicy
    fleets: list[Fleet]
    edge: source.EdgeFiles
    subject: Subject


def judge(
    cfg: FieldloopConfig,
    model: str,
    version: int | None = None,
    fleets: list[str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> Report:
    """Judge ``model`` (at ``version``, default the ``candidate``) for ``fleets`` (default: every
    fleet of its task that may run it) and record the verdict; see the module docstring.

    Raises:
        GuardrailError: the version, its artifacts, its holdout or the policy cannot be read
            (nothing is recorded then).
    """
    import mlflow

    echo = echo or (lambda line: None)
    source.check_server(cfg.mlflow.uri)
    client = mlflow.MlflowClient(cfg.mlflow.uri)
    with tempfile.TemporaryDirectory() as tmp:
        found = _gather(cfg, client, model, version, fleets, Path(tmp))
        v = found.version
        echo(
            f"judging {v.model} v{v.version} ({v.task}) for {', '.join(f.name for f in found.fleets)} "
            f"under {found.policy.task}@{found.policy.version}"
        )
        result = run_suite(found.subject, found.policy)
        verdict = _verdict(found, result)
        subjects = found.edge.subjects()
        keyid = _attest(cfg, client, v, verdict, subjects, Path(tmp))
        report = Report(
            verdict,
            subjects,
            result.incidents,
            {
                "metric": result.scores.metric,
                "candidate": result.scores.candidate,
                "champion": result.scores.champion,
                "baseline": result.scores.baseline,
                "baseline_name": result.scores.baseline_name,
            },
            result.p99_us,
            result.seconds,
            attestation=ATTESTATION_ARTIFACT,
            keyid=keyid,
            approved=verdict.verdict == "pass",
            artifacts=[ATTESTATION_ARTIFACT, f"{REPORT_DIR}/{REPORT_FILE}"]
            + [f"{REPORT_DIR}/{p}" for p in ("envelope.png", "ood_roc.png", "regression.png")],
        )
        _record(client, found, result, report, Path(tmp))
    return report


def _gather(
    cfg: FieldloopConfig, client: Any, model: str, version: int | None, fleets: list[str] | None, tmp: Path
) -> _Gathered:
    v = source.resolve(client, model, version)
    policy = load_policy(v.task)
    targets = source.target_fleets(v.task, v.tenant, fleets)
    edge = source.download_edge(client, v.run_id, tmp / "candidate")
    holdout = source.read_holdout(cfg, v)
    champion = None
    champ = source.champion_version(client, model, v.version)
    if champ is not None:
        run_id = client.get_model_version(model, str(champ)).run_id
        files = source.download_edge(client, run_id, tmp / "champion")
        champion = OnnxModel(files.model_file, tuple(files.manifest.outputs))
    hard = source.read_hard_cases(cfg, v)
    met, met_label = None, ""
    if hard is not None:
        met_name, met_version = hard.met_most()
        met_label = f"{met_name} v{met_version}"
        try:  # the model the devices ran when they met them; gone from the registry, the check cannot pass
            run_id = client.get_model_version(met_name, str(met_version)).run_id
            files = source.download_edge(client, run_id, tmp / "met")
            met = OnnxModel(files.model_file, tuple(files.manifest.outputs))
        except Exception as e:  # MlflowException, GuardrailError: judged unmeasurable, and said why
            logger.warning("the model that met the hard cases, %s, cannot be loaded: %s", met_label, e)
    subject = Subject(
        v.task,
        v.tenant,
        OnnxModel(edge.model_file, tuple(edge.manifest.outputs)),
        edge.model_file.stat().st_size,
        holdout.x,
        holdout.y,
        holdout.devices,
        targets,
        source.governance_facts(cfg, v),
        champion,
        hard,
        met,
        met_label,
    )
    return _Gathered(v, policy, targets, edge, subject)


def _verdict(found: _Gathered, result: SuiteResult) -> Verdict:
    v = found.version
    return Verdict(
        verdict="fail" if result.failed else "pass",
        model=v.model,
        version=v.version,
        task=v.task,
        tenant=v.tenant,
        fleets=[f.name for f in found.fleets],
        policy=PolicyRef(name=found.policy.task, version=found.policy.version, sha256=found.policy.sha256),
        checks=result.checks,
        mlflow_uri=f"models:/{v.model}/{v.version}",
        run_id=v.run_id,
        lineage=v.lineage,
        judged_at=datetime.now(UTC),
    )


def _attest(
    cfg: FieldloopConfig, client: Any, v: source.Version, verdict: Verdict, subjects: dict[str, str], tmp: Path
) -> str:
    """Sign the verdict with the guardrail key (created on first use) and log the envelope; returns the key id."""
    from actuation.signing import GUARDRAIL, KeyStore, attest

    keys = KeyStore(cfg.home)
    entry = keys.generate(GUARDRAIL)  # idempotent: an existing key is kept
    envelope = attest(verdict, subjects, keys.signer(GUARDRAIL))
    out = tmp / "attest" / Path(ATTESTATION_ARTIFACT).name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(envelope)
    client.log_artifact(v.run_id, str(out), REPORT_DIR)
    logger.info("attestation of %s v%s signed with guardrail key %s", v.model, v.version, entry.keyid[:12])
    return entry.keyid


def _record(client: Any, found: _Gathered, result: SuiteResult, report: Report, tmp: Path) -> None:
    v, verdict = found.version, report.verdict
    out = tmp / "report"
    for path in plots(result, found.policy.rules.runtime, list(found.edge.manifest.outputs), out):
        client.log_artifact(v.run_id, str(path), REPORT_DIR)
    (out / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2, default=str))
    client.log_artifact(v.run_id, str(out / REPORT_FILE), REPORT_DIR)
    client.update_model_version(v.model, str(v.version), card(v, report, found.edge, found.policy.rules.runtime))
    _link_datasets(client, v, result)
    failed = ",".join(c.name for c in verdict.failed)
    tags = {
        "verdict": verdict.verdict,
        "policy": f"{verdict.policy.name}@{verdict.policy.version}",
        "failed": failed[:5000],
        "judged_at": verdict.judged_at.isoformat(timespec="seconds"),
        "fleets": ",".join(verdict.fleets),
        "checks_passed": str(report.readiness["passed"]),
        "checks_failed": str(report.readiness["failed"]),
        "incidents": str(len(report.incidents)),
        "attestation": ATTESTATION_ARTIFACT,
    }
    for key, value in tags.items():
        client.set_model_version_tag(v.model, str(v.version), GUARDRAIL_TAG_PREFIX + key, value)
    # The alias last: it never points at a version whose evidence is not recorded yet.
    if verdict.verdict == "pass":
        client.set_registered_model_alias(v.model, APPROVED, str(v.version))
    else:
        _withdraw_approval(client, v)


def _withdraw_approval(client: Any, v: source.Version) -> None:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(v.model, APPROVED)
    except MlflowException:
        return
    if int(current.version) == v.version:
        client.delete_registered_model_alias(v.model, APPROVED)


def _link_datasets(client: Any, v: source.Version, result: SuiteResult) -> None:
    """The run's Delta datasets as datasets of the logged model (MLflow 3 links a model to the
    datasets its metrics were computed on): the holdout's metric, and each training input's
    Delta version."""
    if not v.model_id:
        return
    for item in client.get_run(v.run_id).inputs.dataset_inputs:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        ds = item.dataset
        if context == "holdout" and result.scores.candidate is not None:
            key, value = f"guardrail_holdout_{result.scores.metric}", result.scores.candidate
        else:
            try:
                key, value = "guardrail_input_delta_version", float(ds.name.rsplit("@v", 1)[1].split()[0])
            except (IndexError, ValueError):  # a dataset not named <table>@v<N> by the training job
                continue
        client.log_metric(v.run_id, key, value, dataset_name=ds.name, dataset_digest=ds.digest, model_id=v.model_id)
