"""``fieldloop agent``: provisioning as an operator meets it, each refusal one line saying what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fieldloop.cli import main
from tests.tuf_repository import ReleaseRepository


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root.json"
    path.write_bytes(ReleaseRepository(tmp_path / "cloud").root_bytes)
    return path


def agent(tmp_path: Path, *args: str):
    env = {"FIELDLOOP_HOME": str(tmp_path / "home"), "FIELDLOOP_RELEASE_PORT": "35070"}
    return CliRunner().invoke(main, ["agent", *args], env=env)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    return " ".join(lines)


@pytest.mark.parametrize("command", ["provision", "run", "status"])
def test_every_agent_command_has_help_and_json(command: str, tmp_path: Path) -> None:
    result = agent(tmp_path, command, "--help")
    assert result.exit_code == 0 and "--json" in result.output and "--device" in result.output


def test_provision_writes_the_device_directory_with_the_fleets_task_and_tenant(tmp_path: Path, root: Path) -> None:
    result = agent(tmp_path, "provision", "--device", "van-7", "--fleet", "acme-vans", "--root", str(root), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    device = tmp_path / "home" / "devices" / "van-7"
    assert out["dir"] == str(device)
    assert (out["task"], out["tenant"], out["repo_url"]) == (
        "vehicle-longitudinal",
        "acme-mobility",
        "http://127.0.0.1:35070",
    )
    assert (device / "root.json").read_bytes() == root.read_bytes()
    assert {p.name for p in device.iterdir()} >= {"metadata", "downloads", "slots", "spool", "device.json"}
    status = agent(tmp_path, "status", "--device", "van-7", "--json")
    assert json.loads(status.output)["state"]["active"] is None


def test_provision_refuses_a_tenant_the_fleet_is_not_owned_by(tmp_path: Path, root: Path) -> None:
    result = agent(tmp_path, "provision", "--device", "car-1", "--fleet", "public-cars", "--root", str(root),
                   "--tenant", "acme-mobility")  # fmt: skip
    assert "fleet public-cars belongs to no tenant" in one_error_line(result)


def test_provision_refuses_an_unknown_fleet_and_names_the_known_ones(tmp_path: Path, root: Path) -> None:
    result = agent(tmp_path, "provision", "--device", "car-1", "--fleet", "nowhere", "--root", str(root))
    assert "the fleets are: public-cars, acme-vans, acme-plant" in one_error_line(result)


def test_provision_refuses_a_file_that_is_not_a_tuf_root(tmp_path: Path) -> None:
    bogus = tmp_path / "root.json"
    bogus.write_text('{"signed": {"_type": "timestamp"}}')
    result = agent(tmp_path, "provision", "--device", "car-1", "--fleet", "public-cars", "--root", str(bogus))
    assert "fieldloop release root > root.json" in one_error_line(result)


def test_provisioning_a_device_again_as_another_needs_replace(tmp_path: Path, root: Path) -> None:
    args = ("provision", "--device", "car-1", "--root", str(root))
    assert agent(tmp_path, *args, "--fleet", "public-cars").exit_code == 0
    assert agent(tmp_path, *args, "--fleet", "public-cars").exit_code == 0  # the same again: idempotent
    moved = agent(tmp_path, *args, "--fleet", "acme-vans")
    assert "pass --replace" in one_error_line(moved)
    assert agent(tmp_path, *args, "--fleet", "acme-vans", "--replace").exit_code == 0


def test_run_refuses_a_device_never_provisioned_or_provisioned_for_another_fleet(tmp_path: Path, root: Path) -> None:
    never = agent(tmp_path, "run", "--device", "ghost", "--fleet", "public-cars", "--once")
    assert "agent provision" in one_error_line(never)
    agent(tmp_path, "provision", "--device", "car-1", "--fleet", "public-cars", "--root", str(root))
    other = agent(tmp_path, "run", "--device", "car-1", "--fleet", "acme-vans", "--once")
    assert "provisioned as car-1 in fleet public-cars" in one_error_line(other)


def test_a_second_agent_on_a_running_device_is_refused(tmp_path: Path, root: Path) -> None:
    from actuation.agent import DeviceDir

    agent(tmp_path, "provision", "--device", "car-1", "--fleet", "public-cars", "--root", str(root))
    with DeviceDir(tmp_path / "home" / "devices" / "car-1").lock():
        second = agent(tmp_path, "run", "--device", "car-1", "--fleet", "public-cars", "--once")
    assert f"another agent runs the device in {tmp_path / 'home' / 'devices' / 'car-1'} (pid" in one_error_line(second)
