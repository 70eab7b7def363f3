"""Privacy policies, pseudonym keys and keyed pseudonyms, without Spark."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest

from fieldloop.contracts import load_contracts
from fieldloop.keys import KeyRing, PseudonymKey, load_key_ring
from fieldloop.wire import default_registry
from refinement.errors import KeyRingError, PolicyError
from refinement.policy import default_policies, load_policies, output_tables, packaged_policies_dir, parse_policy
from refinement.pseudonym import pseudonym

CONTRACTS = load_contracts()


def test_every_contract_has_a_valid_policy_and_secret_ones_only_an_edge_release() -> None:
    policies = default_policies()
    assert set(policies) == set(CONTRACTS)
    for cid, policy in policies.items():
        assert (policy.edge is not None) == (CONTRACTS[cid].data_class == "secret"), cid
    assert sorted(n for p in policies.values() for n in p.output) == output_tables()
    anon = policies["vehicle-frames-public"].output["vehicle_frames_public_anon"]
    assert anon.level == "anonymized" and anon.quasi_identifiers == ("mesh", "ts")
    assert "vin" not in anon.output_columns and "driver_note" not in anon.output_columns


def copy_policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    for p in packaged_policies_dir().glob("*.toml"):
        (folder / p.name).write_text(p.read_text())
    return folder


def test_a_schema_field_without_an_action_is_refused_by_name(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    path = folder / "plant-sensors-acme-steel.toml"
    path.write_text(path.read_text().replace('quality = "keep"\n', ""))
    with pytest.raises(PolicyError, match=r"plant-sensors-acme-steel.toml.*fields without an action: quality"):
        load_policies(CONTRACTS, default_registry(), folder)


def test_a_missing_policy_is_refused_with_the_file_to_add(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    (folder / "fleet-telemetry.toml").unlink()
    with pytest.raises(
        PolicyError, match=r"contract 'fleet-telemetry' has no privacy policy: add .*fleet-telemetry.toml"
    ):
        load_policies(CONTRACTS, default_registry(), folder)


def test_free_text_cannot_be_a_quasi_identifier() -> None:
    """k-anonymity's cells are gathered before notes are scrubbed, and no two notes are alike."""
    text = (packaged_policies_dir() / "vehicle-frames-public.toml").read_text()
    for old, new in (
        ('sensitive = ["intervention"]', 'sensitive = ["intervention", "driver_note"]'),
        ('driver_id = "drop"\ndriver_note = "drop"', 'driver_id = "drop"\ndriver_note = { action = "scrub_text" }'),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    with pytest.raises(PolicyError, match="driver_note: free text cannot be a quasi-identifier or sensitive attribute"):
        parse_policy(text, "vehicle-frames-public.toml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('device = "drop"', 'device = "pseudonym"'), "anonymized table keeps no linking codes"),
        (('driver_id = "drop"', 'driver_id = { action = "pseudonym", domain = "driver" }'), "driver_id are pseudonyms"),
        (('quasi_identifiers = ["mesh", "ts"]', "quasi_identifiers = []"), "declares its quasi_identifiers"),
        (('lon = { action = "mesh", level = 2 }', 'lon = "keep"'), "mesh needs both"),
        (('speed_mps = { action = "band", width = 5.0 }', 'speed_mps = { action = "band" }'), "needs 'width'"),
        (('brake = "keep"\nyaw', 'brake = "blur"\nyaw'), "brake.action"),
    ],
)
def test_policy_rules_are_enforced_when_loading(change: tuple[str, str], message: str) -> None:
    text = (packaged_policies_dir() / "vehicle-frames-public.toml").read_text()
    assert change[0] in text
    with pytest.raises(PolicyError, match=message):
        parse_policy(text.replace(change[0], change[1], 1), "vehicle-frames-public.toml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('mfcc = "drop"', 'mfcc = "keep"'), "only the site may leave the device; mfcc must be drop"),
        (('mfcc = "drop"', 'voice = "drop"'), r"\[edge\] fields without an action: mfcc"),
        (('field = "db_level"', 'field = "worker_id"'), "mean_db_level: field 'worker_id' is not a number"),
        (
            ('release_contract = "worker-audio-dp-acme-steel"', 'release_contract = "plant-sensors-acme-steel"'),
            "must be a derived contract of tenant 'acme-steel'",
        ),
        (("bounds = [30.0, 130.0]", "bounds = [130.0, 30.0]"), "lower < upper"),
        (("delta = 0.0", "delta = 0.001"), "delta must be 0 with the laplace mechanism"),
    ],
)
def test_the_edge_release_of_a_secret_stream_is_checked_like_any_policy(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    folder = copy_policies(tmp_path)
    path = folder / "worker-audio-acme-steel.toml"
    assert change[0] in path.read_text()
    path.write_text(path.read_text().replace(change[0], change[1], 1))
    with pytest.raises(PolicyError, match=message):
        load_policies(CONTRACTS, default_registry(), folder)


def test_a_secret_stream_cannot_have_silver_tables(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    (folder / "worker-audio-acme-steel.toml").write_text(
        (folder / "plant-sensors-acme-steel.toml")
        .read_text()
        .replace("plant-sensors-acme-steel", "worker-audio-acme-steel")
    )
    with pytest.raises(PolicyError, match="secret and never reaches the cloud raw"):
        load_policies(CONTRACTS, default_registry(), folder)


def test_an_action_that_does_not_fit_the_field_type_is_refused(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    path = folder / "fleet-telemetry.toml"
    path.write_text(
        path.read_text().replace('intervention = "keep"', 'intervention = { action = "band", width = 1.0 }')
    )
    with pytest.raises(PolicyError, match="intervention: action 'band' does not apply to a boolean"):
        load_policies(CONTRACTS, default_registry(), folder)


# keys -------------------------------------------------------------------------------------
def ring_json(*keys: tuple[str, str, bool]) -> str:
    return json.dumps(
        {
            "keys": [
                {"tenant": t, "id": i, "secret_b64": base64.b64encode(bytes([n]) * 32).decode(), "active": a}
                for n, (t, i, a) in enumerate(keys)
            ]
        }
    )


def test_default_key_file_is_created_private_once(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "keys.json"
    ring = load_key_ring(f"file:{path}", create_for=["acme-steel", None], period="202611")
    assert ring.tenants == ["_public", "acme-steel"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_key_ring(f"file:{path}", create_for=["acme-steel", None])
    assert again.active("acme-steel").secret == ring.active("acme-steel").secret  # not regenerated


def test_key_errors_name_the_source_and_key_but_never_the_secret(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="cannot read the key ring"):
        load_key_ring(f"file:{tmp_path / 'absent.json'}")
    with pytest.raises(KeyRingError, match="FIELDLOOP_KEYS"):
        load_key_ring("env:FIELDLOOP_KEYS", env={})
    ring = load_key_ring("env:K", env={"K": ring_json(("acme", "acme-1", False), ("acme", "acme-2", True))})
    assert ring.active("acme").id == "acme-2"
    with pytest.raises(KeyRingError, match="no active pseudonym key for tenant 'other'"):
        ring.active("other")
    with pytest.raises(KeyRingError, match="two active keys"):
        KeyRing.parse(ring_json(("acme", "a", True), ("acme", "b", True)), "test")
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    with pytest.raises(KeyRingError) as short:
        KeyRing.parse(json.dumps({"keys": [{"tenant": "t", "id": "t-1", "secret_b64": secret}]}), "test")
    assert "t-1" in str(short.value) and secret not in str(short.value)
    with pytest.raises(KeyRingError) as broken:
        KeyRing.parse('{"keys": [{"tenant": "t", "secret_b64": "' + secret + '"}]}', "test")
    assert secret not in str(broken.value)
    assert "secret" not in repr(ring.active("acme")).replace("secret=", "")


def test_key_ring_from_aws_secrets_manager() -> None:
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        sm = boto3.client("secretsmanager", region_name="ap-northeast-1")
        sm.create_secret(Name="fieldloop/pseudonym-keys", SecretString=ring_json(("acme", "acme-1", True)))
        ring = load_key_ring("aws-secretsmanager:fieldloop/pseudonym-keys", secretsmanager=sm)
        assert ring.active("acme").id == "acme-1"
        with pytest.raises(KeyRingError, match="ResourceNotFoundException"):
            load_key_ring("aws-secretsmanager:fieldloop/absent", secretsmanager=sm)


# pseudonyms --------------------------------------------------------------------------------
def test_pseudonyms_are_keyed_and_separate_tenants() -> None:
    key_a = PseudonymKey("acme-mobility", "acme-1", b"a" * 32)
    key_b = PseudonymKey("kansai-robotics", "kansai-1", b"a" * 32)  # same bytes on purpose
    raw = "JTDKB20U693456789"
    p = pseudonym(key_a, "vehicle", raw)
    assert p == pseudonym(key_a, "vehicle", raw) and p.startswith("p1") and len(p) == 34
    assert p != pseudonym(key_b, "vehicle", raw)  # the tenant is in the message as well as the key
    assert p != pseudonym(key_a, "driver", raw)  # domains do not link
    assert p != pseudonym(PseudonymKey("acme-mobility", "acme-2", b"b" * 32), "vehicle", raw)
    unkeyed = {h(raw.encode()).hexdigest() for h in (hashlib.sha256, hashlib.md5, hashlib.sha1)}
    assert not any(p[2:] in u or u.startswith(p[2:]) for u in unkeyed)
