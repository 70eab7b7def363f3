"""`fieldloop stack up | down | status` as an operator uses them, on a private home and ports.

These run the real CLI against real Kafka and MLflow processes, apart from the session's
stack, so killing and blocking things here never disturbs the other tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldloop.config import FieldloopConfig
from tests.stacks import private_home_env

FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FIELDLOOP, *args], env=env or self.env, capture_output=True, text=True, timeout=300)

    def status(self, only: str) -> tuple[int, dict[str, dict]]:
        proc = self("stack", "status", "--only", only, "--json")
        return proc.returncode, {c["name"]: c for c in json.loads(proc.stdout)}


@pytest.fixture()
def cli(tmp_path: Path, cfg: FieldloopConfig) -> Iterator[Cli]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDLOOP_", "MLFLOW_"))}
    env.update(private_home_env(tmp_path / "home", cfg))
    runner = Cli(env)
    yield runner
    runner("stack", "down")


def _pid(status: dict[str, dict], component: str) -> int | None:
    return status[component]["processes"][0]["pid"]


def test_up_is_idempotent_and_down_stops_what_up_started(cli: Cli) -> None:
    first = cli("stack", "up", "--only", "mlflow")
    assert first.returncode == 0, first.stderr
    rc, status = cli.status("mlflow")
    assert rc == 0 and status["mlflow"]["healthy"]
    pid = _pid(status, "mlflow")

    again = cli("stack", "up", "--only", "mlflow")
    assert again.returncode == 0 and "mlflow: already running" in again.stdout
    assert _pid(cli.status("mlflow")[1], "mlflow") == pid

    down = cli("stack", "down", "--only", "mlflow")
    assert down.returncode == 0 and "mlflow: stopped" in down.stdout
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    rc, status = cli.status("mlflow")
    assert rc == 3 and status["mlflow"]["processes"][0]["state"] == "stopped"
    assert "was not running" in cli("stack", "down", "--only", "mlflow").stdout


def test_status_reports_a_killed_component_and_up_restarts_it(cli: Cli) -> None:
    assert cli("stack", "up", "--only", "mlflow").returncode == 0
    pid = _pid(cli.status("mlflow")[1], "mlflow")
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cli.status("mlflow")[1]["mlflow"]["processes"][0]["state"] != "dead":
        time.sleep(0.2)

    rc, status = cli.status("mlflow")
    assert rc == 3
    assert status["mlflow"]["processes"][0]["state"] == "dead"
    assert "exited" in status["mlflow"]["detail"] and "fieldloop stack up" in status["mlflow"]["detail"]

    restarted = cli("stack", "up", "--only", "mlflow")
    assert restarted.returncode == 0, restarted.stderr
    rc, status = cli.status("mlflow")
    assert rc == 0 and _pid(status, "mlflow") not in (None, pid)


def test_taken_port_is_one_clear_line_and_up_leaves_nothing_running(cli: Cli) -> None:
    port = int(cli.env["FIELDLOOP_MLFLOW_PORT"])
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        proc = cli("stack", "up", "--only", "kafka,mlflow")
    assert proc.returncode == 1
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert f"port {port} on 127.0.0.1 is taken" in error_lines[0]
    assert "FIELDLOOP_MLFLOW_PORT" in error_lines[0]
    # Kafka came up first in this call; it must have been stopped again.
    assert "kafka: ready" in proc.stdout
    rc, status = cli.status("kafka,mlflow")
    assert rc == 3
    assert all(p["state"] == "stopped" for c in status.values() for p in c["processes"])


def test_missing_java_is_one_clear_line(cli: Cli) -> None:
    env = {**cli.env, "PATH": str(Path(sys.executable).parent)}
    env.pop("JAVA_HOME", None)
    proc = cli("stack", "up", "--only", "kafka", env=env)
    assert proc.returncode == 1
    assert "Java 17+ not found" in proc.stderr and "JAVA_HOME" in proc.stderr
    assert cli.status("kafka")[1]["kafka"]["processes"][0]["state"] == "stopped"
