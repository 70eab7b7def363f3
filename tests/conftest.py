"""Shared fixtures: the effective config, and the real stack for the tiers that need it.

Real-service fixtures are session-scoped, wait for readiness and stop only what they
started. To reuse services already running elsewhere, set ``FIELDLOOP_KAFKA_BOOTSTRAP``
(Kafka) or ``MLFLOW_TRACKING_URI`` (MLflow): the fixture then starts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fieldloop.config import FieldloopConfig, load_config


@pytest.fixture(scope="session")
def cfg() -> FieldloopConfig:
    return load_config()


@contextmanager
def running(cfg: FieldloopConfig, name: str) -> Iterator[None]:
    """Component ``name`` is up inside the block; stopped after it if we started it."""
    from fieldloop.stack import Stack

    stack = Stack(cfg, only=[name])
    before = stack.status()[0]
    stack.up()
    try:
        yield
    finally:
        if not (before.running and before.health.ok):
            stack.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(cfg: FieldloopConfig) -> Iterator[str]:
    if os.environ.get("FIELDLOOP_KAFKA_BOOTSTRAP"):
        yield cfg.kafka.bootstrap_servers
        return
    with running(cfg, "kafka"):
        yield cfg.kafka.bootstrap_servers


@pytest.fixture(scope="session")
def mlflow_uri(cfg: FieldloopConfig) -> Iterator[str]:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        yield os.environ["MLFLOW_TRACKING_URI"]
        return
    with running(cfg, "mlflow"):
        yield cfg.mlflow.uri


@pytest.fixture(scope="session")
def airflow(cfg: FieldloopConfig, kafka_bootstrap: str, mlflow_uri: str) -> Iterator[object]:
    """Airflow, with Kafka and MLflow up too (its DAGs talk to them)."""
    from fieldloop.stack.components import AirflowComponent

    with running(cfg, "airflow"):
        yield AirflowComponent(cfg)


@pytest.fixture(scope="session")
def release_server(cfg: FieldloopConfig) -> Iterator[str]:
    """The release repository's static server (nginx), stopped after the session if started here."""
    with running(cfg, "release"):
        yield cfg.release.base_url


@pytest.fixture(scope="session")
def spark(cfg: FieldloopConfig):
    """A session-scoped local SparkSession with Delta, built by the kernel's factory."""
    from fieldloop.spark import spark_session

    session = spark_session(cfg, "fieldloop-tests", {"spark.sql.shuffle.partitions": "2", "spark.master": "local[2]"})
    yield session
    session.stop()
