"""The e2e tier: the whole loop on the real stack; every test here is marked ``e2e``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiers import mark_tier


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_tier(items, Path(__file__).parent, "e2e")
