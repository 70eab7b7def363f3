"""Signing keys and guardrail attestations: what verifies, and every way one must not."""

from __future__ import annotations

import json
import os
import stat
from base64 import b64decode, b64encode
from datetime import UTC, datetime

import pytest

from actuation.attestation import read_statement, verify, verify_pass
from actuation.contract import (
    Check,
    Fleet,
    PolicyRef,
    Verdict,
    load_fleets,
    model_target_path,
    release_pointer_path,
)
from actuation.errors import AttestationError, SigningKeyError
from actuation.signing import GUARDRAIL, KeyStore, attest

FILES = {
    "fieldloop.vehicle-longitudinal@3.int8.onnx": "ab" * 32,
    "fieldloop.vehicle-longitudinal@3.manifest.json": "cd" * 32,
}


def verdict(outcome: str = "pass", value: float = 1.5) -> Verdict:
    return Verdict(
        verdict=outcome,
        model="fieldloop.vehicle-longitudinal",
        version=3,
        task="vehicle-longitudinal",
        tenant=None,
        fleets=["public-cars"],
        policy=PolicyRef(name="vehicle-longitudinal", version=1, sha256="0" * 64),
        checks=[Check.measure("envelope.max_abs_output", "envelope", value, "<=", 3.0, unit="m/s²")],
        mlflow_uri="models:/fieldloop.vehicle-longitudinal/3",
        run_id="run",
        lineage={"fieldloop.lineage.inputs": "gold/vehicle_training@4"},
        judged_at=datetime(2026, 12, 7, tzinfo=UTC),
    )


@pytest.fixture
def keys(tmp_path):
    store = KeyStore(tmp_path)
    store.generate(GUARDRAIL)
    return store


def test_a_passing_attestation_verifies_and_returns_its_verdict(keys):
    envelope = attest(verdict(), FILES, keys.signer(GUARDRAIL))
    got = verify_pass(envelope, [keys.public_key(GUARDRAIL)], FILES)
    assert got == verdict()
    _, statement = read_statement(envelope)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert {s["name"] for s in statement["subject"]} == set(FILES)


def test_a_key_file_is_private_and_no_key_material_reaches_the_index(keys):
    pem = keys.dir / "guardrail.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.dir.stat().st_mode) == 0o700
    body = pem.read_text().splitlines()[1]
    assert body not in (keys.dir / "keys.json").read_text()


def test_a_key_readable_by_others_is_refused(keys):
    os.chmod(keys.dir / "guardrail.pem", 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        keys.signer(GUARDRAIL)


def test_a_missing_role_says_how_to_create_it(tmp_path):
    with pytest.raises(SigningKeyError, match="release init"):
        KeyStore(tmp_path).signer("timestamp")


def test_generate_is_idempotent_and_replace_keeps_the_old_file(keys):
    first = keys.entry(GUARDRAIL)
    assert keys.generate(GUARDRAIL) == first
    second = keys.generate(GUARDRAIL, replace=True)
    assert second.keyid != first.keyid
    assert (keys.dir / f"guardrail.{first.keyid[:12]}.old.pem").exists()


def test_an_unknown_key_is_refused(keys, tmp_path):
    other = KeyStore(tmp_path / "other")
    other.generate(GUARDRAIL)
    envelope = attest(verdict(), FILES, other.signer(GUARDRAIL))
    with pytest.raises(AttestationError, match="does not verify"):
        verify(envelope, [keys.public_key(GUARDRAIL)], FILES)


def test_another_digest_is_refused(keys):
    envelope = attest(verdict(), FILES, keys.signer(GUARDRAIL))
    swapped = dict(FILES) | {"fieldloop.vehicle-longitudinal@3.int8.onnx": "ef" * 32}
    with pytest.raises(AttestationError, match="other files"):
        verify(envelope, [keys.public_key(GUARDRAIL)], swapped)
    with pytest.raises(AttestationError, match="other files"):  # a subject missing is as bad
        verify(envelope, [keys.public_key(GUARDRAIL)], dict(list(FILES.items())[:1]))


def test_a_failing_verdict_verifies_but_is_never_passed(keys):
    envelope = attest(verdict("fail", value=9.0), FILES, keys.signer(GUARDRAIL))
    assert verify(envelope, [keys.public_key(GUARDRAIL)], FILES).verdict == "fail"
    with pytest.raises(AttestationError, match=r"envelope.max_abs_output = 9.0 \(limit <= 3.0\)"):
        verify_pass(envelope, [keys.public_key(GUARDRAIL)], FILES)


def test_a_payload_changed_after_signing_is_refused(keys):
    envelope = json.loads(attest(verdict("fail", value=9.0), FILES, keys.signer(GUARDRAIL)))
    statement = json.loads(b64decode(envelope["payload"]))
    statement["predicate"]["verdict"] = "pass"
    envelope["payload"] = b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(AttestationError, match="does not verify"):
        verify(json.dumps(envelope).encode(), [keys.public_key(GUARDRAIL)], FILES)


def test_an_unsigned_or_garbled_envelope_is_refused(keys):
    envelope = json.loads(attest(verdict(), FILES, keys.signer(GUARDRAIL)))
    envelope["signatures"] = []
    with pytest.raises(AttestationError, match="does not verify"):
        verify(json.dumps(envelope).encode(), [keys.public_key(GUARDRAIL)], FILES)
    with pytest.raises(AttestationError, match="not a DSSE envelope"):
        verify(b'{"payload": 1}', [keys.public_key(GUARDRAIL)], FILES)
    with pytest.raises(AttestationError, match="no trusted guardrail key"):
        verify(attest(verdict(), FILES, keys.signer(GUARDRAIL)), [], FILES)


def test_a_check_passes_only_when_its_number_is_inside_its_limit():
    assert Check.measure("x", "edge", 10.0, "<=", 10.0).passed
    assert not Check.measure("x", "edge", 10.5, "<=", 10.0).passed
    assert not Check.measure("x", "edge", float("nan"), "<=", 10.0).passed
    assert not Check.measure("x", "edge", None, ">=", 0.0).passed


def test_fleets_file_and_who_may_run_what():
    fleets = load_fleets()
    vans = fleets.get("acme-vans")
    assert vans.may_run(None) and vans.may_run("acme-mobility") and not vans.may_run("acme-steel")
    assert not fleets.get("public-cars").may_run("acme-mobility")
    with pytest.raises(KeyError, match="the fleets are"):
        fleets.get("nope")
    with pytest.raises(ValueError, match="lower-case"):
        Fleet(name="Bad Name", task="t", max_model_bytes=1, max_p99_us=1)


def test_repository_paths_stay_one_level_under_the_fleet():
    assert release_pointer_path("acme-vans") == "acme-vans/release.json"
    path = model_target_path("acme-vans", "fieldloop.vehicle-longitudinal.acme-mobility", 7, "int8.onnx")
    assert path.count("/") == 1 and path.startswith("acme-vans/")
    with pytest.raises(ValueError):
        release_pointer_path("../etc")


def test_each_task_policy_has_runtime_limits_a_device_can_enforce():
    from actuation.contract import load_runtime_limits, policy_digest

    cars = load_runtime_limits("vehicle-longitudinal")
    assert cars.ood_output == "ood_score" and cars.outputs[0].min < cars.outputs[0].fallback < cars.outputs[0].max
    plant = load_runtime_limits("plant-anomaly")
    assert plant.outputs[0].name == "anomaly_score"
    assert len(policy_digest("plant-anomaly")) == 64
