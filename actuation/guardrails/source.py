"""What a guardrail run reads: the version from the registry, its edge files, its frozen holdout
from the lake, the champion's file, and the governance facts.

Everything is read through the kernel (:mod:`fieldloop.registry` names, :mod:`fieldloop.lineage`
tags, :mod:`fieldloop.catalog` for Delta at the pinned versions, :mod:`fieldloop.classes` for
the training rule), never through the training stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actuation.contract import EDGE_VARIANT, Fleet, load_fleets
from actuation.errors import GuardrailError
from actuation.guardrails.checks.governance import Facts, missing_lineage
from fieldloop.datasets import layout
from fieldloop.registry import (
    CANDIDATE,
    CHAMPION,
    EDGE_ARTIFACT_DIR,
    LINEAGE_TAG_PREFIX,
    MANIFEST_FILE,
    TASK_TAG,
    TENANT_TAG,
    EdgeManifest,
)

if TYPE_CHECKING:
    from fieldloop.config import FieldloopConfig


@dataclass(frozen=True)
class Version:
    """One registered model version and what the registry says of it."""

    model: str
    version: int
    run_id: str
    model_id: str | None
    task: str
    tenant: str | None
    lineage: dict[str, str]  # the fieldloop.lineage.* tags, prefix kept
    artifact_uri: str

    @property
    def lineage_fields(self) -> dict[str, str]:
        return {k.removeprefix(LINEAGE_TAG_PREFIX): v for k, v in self.lineage.items()}


@dataclass(frozen=True)
class EdgeFiles:
    """The version's edge build as downloaded: the file a device runs and its manifest."""

    manifest: EdgeManifest
    model_file: Path
    manifest_file: Path

    def subjects(self) -> dict[str, str]:
        """The attestation's subjects: file name under edge/ -> sha256 (what the device checks)."""
        return {self.model_file.name: _sha256(self.model_file), self.manifest_file.name: _sha256(self.manifest_file)}


@dataclass(frozen=True)
class Holdout:
    x: np.ndarray
    y: np.ndarray
    devices: np.ndarray
    tables: dict[str, int]  # path -> Delta version


@dataclass(frozen=True)
class HardCases:
    """The hard cases of held-out devices a version's lineage names, and which model met each."""

    x: np.ndarray
    y: np.ndarray
    devices: np.ndarray
    met: np.ndarray  # per row: "<model name> v<version>" of the model the device ran when it met it
    tables: dict[str, int]  # path -> Delta version

    def met_most(self) -> tuple[str, int]:
        """The model (name, version) that met the most of them: the one the candidate must beat."""
        names, counts = np.unique(self.met, return_counts=True)
        name, version = str(names[int(np.argmax(counts))]).rsplit(" v", 1)
        return name, int(version)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_server(uri: str) -> None:
    """Fail fast, in seconds, when the tracking server does not answer (MLflow's client would retry for minutes).

    Raises:
        GuardrailError: an http(s) tracking server whose ``/health`` does not answer 200.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        ok = requests.get(f"{uri.rstrip('/')}/health", timeout=5).status_code == 200
    except requests.RequestException:
        ok = False
    if not ok:
        raise GuardrailError(
            f"the MLflow server at {uri} does not answer; start it with `fieldloop stack up` "
            "(or point MLFLOW_TRACKING_URI / FIELDLOOP_MLFLOW_PORT at the one that holds the model)"
        )


def resolve(client: Any, model: str, version: int | None) -> Version:
    """The version asked for, or the one ``candidate`` points at.

    Raises:
        GuardrailError: no such model or version, or no candidate.
    """
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)
        if version is None:
            mv = client.get_model_version_by_alias(model, CANDIDATE)
        else:
            mv = client.get_model_version(model, str(version))
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(e).lower():
            raise GuardrailError(f"the registry could not be read for {model}: {e}; check the MLflow server") from e
        which = f"no version {version}" if version else f"no version under the @{CANDIDATE} alias"
        raise GuardrailError(
            f"{model} has {which} in the registry; train one with `fieldloop train`, "
            "or name an existing version with --version"
        ) from e
    tags = dict(mv.tags)
    lineage = {k: v for k, v in tags.items() if k.startswith(LINEAGE_TAG_PREFIX)}
    task = registered.tags.get(TASK_TAG) or lineage.get(LINEAGE_TAG_PREFIX + "task")
    if not task:
        raise GuardrailError(
            f"{model} v{mv.version} names no task (tag {TASK_TAG}); it was not registered by fieldloop"
        )
    tenant = registered.tags.get(TENANT_TAG) or lineage.get(LINEAGE_TAG_PREFIX + "tenant") or None
    run = client.get_run(mv.run_id)
    return Version(model, int(mv.version), mv.run_id, logged_model_id(mv), task, tenant, lineage, run.info.artifact_uri)


def logged_model_id(mv: Any) -> str | None:
    """The MLflow 3 LoggedModel behind a version: its ``model_id``, or the id in a ``models:/m-...`` source
    (the server leaves ``model_id`` empty on versions registered by URI)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = mv.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def champion_version(client: Any, model: str, judged: int) -> int | None:
    """The version ``champion`` points at, unless it is the one judged (or there is none)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model, CHAMPION)
    except MlflowException:
        return None
    return None if int(mv.version) == judged else int(mv.version)


def target_fleets(task: str, tenant: str | None, names: list[str] | None) -> list[Fleet]:
    """The fleets asked for, or every fleet of the task that may run the model.

    Raises:
        GuardrailError: an unknown fleet name, or no fleet at all to judge for.
    """
    fleets = load_fleets()
    if names:
        try:
            return [fleets.get(n) for n in names]
        except KeyError as e:
            raise GuardrailError(str(e.args[0])) from e
    chosen = [f for f in fleets.fleet if f.task == task and f.may_run(tenant)]
    if not chosen:
        raise GuardrailError(
            f"no fleet in actuation/fleets.toml runs {task} for {tenant or 'a base model'}; add one, or name fleets"
        )
    return chosen


def download_edge(client: Any, run_id: str, dest: Path) -> EdgeFiles:
    """The version's ``edge/`` files, checked against their manifest.

    Raises:
        GuardrailError: the manifest or the int8 file is missing, or a file is not the one the manifest names.
    """
    from pydantic import ValidationError

    try:
        local = Path(client.download_artifacts(run_id, EDGE_ARTIFACT_DIR, str(dest)))
        manifest = EdgeManifest.from_json((local / MANIFEST_FILE).read_text())
    except (OSError, ValidationError, Exception) as e:  # MlflowException for a missing artifact
        raise GuardrailError(
            f"run {run_id} has no readable {EDGE_ARTIFACT_DIR}/{MANIFEST_FILE} ({e}); "
            "re-register the version with `fieldloop train`"
        ) from e
    build = manifest.builds.get(EDGE_VARIANT)
    if build is None:
        raise GuardrailError(f"run {run_id}'s manifest has no {EDGE_VARIANT} build; re-register with `fieldloop train`")
    path = local / build.file
    if not path.exists() or _sha256(path) != build.sha256:
        raise GuardrailError(
            f"{EDGE_ARTIFACT_DIR}/{build.file} of run {run_id} is missing or not the file its manifest names "
            f"(sha256 {build.sha256[:12]}); the artifacts were changed after registration: re-register the version"
        )
    return EdgeFiles(manifest, path, local / MANIFEST_FILE)


def read_holdout(cfg: FieldloopConfig, version: Version) -> Holdout:
    """The frozen holdout recorded in the version's lineage: its tables at their Delta versions,
    the held-out devices only (the task's cut over a salted hash of the device).

    Raises:
        GuardrailError: the lineage records no holdout, or a table can no longer be read.
    """
    from fieldloop.catalog import open_table

    raw = version.lineage_fields.get("holdout")
    if not raw:
        raise GuardrailError(
            f"{version.model} v{version.version} records no frozen holdout (lineage tag holdout); it cannot be "
            "judged against earlier versions: re-register it with `fieldloop train`"
        )
    spec = json.loads(raw)
    rows = layout(version.task)
    columns = list(dict.fromkeys([*rows.order_columns, rows.device_column, "features", rows.label_column]))
    xs, ys, ds = [], [], []
    tables = {path: int(v) for path, v in spec["tables"].items()}
    for path, delta_version in sorted(tables.items()):
        try:
            data = open_table(cfg, path, delta_version).to_pyarrow_dataset().to_table(columns=columns)
        except Exception as e:  # deltalake raises its own kinds for a vacuumed version or a moved table
            raise GuardrailError(
                f"the holdout table {path}@v{delta_version} cannot be read ({e}); restore it, or retrain with "
                "--reset-holdout"
            ) from e
        data = data.sort_by([(c, "ascending") for c in rows.order_columns])
        devices = np.array(data.column(rows.device_column).to_pylist(), dtype=object)
        held = _in_holdout(devices, spec["salt"], int(spec["cut"]))
        x = np.array(data.column("features").to_pylist(), dtype=np.float32)
        y = np.array(data.column(rows.label_column).to_pylist(), dtype=np.float32)
        xs.append(x[held]), ys.append(y[held]), ds.append(devices[held])
    if not xs or sum(len(y) for y in ys) == 0:
        raise GuardrailError(f"{version.model} v{version.version}'s frozen holdout holds no rows; retrain it")
    return Holdout(np.concatenate(xs), np.concatenate(ys), np.concatenate(ds), tables)


def read_hard_cases(cfg: FieldloopConfig, version: Version) -> HardCases | None:
    """The second holdout of a version that learned from hard cases (None for one that did not):
    the hard-case tables at the versions its lineage names, the rows of devices held out by the
    frozen cut or by the hard-case split the lineage records (rows the version never trained on).

    Raises:
        GuardrailError: the lineage's hard-case record is malformed, or a table cannot be read.
    """
    from fieldloop.catalog import open_table
    from fieldloop.lineage import LineageError, ModelLineage

    raw = version.lineage_fields.get("hard_cases")
    if not raw:
        return None
    try:
        spec, cut = json.loads(raw), json.loads(version.lineage_fields["holdout"])
        paths = {f"{i.table}@v{i.delta_version}": i.path for i in ModelLineage.from_mlflow_tags(version.lineage).inputs}
        tables = {paths[name]: int(name.rsplit("@v", 1)[1]) for name in spec["tables"]}
        split = int(float(spec["holdout_fraction"]) * 2**64)
    except (KeyError, ValueError, TypeError, LineageError) as e:
        raise GuardrailError(
            f"{version.model} v{version.version}'s hard-case lineage cannot be read ({e}); re-register it with "
            "`fieldloop train`"
        ) from e
    rows = layout(version.task)
    columns = list(
        dict.fromkeys([*rows.order_columns, rows.device_column, "features", rows.label_column, "model_name"])
    )
    xs, ys, ds, ms = [], [], [], []
    for path, delta_version in sorted(tables.items()):
        try:
            data = (
                open_table(cfg, path, delta_version).to_pyarrow_dataset().to_table(columns=[*columns, "model_version"])
            )
        except Exception as e:  # deltalake raises its own kinds for a vacuumed version or a moved table
            raise GuardrailError(f"the hard-case table {path}@v{delta_version} cannot be read ({e})") from e
        data = data.sort_by([(c, "ascending") for c in rows.order_columns])
        devices = np.array(data.column(rows.device_column).to_pylist(), dtype=object)
        held = _in_holdout(devices, spec["holdout_salt"], split) | _in_holdout(devices, cut["salt"], int(cut["cut"]))
        names, versions = data.column("model_name").to_pylist(), data.column("model_version").to_pylist()
        met = np.array([f"{n} v{v}" for n, v in zip(names, versions, strict=True)], dtype=object)
        xs.append(np.array(data.column("features").to_pylist(), dtype=np.float32).reshape(len(devices), -1)[held])
        ys.append(np.array(data.column(rows.label_column).to_pylist(), dtype=np.float32)[held])
        ds.append(devices[held]), ms.append(met[held])
    if sum(len(y) for y in ys) == 0:
        return None  # every device that met one trained on it: nothing to judge on
    return HardCases(np.concatenate(xs), np.concatenate(ys), np.concatenate(ds), np.concatenate(ms), tables)


def _in_holdout(devices: np.ndarray, salt: str, cut: int) -> np.ndarray:
    # The same salted 64-bit hash the training job froze the holdout with (training_jobs.holdout);
    # the device is on the held-out side when its hash is at most the cut.
    def h(device: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{salt}\x1f{device}".encode()).digest()[:8], "big")

    member = {d: h(str(d)) <= cut for d in set(devices.tolist())}
    return np.fromiter((member[d] for d in devices.tolist()), bool, len(devices))


def governance_facts(cfg: FieldloopConfig, version: Version) -> Facts:
    """Lineage completeness, the training rule with the contracts as they are now, and residency."""
    from fieldloop.classes import ModelTarget, training_violations
    from fieldloop.contracts import load_contracts
    from fieldloop.errors import ResidencyError
    from fieldloop.lineage import LineageError, ModelLineage
    from fieldloop.residency import ResidencyGuard

    missing = missing_lineage(version.lineage_fields)
    violations: list[str] = []
    try:
        recorded = ModelLineage.from_mlflow_tags(version.lineage)
        contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
        inputs = [
            i.training_input(
                frozenset(contracts[i.contract_id].allowed_uses) if i.contract_id in contracts else frozenset()
            )
            for i in recorded.inputs
        ]
        violations = [str(v) for v in training_violations(inputs, ModelTarget(version.task, version.tenant))]
    except LineageError as e:
        violations = [str(e)]
    location = version.artifact_uri
    if location.startswith("mlflow-artifacts:"):  # served by the tracking server: its store is the location
        location = cfg.mlflow_artifact_root or location
    problem = None
    if location.startswith("mlflow-artifacts:"):
        problem = (
            f"the MLflow server at {cfg.mlflow.uri} stores artifacts where this run cannot see, so their residency "
            "cannot be checked; set FIELDLOOP_MLFLOW_ARTIFACT_ROOT to that server's artifact store"
        )
    else:
        try:
            ResidencyGuard.from_config(cfg).check(location)
        except ResidencyError as e:
            problem = str(e)
    return Facts(missing, violations, problem, location)
