"""The unit tier: no services, no Spark; every test here is marked ``unit``."""

from __future__ import annotations

from pathlib import Path

import pytest

from actuation.contract import load_fleets
from actuation.release.repository import Repository
from actuation.signing import KeyStore
from tests.release_fixtures import Clock
from tests.tiers import mark_tier


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_tier(items, Path(__file__).parent, "unit")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repo(tmp_path: Path, clock: Clock) -> Repository:
    """A release repository on disk, initialized, signing with this test's own keys at ``clock``'s time."""
    repo = Repository(tmp_path / "release", KeyStore(tmp_path / "home"), load_fleets(), clock=clock)
    repo.init()
    return repo
