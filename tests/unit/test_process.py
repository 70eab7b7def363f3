"""Pid-file bookkeeping: we stop what we started, with its children, and nothing else."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from fieldloop.stack.process import ManagedProcess, port_in_use

# A parent that forks a child and both sleep: stopping the parent must stop the child.
PARENT = (
    "import subprocess, sys, time;"
    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
    "print(c.pid, flush=True); time.sleep(600)"
)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_start_status_and_stop_with_children(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", tmp_path / "run", tmp_path / "logs" / "sleeper.log")
    assert proc.pid() is None and not proc.exited()
    pid = proc.start([sys.executable, "-c", PARENT], os.environ)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not proc.log_file.read_text().strip().split("\n")[-1].isdigit():
        time.sleep(0.1)
    child = int(proc.log_file.read_text().strip().split("\n")[-1])
    assert proc.pid() == pid and _alive(child)
    assert proc.stop(timeout=5) is True
    assert not _alive(pid) and not _alive(child)
    assert not proc.pid_file.exists()
    assert proc.stop() is False  # idempotent


def test_dead_process_is_reported_not_signalled(tmp_path: Path) -> None:
    proc = ManagedProcess("short", tmp_path / "run", tmp_path / "short.log")
    proc.start([sys.executable, "-c", "pass"], os.environ)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.pid() is not None:
        time.sleep(0.05)
    assert proc.exited() and proc.recorded_pid() is not None


def test_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    proc = ManagedProcess("stranger", tmp_path / "run", tmp_path / "x.log")
    proc.run_dir.mkdir(parents=True)
    # our own pid with a different start time: a pid reused by an unrelated process
    proc.pid_file.write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1}))
    assert proc.pid() is None
    assert proc.stop() is False  # and we did not signal ourselves


def test_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)
