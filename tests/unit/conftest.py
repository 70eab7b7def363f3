"""The unit tier: no services, no Spark; every test here is marked ``unit``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiers import mark_tier


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_tier(items, Path(__file__).parent, "unit")
