"""A device updating from the served repository over real HTTP (nginx from the stack, python-tuf's
ngclient), and every attack of python-tuf's own suite against it: each must raise the error it should.

Each test has a repository of its own (a private home and port), so tampering stays inside it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from tuf.api import exceptions

from actuation.contract import GUARDRAIL_KEYS_TARGET, model_target_path
from actuation.signing import GUARDRAIL
from fieldloop.config import FieldloopConfig
from tests.release_fixtures import ServedRelease, pointer_of, publish_tiny, served_release

MODEL = "fieldloop.vehicle-longitudinal"


@pytest.fixture()
def served(tmp_path: Path, cfg: FieldloopConfig):
    with served_release(tmp_path / "home", cfg) as release:
        publish_tiny(release.repo, "public-cars", 1, MODEL)
        yield release


def _served_file(served: ServedRelease, path: str) -> Path:
    """The file nginx serves for a target path (consistent snapshot: under its digest)."""
    md = served.repo.targets("fleet-public-cars")
    info = md.signed.targets[path]
    dirname, _, name = path.rpartition("/")
    return served.repo.targets_dir / dirname / f"{info.hashes['sha256']}.{name}"


def test_a_device_gets_the_model_its_fleet_runs_and_the_guardrail_key(served: ServedRelease, tmp_path: Path) -> None:
    device = served.device(tmp_path / "device")
    device.refresh()
    pointer = pointer_of(device, "public-cars", tmp_path / "device")
    assert (pointer["active"]["model"], pointer["active"]["version"]) == (MODEL, 1)
    info = device.get_targetinfo(pointer["active"]["model_file"]["path"])
    assert info.custom["verdict"] == "pass" and info.custom["mlflow_uri"] == f"models:/{MODEL}/1"
    onnx = Path(device.download_target(info, str(tmp_path / "model.onnx"))).read_bytes()
    assert hashlib.sha256(onnx).hexdigest() == pointer["active"]["model_file"]["sha256"]
    keys_info = device.get_targetinfo(GUARDRAIL_KEYS_TARGET)
    trusted = json.loads(Path(device.download_target(keys_info, str(tmp_path / "keys.json"))).read_bytes())
    assert list(trusted["keys"]) == [served.keys.entry(GUARDRAIL).keyid]
    # another fleet's role does not sign this fleet's files
    assert device.get_targetinfo("acme-vans/release.json") is None


def test_tampered_target_bytes_are_refused(served: ServedRelease, tmp_path: Path) -> None:
    served_onnx = _served_file(served, model_target_path("public-cars", MODEL, 1, "student.int8.onnx"))
    data = bytearray(served_onnx.read_bytes())
    data[-1] ^= 0xFF  # same length, one byte flipped
    served_onnx.write_bytes(bytes(data))
    device = served.device(tmp_path / "device")
    device.refresh()
    info = device.get_targetinfo(model_target_path("public-cars", MODEL, 1, "student.int8.onnx"))
    with pytest.raises(exceptions.LengthOrHashMismatchError):
        device.download_target(info, str(tmp_path / "model.onnx"))
    assert not (tmp_path / "model.onnx").exists()  # nothing unverified reaches the disk


def test_metadata_changed_after_signing_is_refused(served: ServedRelease, tmp_path: Path) -> None:
    version = served.repo.targets("fleet-public-cars").signed.version
    path = served.repo.metadata_dir / f"{version}.fleet-public-cars.json"
    md = json.loads(path.read_bytes())
    for info in md["signed"]["targets"].values():
        info["length"] += 1  # e.g. to let a longer file through
    path.write_text(json.dumps(md))
    device = served.device(tmp_path / "device")
    device.refresh()
    with pytest.raises(exceptions.UnsignedMetadataError):
        device.get_targetinfo("public-cars/release.json")


def test_metadata_without_its_signature_is_refused(served: ServedRelease, tmp_path: Path) -> None:
    path = served.repo.metadata_dir / "timestamp.json"
    md = json.loads(path.read_bytes())
    md["signatures"] = []
    path.write_text(json.dumps(md))
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.device(tmp_path / "device").refresh()


def test_expired_metadata_is_refused(served: ServedRelease, tmp_path: Path) -> None:
    expires = served.repo.timestamp().signed.expires
    # a frozen repository: nobody re-signed the timestamp, and a day and a bit later...
    # (urllib3 keeps the real clock for its socket timeouts; python-tuf reads the moved one)
    with freeze_time(expires + timedelta(hours=1), ignore=["urllib3"]), pytest.raises(exceptions.ExpiredMetadataError):
        served.device(tmp_path / "device").refresh()
    served.device(tmp_path / "device2").refresh()  # the same repository, today: fine


def test_a_rollback_to_older_metadata_is_refused(served: ServedRelease, tmp_path: Path) -> None:
    old_timestamp = (served.repo.metadata_dir / "timestamp.json").read_bytes()
    publish_tiny(served.repo, "public-cars", 2, MODEL)
    device_dir = tmp_path / "device"
    served.device(device_dir).refresh()  # the device now trusts the newer timestamp
    (served.repo.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(exceptions.BadVersionNumberError):
        served.device(device_dir).refresh()


def test_mix_and_match_of_a_role_version_the_snapshot_does_not_name_is_refused(
    served: ServedRelease, tmp_path: Path
) -> None:
    publish_tiny(served.repo, "public-cars", 2, MODEL)
    version = served.repo.targets("fleet-public-cars").signed.version
    # an attacker (or a stale cache) serves the older, validly signed fleet role under the new name
    older = (served.repo.metadata_dir / f"{version - 1}.fleet-public-cars.json").read_bytes()
    (served.repo.metadata_dir / f"{version}.fleet-public-cars.json").write_bytes(older)
    device = served.device(tmp_path / "device")
    device.refresh()
    with pytest.raises(exceptions.BadVersionNumberError):
        device.get_targetinfo("public-cars/release.json")


def test_endless_data_is_cut_at_the_length_limit(served: ServedRelease, tmp_path: Path) -> None:
    path = served.repo.metadata_dir / "timestamp.json"
    path.write_bytes(path.read_bytes() + b" " * 20_000)  # past UpdaterConfig.timestamp_max_length (16384)
    with pytest.raises(exceptions.DownloadLengthMismatchError):
        served.device(tmp_path / "device").refresh()
