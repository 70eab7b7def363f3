"""Stacks of a test's own: a broker or an MLflow server with its own home and loopback ports.

For tests that stop, kill or restart a component, or that must not meet the session
stack's models, without disturbing the session's stack.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fieldloop.config import FieldloopConfig, load_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivateKafka:
    cfg: FieldloopConfig

    @property
    def bootstrap(self) -> str:
        return self.cfg.kafka.bootstrap_servers

    def _stack(self):
        from fieldloop.stack import Stack

        return Stack(self.cfg, only=["kafka"])

    def stop(self) -> None:
        self._stack().down()

    def start(self) -> None:
        self._stack().up()


def private_home_env(home: Path, cfg: FieldloopConfig) -> dict[str, str]:
    """FIELDLOOP_* settings for a stack of its own: ``home`` (sharing the resolved jars) and free ports."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "jars").symlink_to(cfg.jars_dir)  # resolved once by the session; no second Maven run
    return {
        "FIELDLOOP_HOME": str(home),
        "FIELDLOOP_KAFKA_PORT": str(free_port()),
        "FIELDLOOP_KAFKA_CONTROLLER_PORT": str(free_port()),
        "FIELDLOOP_MLFLOW_PORT": str(free_port()),
        "FIELDLOOP_AIRFLOW_PORT": str(free_port()),
        "FIELDLOOP_RELEASE_PORT": str(free_port()),
    }


@contextmanager
def started_private_kafka(tmp_path: Path, cfg: FieldloopConfig) -> Iterator[PrivateKafka]:
    """A broker of its own under ``tmp_path``, stopped on exit."""
    private = load_config(private_home_env(tmp_path / "kafka-home", cfg))
    broker = PrivateKafka(private)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def started_private_mlflow(
    home: Path, cfg: FieldloopConfig, extra: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """An MLflow server of its own (home under ``home``, free port); yields the FIELDLOOP_* settings to reach it.

    Model names, aliases and frozen holdouts live in the tracking server, so tests that
    register models use their own and never meet the demo's.
    """
    from fieldloop.stack import Stack

    values = {**private_home_env(home, cfg), **(extra or {})}
    stack = Stack(load_config(values), only=["mlflow"])
    stack.up()
    try:
        yield values
    finally:
        stack.down()


@contextmanager
def started_moto(log_dir: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port (its log in ``log_dir``); yields its URL, stopped on exit."""
    import subprocess
    import sys
    import time

    import pytest
    import requests

    port = free_port()
    log = log_dir / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
