"""The agent killed (SIGKILL) mid-download and mid-activation, then restarted.

A real ``fieldloop agent run`` process fetches from a real HTTP server (the test's
repository on disk behind ``http.server``); its hidden ``--pause-at`` stops it at the step,
the test kills it there. Restarted, the device runs its last known good and completes the
update; the state file is always either the old one or the new one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from actuation.agent import DeviceConfig, provision
from tests.tuf_repository import ReleaseRepository, tiny_model

MODEL = "fieldloop.vehicle-longitudinal"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[ReleaseRepository, Path, str]]:
    repo = ReleaseRepository(tmp_path / "cloud")
    repo.release("public-cars", 1, tiny_model())
    site = tmp_path / "site"
    repo.write(site)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield repo, site, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_cmd(home: Path, *args: str, pause: str | None = None) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "FIELDLOOP_HOME": str(home), "FIELDLOOP_KAFKA_BOOTSTRAP": f"127.0.0.1:{_free_port()}"}
    cmd = [sys.executable, "-c", "from fieldloop.cli.main import main; main()", "agent", *args]
    if pause:
        cmd += ["--pause-at", pause]
    return cmd, env


def run_once(home: Path) -> dict:
    cmd, env = agent_cmd(home, "run", "--device", "car-1", "--fleet", "public-cars", "--once", "--frames", "12",
                         "--flush-seconds", "0.5", "--json")  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def kill_at(home: Path, device: Path, step: str) -> None:
    cmd, env = agent_cmd(home, "run", "--device", "car-1", "--fleet", "public-cars", "--once", pause=step)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = device / f"paused-at-{step}"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"the agent never reached {step}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()
    marker.unlink()


def active_in_state(device: Path) -> str:
    state = json.loads((device / "state.json").read_text())  # parses: never a torn write
    release = state["slots"][state["active"]]["release"]
    return f"{release['model']}@{release['version']}"


def test_killed_mid_download_and_mid_activation_the_device_recovers(
    served: tuple[ReleaseRepository, Path, str], tmp_path: Path
) -> None:
    repo, site, url = served
    home = tmp_path / "home"
    device = home / "devices" / "car-1"
    config = DeviceConfig(device_id="car-1", fleet="public-cars", repo_url=url, task="vehicle-longitudinal")
    provision(device, config, repo.root_bytes)
    assert run_once(home)["active"] == f"{MODEL}@1"

    # killed while the new model is being downloaded: the partial file is never used
    repo.release("public-cars", 2, tiny_model(accel_gain=0.5))
    repo.write(site)
    kill_at(home, device, "download")
    assert active_in_state(device) == f"{MODEL}@1"
    parts = list((device / "downloads").glob("*.part"))
    assert parts and all("%402." in p.name for p in parts)  # the v2 model, still a .part
    summary = run_once(home)
    assert summary["active"] == f"{MODEL}@2" and summary["update"]["state"] == "updated"
    assert summary["window"]["inferences"] == 12

    # killed between writing the new state and switching to it: the old state stands
    repo.release("public-cars", 3, tiny_model(accel_gain=0.25))
    repo.write(site)
    kill_at(home, device, "activation")
    assert active_in_state(device) == f"{MODEL}@2"
    assert (device / "state.json.tmp").exists()  # the new state, written but not switched to
    cmd, env = agent_cmd(home, "status", "--device", "car-1", "--json")
    status = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert status["state"]["active"] == "b"
    summary = run_once(home)
    assert summary["active"] == f"{MODEL}@3" and active_in_state(device) == f"{MODEL}@3"
    assert summary["slots"] == {"a": f"{MODEL}@3", "b": f"{MODEL}@2"}  # v2 kept as the last known good


def test_sigterm_ends_a_running_agent_with_its_summary(
    served: tuple[ReleaseRepository, Path, str], tmp_path: Path
) -> None:
    repo, _, url = served
    home = tmp_path / "home"
    device = home / "devices" / "car-1"
    config = DeviceConfig(device_id="car-1", fleet="public-cars", repo_url=url, task="vehicle-longitudinal")
    provision(device, config, repo.root_bytes)
    cmd, env = agent_cmd(home, "run", "--device", "car-1", "--fleet", "public-cars", "--seconds", "120",
                         "--update-every", "1", "--flush-seconds", "0.5", "--json")  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (device / "status.json").exists():  # written when the first periodic cycle closes a window
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["active"] == f"{MODEL}@1" and summary["window"]["inferences"] > 0
