"""Helpers for tests of the release repository and of the devices that read it (a plain module,
not a conftest, so the edge agent's tests import it too).

* :func:`tiny_edge_build`: a real, tiny ONNX model (y = x·W + b) with a valid
  :class:`~fieldloop.registry.EdgeManifest` whose self-test outputs ONNX Runtime computed;
* :func:`register_version`: a registered MLflow version whose run holds ``edge/...`` and,
  when given, ``guardrail/attestation.dsse.json``, as training and the guardrails leave them;
* :func:`verdict` and :func:`attest_files`: a guardrail verdict and its DSSE attestation,
  signed with a test's :class:`~actuation.signing.KeyStore` guardrail key;
* :func:`served_release`: a repository under a private home served by the stack's nginx on
  a port of its own; :func:`device` makes the python-tuf ``Updater`` a device would use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from actuation.contract import (
    Budget,
    Campaign,
    Campaigns,
    Check,
    PolicyRef,
    Trigger,
    Verdict,
    load_fleets,
    policy_digest,
)
from actuation.release.publish import ATTESTATION_ARTIFACT, MODEL_FILE
from actuation.release.repository import Repository
from actuation.signing import GUARDRAIL, KeyStore, attest
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.registry import APPROVED, MANIFEST_FILE, EdgeBuild, EdgeManifest

INPUT_DIM = 4


def tiny_onnx(outputs: int = 1, seed: int = 0) -> bytes:
    """A real ONNX model, ``features`` [batch, 4] -> ``outputs`` [batch, outputs]: x·W + b."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(INPUT_DIM, outputs)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(outputs,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["outputs"])],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", INPUT_DIM])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_edge_build(task: str, model: str, output_names: list[str], seed: int = 0) -> dict[str, bytes]:
    """``edge/`` of a version: ``student.int8.onnx`` (the tiny model) and its ``manifest.json``."""
    import onnxruntime as ort

    onnx_bytes = tiny_onnx(len(output_names), seed)
    inputs = np.random.default_rng(seed + 1).normal(size=(3, INPUT_DIM)).astype(np.float32)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"features": inputs})[0]
    build = EdgeBuild(
        file=MODEL_FILE,
        bytes=len(onnx_bytes),
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        p50_us=10.0,
        p99_us=20.0,
        max_abs_diff=0.0,
        max_abs_diff_per_output=[0.0] * len(output_names),
        self_test_outputs=outputs.tolist(),
    )
    manifest = EdgeManifest(
        task=task,
        model=model,
        input_name="features",
        input_dim=INPUT_DIM,
        outputs=output_names,
        latency="test build",
        self_test_inputs=inputs.tolist(),
        self_test_tolerance=1e-3,
        builds={"int8": build},
    )
    return {MODEL_FILE: onnx_bytes, MANIFEST_FILE: manifest.to_json().encode()}


def subjects(edge: dict[str, bytes]) -> dict[str, str]:
    """What an attestation names: each file a device runs, by its artifact file name."""
    return {name: hashlib.sha256(edge[name]).hexdigest() for name in (MODEL_FILE, MANIFEST_FILE)}


def verdict(
    model: str,
    version: int,
    task: str,
    tenant: str | None,
    fleets: list[str],
    outcome: str = "pass",
    policy_sha256: str | None = None,
) -> Verdict:
    """A guardrail verdict as the guardrail suite writes it (one envelope check)."""
    value = 1.0 if outcome == "pass" else 9.0
    return Verdict(
        verdict=outcome,
        model=model,
        version=version,
        task=task,
        tenant=tenant,
        fleets=fleets,
        policy=PolicyRef(name=task, version=1, sha256=policy_sha256 or policy_digest(task)),
        checks=[Check.measure("envelope.max_abs_output", "envelope", value, "<=", 3.0, unit="m/s²")],
        mlflow_uri=f"models:/{model}/{version}",
        run_id="run",
        lineage={"fieldloop.lineage.inputs": "gold/test@1"},
        judged_at=datetime.now(UTC),
    )


def attest_files(keys: KeyStore, judged: Verdict, edge: dict[str, bytes], signer: Any = None) -> bytes:
    """The DSSE envelope the guardrails would log for ``edge``, signed by the guardrail key (or ``signer``)."""
    return attest(judged, subjects(edge), signer or keys.signer(GUARDRAIL))


def register_version(client: Any, model: str, files: dict[str, bytes], approve: bool = True) -> tuple[int, str]:
    """A new version of ``model`` whose run holds ``files`` (artifact path -> bytes); returns (version, run_id)."""
    import mlflow

    experiment = "fieldloop-release-tests"
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        for artifact, data in files.items():
            path = Path(tmp) / artifact
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for sub in {Path(a).parent.as_posix() for a in files}:
            client.log_artifacts(run.info.run_id, str(Path(tmp) / sub), sub)
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # registered by an earlier version
        client.create_registered_model(model)
    mv = client.create_model_version(model, f"{run.info.artifact_uri}/edge", run_id=run.info.run_id)
    if approve:
        client.set_registered_model_alias(model, APPROVED, mv.version)
    return int(mv.version), run.info.run_id


def approved_version(
    client: Any,
    keys: KeyStore,
    task: str = "vehicle-longitudinal",
    tenant: str | None = None,
    fleets: tuple[str, ...] = ("public-cars",),
    *,
    model: str | None = None,
    seed: int = 0,
    **judged: Any,
) -> tuple[str, int]:
    """A version that passes every publish check (``judged`` changes its verdict); returns (model, version).

    The attestation is made after registration, since the verdict names the version.
    """
    output = {"vehicle-longitudinal": "accel_mps2", "plant-anomaly": "anomaly_score"}[task]
    model = model or f"test.release.{task}.{uuid.uuid4().hex[:8]}"
    edge = tiny_edge_build(task, model, [output], seed)
    version, run_id = register_version(client, model, {f"edge/{n}": d for n, d in edge.items()})
    envelope = attest_files(keys, verdict(model, version, task, tenant, list(fleets), **judged), edge)
    log_bytes(client, run_id, ATTESTATION_ARTIFACT, envelope)
    return model, version


def log_bytes(client: Any, run_id: str, artifact: str, data: bytes) -> None:
    """Log (or overwrite) one artifact of a run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        path.write_bytes(data)
        client.log_artifact(run_id, str(path), Path(artifact).parent.as_posix())


@dataclass
class ServedRelease:
    """A repository under a private home, served by the stack's nginx on its own port."""

    cfg: FieldloopConfig
    repo: Repository
    keys: KeyStore

    @property
    def url(self) -> str:
        return self.cfg.release.base_url

    def device(self, device_dir: Path, bootstrap: bytes | None = None, **config: Any) -> Any:
        """The ``Updater`` a device provisioned with ``bootstrap`` (default: root v1) runs: one per update cycle."""
        from tuf.ngclient import Updater, UpdaterConfig

        (device_dir / "metadata").mkdir(parents=True, exist_ok=True)
        (device_dir / "targets").mkdir(parents=True, exist_ok=True)
        return Updater(
            str(device_dir / "metadata"),
            f"{self.url}/metadata/",
            str(device_dir / "targets"),
            f"{self.url}/targets/",
            config=UpdaterConfig(**config),
            bootstrap=bootstrap or self.repo.root_bytes(1),
        )


@contextmanager
def served_release(home: Path, cfg: FieldloopConfig, extra: dict[str, str] | None = None) -> Iterator[ServedRelease]:
    """``release init`` in a private home, and its nginx started (stopped on exit)."""
    from fieldloop.residency import ResidencyGuard
    from fieldloop.stack import Stack
    from tests.stacks import private_home_env

    private = load_config({**private_home_env(home, cfg), **(extra or {})})
    keys = KeyStore(private.home)
    repo = Repository(private.release_dir, keys, load_fleets(), ResidencyGuard.from_config(private).check)
    repo.init()
    stack = Stack(private, only=["release"])
    stack.up()
    try:
        yield ServedRelease(private, repo, keys)
    finally:
        stack.down()


def pointer_of(device: Any, fleet: str, device_dir: Path) -> dict[str, Any]:
    """What ``fleet`` runs, as a device reads it: the release pointer, downloaded and verified."""
    from actuation.contract import release_pointer_path

    info = device.get_targetinfo(release_pointer_path(fleet))
    assert info is not None, f"no release pointer for {fleet}"
    path = device.download_target(info, str(device_dir / f"{fleet}.release.json"))
    return json.loads(Path(path).read_bytes())


def publish_tiny(
    repo: Repository, fleet: str = "public-cars", version: int = 1, model: str = "fieldloop.vehicle-longitudinal"
) -> Any:
    """Publish a tiny version straight to the repository (no MLflow: for tests of what devices see)."""
    from actuation.contract import ATTESTATION_FILE
    from actuation.release.publish import Approved, publish

    the_fleet = load_fleets().get(fleet)
    edge = tiny_edge_build(the_fleet.task, model, ["accel_mps2"], seed=version)
    judged = verdict(model, version, the_fleet.task, the_fleet.tenant, [fleet])
    files = {**edge, ATTESTATION_FILE: attest_files(repo.keys, judged, edge)}
    return publish(repo, Approved(model, version, the_fleet, judged, "run", files))


def private_key_strings(keys: KeyStore) -> list[bytes]:
    """Every private key of the store (rotated ones too) as PEM lines, raw bytes, hex and base64:
    what a leak test looks for in outputs, logs and files."""
    import base64

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    found = []
    for pem in keys.dir.glob("*.pem"):
        text = pem.read_bytes()
        found += [line for line in text.splitlines() if line and not line.startswith(b"-----")]
        raw = load_pem_private_key(text, None).private_bytes_raw()
        found += [raw, raw.hex().encode(), base64.b64encode(raw).rstrip(b"=")]
    return found


def approved_tiny(
    repo: Repository, fleet: str = "public-cars", version: int = 2, model: str = "fieldloop.vehicle-longitudinal"
) -> Any:
    """A tiny version as :func:`actuation.release.publish.check` returns it, not published (for a rollout)."""
    from actuation.contract import ATTESTATION_FILE
    from actuation.release.publish import Approved

    the_fleet = load_fleets().get(fleet)
    edge = tiny_edge_build(the_fleet.task, model, ["accel_mps2"], seed=version)
    judged = verdict(model, version, the_fleet.task, the_fleet.tenant, [fleet])
    files = {**edge, ATTESTATION_FILE: attest_files(repo.keys, judged, edge)}
    return Approved(model, version, the_fleet, judged, "run", files)


T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # when a repository built by a unit test starts


class Clock:
    """A clock a test moves by hand (``clock.now = T0 + timedelta(days=5)``)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def running_campaign(fleet: str, campaign_id: str, window_before: int, window_after: int) -> Campaigns:
    """A fleet's signed-campaigns document with one campaign that fires on every frame, 3 windows an
    hour, running from a minute ago for an hour."""
    now = datetime.now(UTC)
    campaign = Campaign(
        id=campaign_id,
        fleet=fleet,
        trigger=Trigger.parse("speed_mps>=0"),
        budget=Budget(max_per_hour=3, max_bytes_per_day=1_000_000),
        window_before=window_before,
        window_after=window_after,
        created_at=now - timedelta(minutes=1),
        expires_at=now + timedelta(hours=1),
    )
    return Campaigns(fleet=fleet, issued_at=now, campaigns=[campaign])
