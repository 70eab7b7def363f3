"""Integration fixtures beyond the session stack.

``private_kafka`` is a broker of the test's own (:mod:`tests.stacks`), for tests that stop,
kill or restart the broker without disturbing the session's stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldloop.config import FieldloopConfig
from tests.stacks import PrivateKafka, started_private_kafka
from tests.tiers import mark_tier


@pytest.fixture()
def private_kafka(tmp_path: Path, cfg: FieldloopConfig) -> Iterator[PrivateKafka]:
    with started_private_kafka(tmp_path, cfg) as broker:
        yield broker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this tier is marked ``integration``."""
    mark_tier(items, Path(__file__).parent, "integration")
