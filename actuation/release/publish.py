"""Publish a model version to a fleet: every check first, then one commit to the repository.

:func:`check` reads the version from MLflow and refuses it unless all of these hold, in
this order (the alias alone proves nothing: anyone who can reach MLflow can set it):

1. the fleet exists and the version holds the ``approved`` alias;
2. the run's ``edge/student.int8.onnx``, ``edge/manifest.json`` and
   ``guardrail/attestation.dsse.json`` are there, and the manifest names the ONNX file's digest;
3. the attestation verifies with the guardrail key the repository trusts, about exactly
   these two files, with a ``pass`` verdict;
4. the verdict is about this model and version, judged under the task's policy file as it
   is now, for this fleet; the fleet runs the manifest's task, and the model's tenant may
   run there (a base model anywhere, a tenant's model on that tenant's fleets only).

:func:`publish` then adds the three files and the fleet's new release pointer to the
fleet's role (:meth:`actuation.release.repository.Repository.publish`). Nothing is written
before every check passed.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actuation.attestation import verify_pass
from actuation.contract import (
    ATTESTATION_FILE,
    EDGE_VARIANT,
    MANIFEST_FILE,
    Fleet,
    Release,
    ReleaseFile,
    ReleasePointer,
    Verdict,
    load_runtime_limits,
    model_target_path,
    policy_digest,
    policy_path,
)
from actuation.errors import AttestationError, ReleaseError
from actuation.release.repository import Repository
from actuation.signing import GUARDRAIL
from fieldloop.registry import APPROVED, EDGE_ARTIFACT_DIR, EdgeManifest

logger = logging.getLogger(__name__)

MODEL_FILE = "student.int8.onnx"
ATTESTATION_ARTIFACT = f"guardrail/{ATTESTATION_FILE}"  # under the version's run, written by the guardrails


@dataclass(frozen=True)
class Approved:
    """A model version that passed every check, with the bytes that will be published."""

    model: str
    version: int
    fleet: Fleet
    verdict: Verdict
    run_id: str
    files: dict[str, bytes]  # MODEL_FILE, MANIFEST_FILE, ATTESTATION_FILE -> content

    @property
    def mlflow_uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did."""

    model: str
    version: int
    fleet: str
    changed: bool  # False: the fleet already ran this version, nothing was written
    pointer: ReleasePointer
    written: list[str]
    campaign: str | None = None  # the fleet's policy campaign this release asked for (signed or running)


def _guardrail(model: str, version: int) -> str:
    return f"run `fieldloop guardrail --model {model} --version {version}` first"


def check(client: Any, repo: Repository, model: str, version: int, fleet: Fleet) -> Approved:
    """Every check a version passes before it is published to ``fleet``; see the module docstring.

    Args:
        client: an ``mlflow.MlflowClient`` for the tracking server.

    Raises:
        ReleaseError: a check failed; the message says which and what to do.
    """
    run_id = _approved_run(client, model, version)
    files = _download(client, run_id, model, version)
    manifest = _manifest(files, model, version)
    verdict = _attested(repo, files, model, version)
    _matches(verdict, manifest, model, version, fleet)
    return Approved(model, version, fleet, verdict, run_id, files)


def _approved_run(client: Any, model: str, version: int) -> str:
    from mlflow.exceptions import MlflowException

    try:
        approved = client.get_model_version_by_alias(model, APPROVED)
    except MlflowException as e:
        raise ReleaseError(
            f"{model} has no version with the @{APPROVED} alias (or no such model): {_guardrail(model, version)}"
        ) from e
    if int(approved.version) != version:
        raise ReleaseError(
            f"{model} version {version} is not approved: @{APPROVED} is version {approved.version}; "
            f"publish that one, or {_guardrail(model, version)}"
        )
    return approved.run_id


def _download(client: Any, run_id: str, model: str, version: int) -> dict[str, bytes]:
    from mlflow.exceptions import MlflowException

    wanted = {
        MODEL_FILE: f"{EDGE_ARTIFACT_DIR}/{MODEL_FILE}",
        MANIFEST_FILE: f"{EDGE_ARTIFACT_DIR}/{MANIFEST_FILE}",
        ATTESTATION_FILE: ATTESTATION_ARTIFACT,
    }
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, artifact in wanted.items():
            try:
                local = client.download_artifacts(run_id, artifact, tmp)
                files[name] = Path(local).read_bytes()
            except (MlflowException, OSError) as e:
                what = (
                    f"no guardrail attestation ({artifact}): {_guardrail(model, version)}"
                    if name == ATTESTATION_FILE
                    else f"its run {run_id} has no {artifact}: register it with `fieldloop train` (the edge build)"
                )
                raise ReleaseError(f"{model} version {version} cannot be published: {what}") from e
    return files


def _manifest(files: dict[str, bytes], model: str, version: int) -> EdgeManifest:
    try:
        manifest = EdgeManifest.from_json(files[MANIFEST_FILE].decode())
    except ValueError as e:
        raise ReleaseError(f"{model} version {version}: edge/{MANIFEST_FILE} is not a valid manifest ({e})") from e
    build = manifest.builds.get(EDGE_VARIANT)
    digest = hashlib.sha256(files[MODEL_FILE]).hexdigest()
    if build is None or build.file != MODEL_FILE or build.sha256 != digest:
        raise ReleaseError(
            f"{model} version {version}: edge/{MODEL_FILE} (sha256 {digest[:12]}) is not the file its manifest "
            f"describes ({build.sha256[:12] if build else 'no int8 build'}); the artifact was changed after "
            "training: train and judge a new version"
        )
    return manifest


def _attested(repo: Repository, files: dict[str, bytes], model: str, version: int) -> Verdict:
    from securesystemslib.signer import SSlibKey

    subjects = {name: hashlib.sha256(files[name]).hexdigest() for name in (MODEL_FILE, MANIFEST_FILE)}
    # The keys devices verify with are the ones the repository signs, so publish checks with
    # exactly those: an attestation a device would refuse is refused here first.
    trusted = repo.guardrail_keys()
    current = repo.keys.entry(GUARDRAIL).keyid
    keys = [SSlibKey.from_dict(keyid, dict(key)) for keyid, key in trusted.items()]
    try:
        return verify_pass(files[ATTESTATION_FILE], keys, subjects)
    except AttestationError as e:
        hint = (
            f"the guardrail key was replaced (now {current[:12]}) but the repository still signs "
            f"{', '.join(k[:12] for k in trusted)}: run `fieldloop release init` to publish the current key, then "
            if current not in trusted
            else ""
        )
        raise ReleaseError(
            f"{model} version {version}: its guardrail attestation does not hold: {e}. "
            f"Nothing was published; {hint}{_guardrail(model, version)} on the files as they are now"
        ) from e


def _matches(verdict: Verdict, manifest: EdgeManifest, model: str, version: int, fleet: Fleet) -> None:
    if (verdict.model, verdict.version) != (model, version):
        raise ReleaseError(
            f"the attestation of {model} version {version} judged {verdict.model} version {verdict.version}; "
            f"{_guardrail(model, version)}"
        )
    current = policy_digest(verdict.task) if policy_path(verdict.task).exists() else None
    if verdict.policy.sha256 != current:
        raise ReleaseError(
            f"{model} version {version} was judged under policy {verdict.policy.name} v{verdict.policy.version} "
            f"(sha256 {verdict.policy.sha256[:12]}), which has changed since (now {str(current)[:12]}); "
            f"{_guardrail(model, version)} again under the current policy"
        )
    if fleet.name not in verdict.fleets:
        raise ReleaseError(
            f"{model} version {version} was not judged for fleet {fleet.name} (judged for: "
            f"{', '.join(verdict.fleets) or 'none'}); have the guardrails judge it for {fleet.name} "
            f"(`fieldloop guardrail --model {model} --version {version}`) first"
        )
    if fleet.task != manifest.task or verdict.task != manifest.task:
        raise ReleaseError(
            f"fleet {fleet.name} runs task {fleet.task}, {model} version {version} is a {manifest.task} model; "
            "publish it to a fleet of its task"
        )
    if not fleet.may_run(verdict.tenant):
        raise ReleaseError(
            f"{model} version {version} is {verdict.tenant}'s model; fleet {fleet.name} belongs to "
            f"{fleet.tenant or 'no tenant (base models only)'}: a tenant's model goes to that tenant's fleets only"
        )


def release_of(approved: Approved) -> Release:
    """The :class:`Release` a fleet's pointer names: each file with its path, digest and size."""

    def file(name: str) -> ReleaseFile:
        data = approved.files[name]
        path = model_target_path(approved.fleet.name, approved.model, approved.version, name)
        return ReleaseFile(path=path, sha256=hashlib.sha256(data).hexdigest(), length=len(data))

    return Release(
        model=approved.model,
        version=approved.version,
        task=approved.verdict.task,
        tenant=approved.verdict.tenant,
        model_file=file(MODEL_FILE),
        manifest=file(MANIFEST_FILE),
        attestation=file(ATTESTATION_FILE),
        limits=load_runtime_limits(approved.verdict.task),
    )


def publish(repo: Repository, approved: Approved, now: datetime | None = None) -> Published:
    """Add ``approved``'s files and a new release pointer to its fleet's role (a no-op if it runs it
    already). The fleet is first asked for the hard cases its rollout policy names (a bad
    campaign refuses the release before anything is published)."""
    from actuation.campaigns.book import ask_for_hard_cases

    fleet = approved.fleet
    pointer = ReleasePointer(
        fleet=fleet.name, tenant=fleet.tenant, issued_at=now or datetime.now(UTC), active=release_of(approved)
    )
    custom = {
        "mlflow_uri": approved.mlflow_uri,
        "verdict": approved.verdict.verdict,
        "model": approved.model,
        "version": approved.version,
        "tenant": approved.verdict.tenant,
    }
    files = {
        model_target_path(fleet.name, approved.model, approved.version, name): data
        for name, data in approved.files.items()
    }
    running = repo.pointer(fleet.name)
    campaign = None if running and running.routes_like(pointer) else ask_for_hard_cases(repo, fleet.name)
    asked = campaign.campaign.id if campaign else None
    written = repo.publish(fleet.name, files, custom, pointer)
    if written is None:
        current = repo.pointer(fleet.name)
        return Published(approved.model, approved.version, fleet.name, False, current or pointer, [], asked)
    return Published(approved.model, approved.version, fleet.name, True, pointer, [str(p) for p in written], asked)


def first_champion(client: Any, model: str, version: int, fleet: str) -> None:
    """A fleet's first release is what it runs: the model's ``champion``, when it has none yet
    (later champions are made by rollouts, :mod:`actuation.rollout`)."""
    from mlflow.exceptions import MlflowException

    from fieldloop.registry import CHAMPION

    try:
        client.get_model_version_by_alias(model, CHAMPION)
    except MlflowException:
        client.set_registered_model_alias(model, CHAMPION, str(version))
        client.set_model_version_tag(model, str(version), "fieldloop.rollout.champion", f"{fleet} first release")
