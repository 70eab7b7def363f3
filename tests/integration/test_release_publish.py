"""`release publish` against the real MLflow server: what it takes to publish, and every refusal.

Versions are made by tests.release_fixtures (a tiny real ONNX model, its manifest, and an
attestation signed with this test's guardrail key): the guardrail suite's own interface,
without training. Each refusal must name what was wrong and what to do, and write nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from actuation.contract import load_fleets
from actuation.errors import ReleaseError
from actuation.release.publish import ATTESTATION_ARTIFACT, check, publish
from actuation.release.repository import Repository
from actuation.signing import GUARDRAIL, KeyStore
from fieldloop.registry import APPROVED, EdgeManifest
from tests.release_fixtures import (
    approved_version,
    attest_files,
    log_bytes,
    register_version,
    tiny_edge_build,
    verdict,
)


@pytest.fixture()
def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(mlflow_uri)


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    repo = Repository(tmp_path / "release", KeyStore(tmp_path / "home"), load_fleets())
    repo.init()
    return repo


def _publish(client: MlflowClient, repo: Repository, model: str, version: int, fleet: str):
    return publish(repo, check(client, repo, model, version, load_fleets().get(fleet)))


def _refused(client: MlflowClient, repo: Repository, model: str, version: int, fleet: str, *needles: str) -> str:
    before = sorted(p.name for p in repo.dir.rglob("*"))
    with pytest.raises(ReleaseError) as excinfo:
        _publish(client, repo, model, version, fleet)
    message = str(excinfo.value)
    for needle in needles:
        assert needle in message, message
    assert sorted(p.name for p in repo.dir.rglob("*")) == before  # nothing written
    return message


def test_an_approved_attested_version_is_published_once(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys, fleets=("public-cars", "acme-vans"))
    done = _publish(client, repo, model, version, "public-cars")
    assert done.changed
    pointer = repo.pointer("public-cars")
    assert (pointer.active.model, pointer.active.version, pointer.tenant) == (model, version, None)
    assert pointer.active.limits.outputs[0].name == "accel_mps2"
    md = repo.targets("fleet-public-cars").signed
    assert md.targets[pointer.active.model_file.path].custom == {
        "mlflow_uri": f"models:/{model}/{version}",
        "verdict": "pass",
        "model": model,
        "version": version,
        "tenant": None,
    }
    again = _publish(client, repo, model, version, "public-cars")
    assert not again.changed and again.written == []
    # a base model runs on a tenant's fleet too
    assert _publish(client, repo, model, version, "acme-vans").changed


def test_a_hand_set_alias_without_an_attestation_is_refused(client: MlflowClient, repo: Repository) -> None:
    model = "test.release.no-attestation"
    edge = tiny_edge_build("vehicle-longitudinal", model, ["accel_mps2"])
    version, _ = register_version(client, model, {f"edge/{n}": d for n, d in edge.items()})
    _refused(
        client, repo, model, version, "public-cars", "no guardrail attestation", f"fieldloop guardrail --model {model}"
    )


def test_a_version_without_the_approved_alias_is_refused(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys)
    client.delete_registered_model_alias(model, APPROVED)
    _refused(client, repo, model, version, "public-cars", f"no version with the @{APPROVED} alias")


def test_a_failing_verdict_is_refused(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys, outcome="fail")
    _refused(client, repo, model, version, "public-cars", "guardrails failed", "envelope.max_abs_output = 9.0")


def test_an_artifact_swapped_after_judging_is_refused(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys)
    run_id = client.get_model_version(model, str(version)).run_id
    # another model, with a manifest that matches it: only the attestation can tell
    other = tiny_edge_build("vehicle-longitudinal", model, ["accel_mps2"], seed=99)
    log_bytes(client, run_id, "edge/student.int8.onnx", other["student.int8.onnx"])
    log_bytes(client, run_id, "edge/manifest.json", other["manifest.json"])
    _refused(client, repo, model, version, "public-cars", "about other files", "fieldloop guardrail")


def test_a_model_file_its_manifest_does_not_describe_is_refused(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys)
    run_id = client.get_model_version(model, str(version)).run_id
    log_bytes(client, run_id, "edge/student.int8.onnx", b"not the judged model")
    _refused(client, repo, model, version, "public-cars", "is not the file its manifest describes")


def test_an_attestation_signed_by_an_unknown_key_is_refused(
    client: MlflowClient, repo: Repository, tmp_path: Path
) -> None:
    model, version = approved_version(client, repo.keys)
    run_id = client.get_model_version(model, str(version)).run_id
    stranger = KeyStore(tmp_path / "stranger")
    stranger.generate(GUARDRAIL)
    edge = {n: _artifact(client, run_id, f"edge/{n}") for n in ("student.int8.onnx", "manifest.json")}
    judged = verdict(model, version, "vehicle-longitudinal", None, ["public-cars"])
    log_bytes(client, run_id, ATTESTATION_ARTIFACT, attest_files(stranger, judged, edge, stranger.signer(GUARDRAIL)))
    _refused(client, repo, model, version, "public-cars", "does not verify with a trusted guardrail key")


def test_a_verdict_under_a_stale_policy_is_refused(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys, policy_sha256="0" * 64)
    _refused(client, repo, model, version, "public-cars", "has changed since", "under the current policy")


def test_a_tenants_model_is_refused_on_a_fleet_that_is_not_the_tenants(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys, tenant="acme-mobility", fleets=("public-cars", "acme-vans"))
    _refused(client, repo, model, version, "public-cars", "acme-mobility's model", "that tenant's fleets only")
    assert _publish(client, repo, model, version, "acme-vans").changed


def test_a_fleet_it_was_not_judged_for_is_refused(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys, fleets=("public-cars",))
    _refused(client, repo, model, version, "acme-vans", "not judged for fleet acme-vans")


def test_a_model_of_another_task_is_refused(client: MlflowClient, repo: Repository) -> None:
    model, version = approved_version(client, repo.keys, tenant="acme-steel", fleets=("acme-plant",))
    manifest = EdgeManifest.from_json(_artifact(client, _run(client, model, version), "edge/manifest.json").decode())
    assert manifest.task == "vehicle-longitudinal"
    _refused(client, repo, model, version, "acme-plant", "runs task plant-anomaly")


def _run(client: MlflowClient, model: str, version: int) -> str:
    return client.get_model_version(model, str(version)).run_id


def _artifact(client: MlflowClient, run_id: str, path: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def test_the_attestation_names_the_files_by_digest(client: MlflowClient, repo: Repository) -> None:
    """The fixture makes what the guardrails make: subjects are the artifact file names."""
    model, version = approved_version(client, repo.keys)
    run_id = _run(client, model, version)
    envelope = json.loads(_artifact(client, run_id, ATTESTATION_ARTIFACT))
    import base64

    statement = json.loads(base64.b64decode(envelope["payload"]))
    onnx = _artifact(client, run_id, "edge/student.int8.onnx")
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}["student.int8.onnx"] == (
        hashlib.sha256(onnx).hexdigest()
    )


def test_a_replaced_guardrail_key_is_trusted_only_once_the_repository_signs_it(
    client: MlflowClient, repo: Repository
) -> None:
    repo.keys.generate(GUARDRAIL, replace=True)  # the guardrails rotated their key
    model, version = approved_version(client, repo.keys)  # and signed with the new one
    _refused(client, repo, model, version, "public-cars", "run `fieldloop release init` to publish the current key")
    assert "signed the current guardrail key" in " ".join(repo.init())
    assert _publish(client, repo, model, version, "public-cars").changed
