"""Each tier's conftest marks the tests under its folder, so ``-m`` selects whole tiers.

``pytest -m unit`` (no services), ``-m component`` (local Spark), ``-m integration`` (the
real stack), ``-m e2e`` (the whole loop); ``-m "not integration and not e2e"`` runs what
needs no broker, MLflow or Airflow.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_tier(items: list[pytest.Item], folder: Path, tier: str) -> None:
    """Add the marker ``tier`` to every collected test that lives under ``folder``."""
    marker = getattr(pytest.mark, tier)
    for item in items:
        if folder in item.path.parents:
            item.add_marker(marker)
