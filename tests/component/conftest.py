"""A session-scoped local SparkSession with Delta, built by the kernel's factory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from fieldloop.config import FieldloopConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark(cfg: FieldloopConfig) -> Iterator[SparkSession]:
    from fieldloop.spark import spark_session

    session = spark_session(cfg, "fieldloop-tests", {"spark.sql.shuffle.partitions": "2", "spark.master": "local[2]"})
    yield session
    session.stop()
