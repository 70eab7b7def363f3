"""Key rotation as a device lives it: provisioned with root v1 long ago, it still updates after the
targets and root keys were replaced (it walks the root chain), and refuses what an old key signs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata

from actuation.release.repository import ROOT_KEYS
from fieldloop.config import FieldloopConfig
from tests.release_fixtures import ServedRelease, pointer_of, publish_tiny, served_release

MODEL = "fieldloop.vehicle-longitudinal"


@pytest.fixture()
def served(tmp_path: Path, cfg: FieldloopConfig):
    with served_release(tmp_path / "home", cfg) as release:
        publish_tiny(release.repo, "public-cars", 1, MODEL)
        yield release


def _resign(served: ServedRelease, filename: str, signers: list) -> None:
    path = served.repo.metadata_dir / filename
    md = Metadata.from_bytes(path.read_bytes())
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    path.write_bytes(md.to_bytes())


def test_after_rotating_targets_and_root_an_old_device_updates_and_old_keys_are_refused(
    served: ServedRelease, tmp_path: Path
) -> None:
    old_targets = served.keys.signer("targets")
    assert "no longer trusted" in served.repo.rotate("targets")[0]
    assert "no longer trusted" in served.repo.rotate("root")[0]
    publish_tiny(served.repo, "public-cars", 2, MODEL)

    device = served.device(tmp_path / "device", bootstrap=served.repo.root_bytes(1))
    device.refresh()
    assert pointer_of(device, "public-cars", tmp_path / "device")["active"]["version"] == 2
    trusted = json.loads((tmp_path / "device" / "metadata" / "root.json").read_bytes())["signed"]
    assert trusted["version"] == served.repo.root_version() == 3

    # the targets role as served, re-signed with the key it had before the rotation
    version = served.repo.targets("targets").signed.version
    _resign(served, f"{version}.targets.json", [old_targets])
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.device(tmp_path / "fresh").refresh()


def test_a_root_signed_only_by_the_old_root_keys_is_refused(served: ServedRelease, tmp_path: Path) -> None:
    old_root = [served.keys.signer(k) for k in ROOT_KEYS]
    served.repo.rotate("root")
    device_dir = tmp_path / "device"
    served.device(device_dir).refresh()  # trusts root v2 now
    # whoever kept the old root keys makes a root v3 of their own
    forged = Metadata.from_bytes(served.repo.root_bytes(1))
    forged.signed.version = 3
    forged.signatures.clear()
    for signer in old_root:
        forged.sign(signer, append=True)
    (served.repo.metadata_dir / "3.root.json").write_bytes(forged.to_bytes())
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.device(device_dir).refresh()


def test_rotating_a_fleet_key_keeps_its_devices_updating_and_refuses_the_old_key(
    served: ServedRelease, tmp_path: Path
) -> None:
    old = served.keys.signer("fleet-public-cars")
    served.repo.rotate("fleet-public-cars")
    device = served.device(tmp_path / "device")
    device.refresh()
    assert pointer_of(device, "public-cars", tmp_path / "device")["active"]["version"] == 1
    version = served.repo.targets("fleet-public-cars").signed.version
    _resign(served, f"{version}.fleet-public-cars.json", [old])
    fresh = served.device(tmp_path / "fresh")
    fresh.refresh()
    with pytest.raises(exceptions.UnsignedMetadataError):
        fresh.get_targetinfo("public-cars/release.json")
