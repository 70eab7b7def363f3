"""The release repository on disk (no server): its roles, expiries, write order, renewal, and keys.

A device's view over real HTTP is in tests/integration/test_release_device.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from actuation.contract import GUARDRAIL_KEYS_TARGET, load_fleets
from actuation.release import repository as repository_module
from actuation.release.repository import EXPIRY, ROOT_KEYS, ROOT_THRESHOLD, Repository
from actuation.signing import GUARDRAIL
from tests.release_fixtures import T0, Clock, private_key_strings, publish_tiny


def test_init_makes_a_threshold_root_one_role_per_fleet_and_signs_the_guardrail_key(repo: Repository) -> None:
    root = repo.root().signed
    assert root.consistent_snapshot is True
    assert root.roles["root"].threshold == ROOT_THRESHOLD == 2
    assert sorted(root.roles["root"].keyids) == sorted(repo.keys.entry(k).keyid for k in ROOT_KEYS)
    delegations = repo.targets("targets").signed.delegations
    assert {name: role.paths for name, role in delegations.roles.items()} == {
        f"fleet-{f.name}": [f"{f.name}/*"] for f in load_fleets().fleet
    }
    info = repo.targets("targets").signed.targets[GUARDRAIL_KEYS_TARGET]
    keys = json.loads(repo.target_bytes(GUARDRAIL_KEYS_TARGET, info))["keys"]
    assert keys == {repo.keys.entry(GUARDRAIL).keyid: repo.keys.entry(GUARDRAIL).public}
    expires = {r.name: r.expires - T0 for r in repo.roles()}
    assert expires["root"] == EXPIRY["root"] == timedelta(days=365)
    assert expires["timestamp"] == timedelta(days=1) and expires["snapshot"] == timedelta(days=7)
    assert expires["targets"] == expires["fleet-acme-vans"] == timedelta(days=90)


def test_init_again_changes_nothing(repo: Repository) -> None:
    before = sorted(p.name for p in repo.metadata_dir.iterdir())
    assert repo.init() == []
    assert sorted(p.name for p in repo.metadata_dir.iterdir()) == before


def test_a_publish_writes_targets_then_the_fleet_role_then_snapshot_then_timestamp(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real = repository_module._write_atomic
    monkeypatch.setattr(repository_module, "_write_atomic", lambda p, d: (order.append(p.name), real(p, d)))
    publish_tiny(repo, "public-cars", 1)
    targets = ("release.json", "campaigns.json")
    kinds = ["target" if not n.endswith("json") or "@" in n or n.endswith(targets) else n for n in order]
    # the fleet's policy campaign is signed first, as its own version of the role, then the release
    asked = ["target", "2.fleet-public-cars.json", "2.snapshot.json", "timestamp.json"]
    assert kinds == asked + ["target"] * 4 + ["3.fleet-public-cars.json", "3.snapshot.json", "timestamp.json"]


def test_a_publish_that_fails_midway_leaves_the_served_state_as_it_was(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (repo.metadata_dir / "timestamp.json").read_bytes()
    real = repository_module._write_atomic

    def fail_on_snapshot(path: Path, data: bytes) -> None:
        if path.name.endswith("snapshot.json"):
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(repository_module, "_write_atomic", fail_on_snapshot)
    with pytest.raises(OSError):
        publish_tiny(repo, "public-cars", 1)
    assert (repo.metadata_dir / "timestamp.json").read_bytes() == before  # devices still see the old state
    assert repo.pointer("public-cars") is None
    assert not list(repo.dir.rglob("*.tmp"))


def test_refresh_renews_what_is_near_expiry_and_is_idempotent(repo: Repository, clock: Clock) -> None:
    assert repo.refresh() == []
    clock.now = T0 + timedelta(hours=13)
    assert [line.split(":")[0] for line in repo.refresh()] == ["timestamp"]
    assert repo.refresh() == []
    clock.now = T0 + timedelta(days=5)
    assert {line.split(":")[0] for line in repo.refresh()} == {"snapshot", "timestamp"}
    clock.now = T0 + timedelta(days=61)
    renewed = {line.split(":")[0] for line in repo.refresh()}
    assert renewed == {"targets", "snapshot", "timestamp"} | {f"fleet-{f.name}" for f in load_fleets().fleet}
    assert all(r.expires > clock.now + timedelta(hours=12) for r in repo.roles())
    clock.now = T0 + timedelta(days=310)
    assert "root" not in {line.split(":")[0] for line in repo.refresh()}  # the offline keys were not asked for
    assert "root" in {r.name for r in repo.due()}
    assert [line.split(":")[0] for line in repo.refresh(with_root=True)] == ["root"]
    assert repo.root().signed.version == 2


def test_publishing_the_running_version_again_is_a_no_op(repo: Repository) -> None:
    assert publish_tiny(repo, "public-cars", 1).changed
    before = repo.timestamp().signed.version
    again = publish_tiny(repo, "public-cars", 1)
    assert not again.changed and again.written == []
    assert repo.timestamp().signed.version == before


def test_no_private_key_reaches_the_repository(repo: Repository) -> None:
    publish_tiny(repo, "public-cars", 1)
    repo.rotate("targets")
    repo.rotate("root")
    secrets = private_key_strings(repo.keys)
    assert len(secrets) > 20
    for path in repo.dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in secrets if s in data]
            assert not leaked, f"{path} holds private key material"


def test_two_publishes_at_once_both_land_one_after_the_other(repo: Repository) -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = repo.targets("fleet-public-cars").signed.version
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda v: publish_tiny(repo, "public-cars", v), (1, 2)))
    assert all(d.changed for d in done)
    # the fleet's policy campaign once (the second publish finds it running), then both releases
    assert done[0].campaign == done[1].campaign is not None
    assert repo.targets("fleet-public-cars").signed.version == before + 3
    names = set(repo.targets("fleet-public-cars").signed.targets)
    assert {"public-cars/fieldloop.vehicle-longitudinal@1.student.int8.onnx"} <= names
    assert {"public-cars/fieldloop.vehicle-longitudinal@2.student.int8.onnx"} <= names
