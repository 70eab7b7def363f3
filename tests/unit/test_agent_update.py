"""The edge agent's update cycle against a repository of our own (tests/tuf_repository.py).

Every attack in python-tuf's own suite that applies to us, and every way a release can be
wrong for this device, is refused before anything is loaded: the device keeps running its
last known good model, and the refusal is the cycle's state, in the status summary and
(as the model version it keeps reporting) in its telemetry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from securesystemslib.signer import CryptoSigner

from actuation.agent import Agent, DeviceConfig, DeviceDir, provision
from actuation.agent.agent import OFFLINE, REFUSED, UP_TO_DATE, UPDATED
from actuation.agent.updater import MAX_TIMESTAMP_BYTES
from actuation.contract import MANIFEST_FILE, model_target_path
from actuation.signing import GUARDRAIL, KeyStore
from tests.tuf_repository import (
    BASE_URL,
    MODEL_FILE,
    EdgeFiles,
    MemoryFetcher,
    ReleaseRepository,
    tiny_model,
    verdict_for,
)

MODEL = "fieldloop.vehicle-longitudinal"
FLEET = "public-cars"


@pytest.fixture(scope="module")
def edge() -> EdgeFiles:
    return tiny_model()


@pytest.fixture(scope="module")
def edge_v2() -> EdgeFiles:
    return tiny_model(accel_gain=0.5)


@pytest.fixture()
def repo(tmp_path: Path, edge: EdgeFiles) -> ReleaseRepository:
    repo = ReleaseRepository(tmp_path / "cloud", fleets=(FLEET, "acme-vans"))
    repo.release(FLEET, 1, edge)
    return repo


def make_device(tmp_path: Path, repo: ReleaseRepository, fleet: str = FLEET, tenant: str | None = None) -> DeviceDir:
    config = DeviceConfig(device_id="car-1", fleet=fleet, tenant=tenant, repo_url=BASE_URL, task="vehicle-longitudinal")
    return provision(tmp_path / "device", config, repo.root_bytes)


@pytest.fixture()
def agent(tmp_path: Path, repo: ReleaseRepository) -> Agent:
    """A device running version 1, its first update done."""
    agent = Agent(make_device(tmp_path, repo), fetcher=MemoryFetcher(repo))
    assert agent.update().state == UPDATED
    assert agent.active == f"{MODEL}@1"
    return agent


def frames(n: int = 12) -> list[dict]:
    frame = {
        "speed_mps": 10.0, "accel_mps2": 0.5, "brake": 0.0, "steering_deg": 1.0, "yaw_rate_dps": 0.1,
        "perception": {"vehicles": 2, "pedestrians": 0, "cyclists": 0},
    }  # fmt: skip
    return [dict(frame) for _ in range(n)]


def assert_kept_v1(agent: Agent, reason: str) -> None:
    """The refusal is the state, and the device still runs (and reports) version 1."""
    result = agent.last_update
    assert result is not None and (result.state, result.reason) == (REFUSED, reason), result
    assert agent.active == f"{MODEL}@1"
    for frame in frames():
        agent.infer(frame)
    last = agent.telemetry.records[-1][2]
    assert (last["model_name"], last["model_version"], last["intervention"]) == (MODEL, "1", False)
    assert last["update_state"] == f"refused:{reason}"  # said in telemetry, as the fleet sees it
    summary = agent.summary()
    assert summary["update_state"].startswith(f"refused: {reason}: ")
    assert summary["window"]["errors"] == {f"refused:{reason}": 1}


# -- what works -----------------------------------------------------------------------------
def test_a_new_release_goes_to_the_other_slot_and_the_old_one_stays_as_last_known_good(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    assert agent.update().state == UP_TO_DATE
    repo.release(FLEET, 2, edge_v2)
    result = agent.update()
    assert (result.state, result.active) == (UPDATED, f"{MODEL}@2")
    state = agent.slots.state()
    assert state.active == "b" and state.slots["a"].release.version == 1  # last known good kept
    assert agent.update().state == UP_TO_DATE
    # a restarted agent runs what the state file names
    again = Agent(agent.device, fetcher=MemoryFetcher(repo))
    assert again.active == f"{MODEL}@2"


def test_nothing_new_costs_only_the_timestamp(agent: Agent, repo: ReleaseRepository) -> None:
    fetcher = MemoryFetcher(repo)
    agent.fetcher = fetcher
    assert agent.update().state == UP_TO_DATE
    assert fetcher.requests == ["metadata/2.root.json", "metadata/timestamp.json"]
    assert fetcher.bytes < 1024


def test_without_a_model_the_device_commands_the_fallback_and_says_so(tmp_path: Path, repo: ReleaseRepository) -> None:
    agent = Agent(make_device(tmp_path, repo), fetcher=MemoryFetcher(repo))  # no update yet
    decision = agent.infer(frames(1)[0])
    assert decision.commanded == (-1.0,) and decision.reason == "no-model"
    record = agent.telemetry.records[-1][2]
    assert (record["model_name"], record["model_version"], record["intervention"]) == ("fallback", "none", True)
    assert record["update_state"] is None  # no update cycle yet


def test_offline_the_device_keeps_serving_its_model_and_says_so(agent: Agent) -> None:
    agent.fetcher.offline = True
    result = agent.update()
    assert result.state == OFFLINE and "unreachable" in result.detail
    assert agent.active == f"{MODEL}@1"
    agent.infer(frames(1)[0])
    record = agent.telemetry.records[-1][2]
    assert (record["model_version"], record["update_state"]) == ("1", "offline")
    assert agent.summary()["update_state"].startswith("offline: ")


def test_expired_metadata_is_a_freeze_the_device_does_not_follow(agent: Agent, repo: ReleaseRepository) -> None:
    repo.release(FLEET, 2, tiny_model(accel_gain=0.5))
    with freeze_time(datetime.now(UTC) + timedelta(days=2)):  # the repository's metadata expired a day ago
        result = agent.update()
    assert result.state == OFFLINE and "expired" in result.detail
    assert agent.active == f"{MODEL}@1"


# -- attacks on the repository (python-tuf's suite) -----------------------------------------
def test_tampered_model_bytes_are_refused(agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles) -> None:
    repo.release(FLEET, 2, edge_v2)
    url = repo.target_url(model_target_path(FLEET, MODEL, 2, MODEL_FILE))
    data = bytearray(repo.files[url])
    data[len(data) // 2] ^= 0xFF
    repo.files[url] = bytes(data)
    agent.update()
    assert_kept_v1(agent, "target")


def test_endless_target_data_is_refused(agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles) -> None:
    repo.release(FLEET, 2, edge_v2)
    url = repo.target_url(model_target_path(FLEET, MODEL, 2, MODEL_FILE))
    repo.files[url] += b"\0" * 10_000_000
    agent.update()
    assert_kept_v1(agent, "target")
    assert "more than the signed length" in agent.last_update.detail


def test_endless_metadata_is_refused(agent: Agent, repo: ReleaseRepository) -> None:
    repo.files["metadata/timestamp.json"] = b" " * (MAX_TIMESTAMP_BYTES * 100)
    agent.update()
    assert_kept_v1(agent, "metadata")


@pytest.mark.parametrize("how", ["another key", "no signature"])
def test_a_fleet_role_not_signed_by_its_key_is_refused(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles, how: str
) -> None:
    repo.release(FLEET, 2, edge_v2)
    if how == "another key":
        repo.resign("fleet-public-cars", CryptoSigner.generate_ed25519())
    else:
        repo.resign("fleet-public-cars", unsigned=True)
    agent.update()
    assert_kept_v1(agent, "metadata")


def test_metadata_rolled_back_to_an_older_version_is_refused(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    repo.release(FLEET, 2, edge_v2)
    assert agent.update().state == UPDATED  # the device saw timestamp 2
    repo.files = dict(repo.history[0])  # an attacker serves the repository as it was at version 1
    result = agent.update()
    assert (result.state, result.reason) == (REFUSED, "metadata")
    assert agent.active == f"{MODEL}@2"


def test_mix_and_match_of_metadata_versions_is_refused(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    old = repo.files["metadata/1.fleet-public-cars.json"]
    repo.release(FLEET, 2, edge_v2)
    repo.files["metadata/2.fleet-public-cars.json"] = old  # the snapshot says 2, the file is version 1
    agent.update()
    assert_kept_v1(agent, "metadata")


# -- releases wrong for this device ----------------------------------------------------------
def test_an_attestation_about_another_file_is_refused(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    subjects = {MODEL_FILE: "0" * 64, MANIFEST_FILE: edge_v2.manifest_bytes and _sha(edge_v2.manifest_bytes)}
    repo.release(FLEET, 2, edge_v2, subjects=subjects)
    agent.update()
    assert_kept_v1(agent, "attestation")
    assert "about other files" in agent.last_update.detail


def test_an_attestation_signed_by_an_unknown_key_is_refused(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles, tmp_path: Path
) -> None:
    stranger = KeyStore(tmp_path / "stranger")
    stranger.generate(GUARDRAIL)
    repo.release(FLEET, 2, edge_v2, signer=stranger.signer(GUARDRAIL))
    agent.update()
    assert_kept_v1(agent, "attestation")
    assert "does not verify with a trusted guardrail key" in agent.last_update.detail


def test_a_failing_verdict_is_refused_and_not_fetched_again(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    repo.release(FLEET, 2, edge_v2, verdict=verdict_for(MODEL, 2, [FLEET], passed=False))
    agent.update()
    assert_kept_v1(agent, "attestation")
    assert "edge.p99_us = 5000.0 (limit <= 2000.0)" in agent.last_update.detail
    fetcher = MemoryFetcher(repo)
    agent.fetcher = fetcher
    assert agent.update().reason == "attestation"
    assert not any(MODEL_FILE in r for r in fetcher.requests)  # remembered, not downloaded again


def test_a_verdict_for_other_fleets_is_refused(agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles) -> None:
    repo.release(FLEET, 2, edge_v2, verdict=verdict_for(MODEL, 2, ["acme-vans"]))
    agent.update()
    assert_kept_v1(agent, "verdict")


def test_a_verdict_about_another_version_is_refused(agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles) -> None:
    repo.release(FLEET, 2, edge_v2, verdict=verdict_for(MODEL, 7, [FLEET]))
    agent.update()
    assert_kept_v1(agent, "verdict")


def test_a_tenants_model_is_refused_on_a_device_of_no_tenant(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    # a publisher's mistake that got everything else right: judged and signed for this fleet
    tenant_model = "fieldloop.vehicle-longitudinal.acme-mobility"
    edge = EdgeFiles(edge_v2.onnx, edge_v2.manifest.model_copy(update={"model": tenant_model}))
    verdict = verdict_for(tenant_model, 2, [FLEET], tenant="acme-mobility")
    repo.release(FLEET, 2, edge, tenant="acme-mobility", verdict=verdict)
    agent.update()
    assert_kept_v1(agent, "tenant")
    assert "acme-mobility's model" in agent.last_update.detail


def test_another_tenants_model_is_refused_on_a_tenants_device(tmp_path: Path, repo: ReleaseRepository) -> None:
    other = "fieldloop.vehicle-longitudinal.other-co"
    edge = tiny_model(model=other)
    repo.release("acme-vans", 1, edge, fleet_tenant="acme-mobility", tenant="other-co",
                 verdict=verdict_for(other, 1, ["acme-vans"], tenant="other-co"))  # fmt: skip
    agent = Agent(make_device(tmp_path, repo, "acme-vans", "acme-mobility"), fetcher=MemoryFetcher(repo))
    result = agent.update()
    assert (result.state, result.reason, agent.active) == (REFUSED, "tenant", None)


def test_a_model_that_fails_its_self_test_on_the_device_is_not_activated(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    build = edge_v2.manifest.builds["int8"]
    wrong = [[v + 0.5 for v in row] for row in build.self_test_outputs]
    manifest = edge_v2.manifest.model_copy(
        update={"builds": {"int8": build.model_copy(update={"self_test_outputs": wrong})}}
    )
    repo.release(FLEET, 2, EdgeFiles(edge_v2.onnx, manifest))
    agent.update()
    assert_kept_v1(agent, "self-test")
    assert "max |output - expected| = 0.5" in agent.last_update.detail
    state = json.loads(agent.device.state.read_text())
    assert state["active"] == "a" and "b" not in state["slots"]


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- key rotation (python-tuf's test_updater_key_rotations) -----------------------------------
def test_the_device_follows_a_root_key_rotation_and_refuses_the_retired_keys_root(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    repo.rotate_root(keep_old=True)  # root 2, signed by the old key and the new
    repo.release(FLEET, 2, edge_v2)
    assert agent.update().state == UPDATED
    repo.rotate_root(keep_old=True)  # root 3: the device walks 2 -> 3 from what it trusts
    repo.publish()
    assert agent.update().state == UP_TO_DATE
    repo.rotate_root(keep_old=False)  # root 4 signed by the new key alone: root 3's key must sign it
    repo.publish()
    result = agent.update()
    assert (result.state, result.reason, agent.active) == (REFUSED, "metadata", f"{MODEL}@2")


def test_the_device_follows_a_fleet_key_rotation_and_refuses_the_retired_key(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    retired = repo.rotate_fleet_key(FLEET)
    repo.release(FLEET, 2, edge_v2)
    assert agent.update().state == UPDATED
    repo.release(FLEET, 3, tiny_model(accel_gain=0.25))
    repo.resign("fleet-public-cars", retired)  # the old key still signs: no longer trusted for the role
    result = agent.update()
    assert (result.state, result.reason, agent.active) == (REFUSED, "metadata", f"{MODEL}@2")


def test_the_device_learns_a_new_guardrail_key_through_the_repository(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles, tmp_path: Path
) -> None:
    rotated = KeyStore(tmp_path / "rotated")
    rotated.generate(GUARDRAIL)
    old_signer = repo.keystore.signer(GUARDRAIL)
    repo.trust_guardrail_keys([rotated.public_key(GUARDRAIL)])  # the old key retired
    repo.release(FLEET, 2, edge_v2, signer=rotated.signer(GUARDRAIL))
    assert agent.update().state == UPDATED
    repo.release(FLEET, 3, tiny_model(accel_gain=0.25), signer=old_signer)
    result = agent.update()
    assert (result.state, result.reason, agent.active) == (REFUSED, "attestation", f"{MODEL}@2")


def test_a_running_device_switches_to_a_new_release_between_frames_and_closes_its_window(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    agent.run(frames(5), paced=False, update_every_s=3600)
    repo.release(FLEET, 2, edge_v2)
    agent.run(frames(5), paced=False, update_every_s=0.0)  # an update cycle before every frame
    versions = [r[2]["model_version"] for r in agent.telemetry.records]
    assert versions == ["1"] * 5 + ["2"] * 5
    status = json.loads(agent.device.status.read_text())
    assert status["active"] == f"{MODEL}@2" and status["update"]["state"] == UP_TO_DATE
    assert status["window"]["inferences"] == 1  # the window the last cycle closed: one frame


def test_a_damaged_active_slot_falls_back_to_the_last_known_good(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    repo.release(FLEET, 2, edge_v2)
    agent.update()
    (agent.device.slots / "b" / "model.onnx").write_bytes(b"bit rot")  # v2's slot, damaged on disk
    restarted = Agent(agent.device, fetcher=MemoryFetcher(repo))
    assert restarted.active == f"{MODEL}@1"  # slot a, not the fallback
    assert restarted.update().state == UPDATED  # v2 reinstalled into the damaged slot
    assert restarted.active == f"{MODEL}@2" and restarted.slots.state().slots["a"].release.version == 1


def test_limits_the_monitor_cannot_apply_to_the_model_are_refused_before_activation(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    from actuation.contract import OutputLimit, RuntimeLimits

    limits = RuntimeLimits(outputs=[OutputLimit(name="steering_deg", min=-10, max=10, fallback=0.0)])
    repo.release(FLEET, 2, edge_v2, limits=limits)
    agent.update()
    assert_kept_v1(agent, "manifest")
    assert "['steering_deg']" in agent.last_update.detail


def test_new_limits_for_the_running_model_are_an_update(agent: Agent, repo: ReleaseRepository, edge: EdgeFiles) -> None:
    from actuation.contract import OutputLimit, RuntimeLimits

    tighter = RuntimeLimits(outputs=[OutputLimit(name="accel_mps2", min=-3.0, max=1.5, fallback=-1.0)])
    repo.release(FLEET, 1, edge, limits=tighter)  # the same model and version, republished with other limits
    assert agent.update().state == UPDATED
    assert agent.command({**frames(1)[0]}).reason == "warm-up"
    for frame in frames(10):
        decision = agent.command({**frame, "accel_mps2": 2.0})
    assert decision.reason == "envelope"  # 2.0 is inside the old envelope, outside the new one


def test_a_release_republished_with_a_passing_attestation_is_taken_after_a_refusal(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    repo.release(FLEET, 2, edge_v2, verdict=verdict_for(MODEL, 2, [FLEET], passed=False))
    assert agent.update().reason == "attestation"
    repo.release(FLEET, 2, edge_v2)  # judged again, passed
    assert agent.update().state == UPDATED and agent.active == f"{MODEL}@2"


def test_an_unexpected_failure_in_an_update_keeps_the_device_running(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(agent.slots, "install", disk_full)
    repo.release(FLEET, 2, edge_v2)
    result = agent.update()
    assert result.state == "error" and "No space left on device" in result.detail
    assert agent.active == f"{MODEL}@1" and agent.infer(frames(1)[0]) is not None


def test_a_tenants_device_runs_a_base_model_too(tmp_path: Path, repo: ReleaseRepository, edge: EdgeFiles) -> None:
    repo.release("acme-vans", 1, edge, fleet_tenant="acme-mobility", verdict=verdict_for(MODEL, 1, ["acme-vans"]))
    agent = Agent(make_device(tmp_path, repo, "acme-vans", "acme-mobility"), fetcher=MemoryFetcher(repo))
    assert agent.update().state == UPDATED and agent.active == f"{MODEL}@1"


def test_a_fleet_without_a_release_yet_runs_the_fallback_and_says_so(tmp_path: Path, repo: ReleaseRepository) -> None:
    agent = Agent(make_device(tmp_path, repo, "acme-vans", "acme-mobility"), fetcher=MemoryFetcher(repo))
    result = agent.update()
    assert (result.state, result.active) == ("no-release", None)
    assert "no release for fleet acme-vans" in result.detail
    assert agent.infer(frames(1)[0]).reason == "no-model"


def test_a_pointer_whose_digests_are_not_the_signed_files_is_refused(
    agent: Agent, repo: ReleaseRepository, edge_v2: EdgeFiles
) -> None:
    from actuation.contract import ReleasePointer

    release = repo.release(FLEET, 2, edge_v2, publish=False)
    lying = release.model_copy(update={"model_file": release.model_file.model_copy(update={"sha256": "ab" * 32})})
    repo.point(ReleasePointer(fleet=FLEET, tenant=None, issued_at=datetime.now(UTC), active=lying))
    agent.update()
    assert_kept_v1(agent, "pointer")


def test_no_private_key_reaches_the_device_or_its_output(
    agent: Agent, repo: ReleaseRepository, caplog: pytest.LogCaptureFixture
) -> None:
    private = [p.read_bytes() for p in (repo.keystore.dir).glob("*.pem")]
    assert private and all(b"PRIVATE KEY" in p for p in private)
    secrets = [line for p in private for line in p.splitlines() if b"-----" not in line]
    stored = b"".join(p.read_bytes() for p in agent.device.path.rglob("*") if p.is_file())
    said = (json.dumps(agent.summary()) + caplog.text).encode()
    for blob in (stored, said):
        assert b"PRIVATE KEY" not in blob and not any(s in blob for s in secrets)
    assert repo.keystore.entry("guardrail").public["keyval"]["public"].encode() in stored  # the public half is there


def test_telemetry_records_encode_with_the_latest_schema_and_a_v1_reader_still_reads_them(agent: Agent) -> None:
    from fieldloop.wire import decode, default_registry, encode

    registry = default_registry()
    agent.infer(frames(1)[0])
    record = agent.telemetry.records[-1][2]
    payload = encode(record, registry.get("telemetry"))
    assert registry.get("telemetry").version == 3 and decode(payload, registry)["update_state"] == "updated"
    old = decode(payload, registry, reader=registry.get("telemetry", 1))  # a consumer that knows only v1
    assert "update_state" not in old and old["model_version"] == "1"
