"""Where the project's own files are: the checkout fieldloop runs from.

fieldloop is operated from its repository (``pip install -e .``): the stack manager
needs ``infra/`` (the Maven pom, broker configs) and Airflow needs ``dags/``.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
INFRA_DIR = PROJECT_ROOT / "infra"
DAGS_DIR = PROJECT_ROOT / "dags"
POM = INFRA_DIR / "pom.xml"
