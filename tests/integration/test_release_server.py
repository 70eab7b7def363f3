"""The release repository's server (nginx from `fieldloop stack up`), as an operator and a device meet it.

A private home and port (tests.stacks), so starting and stopping it never touches the
session's stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from fieldloop.config import FieldloopConfig
from tests.stacks import private_home_env

FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


@pytest.fixture()
def env(tmp_path: Path, cfg: FieldloopConfig):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDLOOP_", "MLFLOW_"))}
    env.update(private_home_env(tmp_path / "home", cfg))
    yield env
    subprocess.run([FIELDLOOP, "stack", "down", "--only", "release"], env=env, capture_output=True, timeout=60)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FIELDLOOP, *args], env=env, capture_output=True, text=True, timeout=120)


def test_stack_up_serves_the_repository_files_on_loopback_and_down_stops_it(env: dict[str, str]) -> None:
    up = _cli(env, "stack", "up", "--only", "release")
    assert up.returncode == 0, up.stderr
    status = json.loads(_cli(env, "stack", "status", "--only", "release", "--json").stdout)[0]
    assert status["healthy"] and "release init" in status["detail"]
    pid = status["processes"][0]["pid"]
    url = status["url"]

    served = Path(env["FIELDLOOP_HOME"]) / "release"
    (served / "metadata" / "1.root.json").write_text('{"signed": {}}')
    (served / "targets" / "cars").mkdir(parents=True)
    (served / "targets" / "cars" / "abc.model.onnx").write_bytes(b"\x00onnx")
    assert requests.get(f"{url}/metadata/1.root.json", timeout=5).json() == {"signed": {}}
    assert requests.get(f"{url}/targets/cars/abc.model.onnx", timeout=5).content == b"\x00onnx"
    # files only: no directory listing, nothing outside /metadata/ and /targets/, read-only
    for path in ("/targets/cars/", "/targets/", "/metadata/", "/", "/run/release-nginx.conf"):
        assert requests.get(f"{url}{path}", timeout=5).status_code == 404, path
    assert requests.put(f"{url}/metadata/1.root.json", data=b"x", timeout=5).status_code == 403

    listening = {
        c.laddr.ip
        for p in [psutil.Process(pid), *psutil.Process(pid).children()]
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {"127.0.0.1"}

    down = _cli(env, "stack", "down", "--only", "release")
    assert "release: stopped" in down.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)
