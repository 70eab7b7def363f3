"""Every DAG file parses without import errors and follows the project's DAG rules.

The DagBag is built in a subprocess with a throw-away AIRFLOW_HOME, so the test needs no
running Airflow and leaves no state behind. It also proves parsing stays light: no
PySpark, torch, MLflow or Kafka client is imported at parse time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fieldloop.layout import DAGS_DIR

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("pyspark", "torch", "mlflow", "kafka", "deltalake") if m in sys.modules)
dags = {}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {
        "file": dag.fileloc,
        "tags": sorted(dag.tags),
        "catchup": dag.catchup,
        "tz_aware": dag.start_date is not None and dag.start_date.tzinfo is not None,
        "doc_md": bool(dag.doc_md),
        "retries": sorted({t.retries for t in dag.tasks}),
    }
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags, "heavy": heavy}))
"""


def test_dag_folder_parses_cleanly_and_follows_the_rules(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS_DIR)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    assert report["errors"] == {}
    assert report["heavy"] == [], "heavy modules imported at parse time"
    files = {p.stem for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_")}
    assert set(report["dags"]) == files  # one DAG per file, file name = dag_id
    for dag_id, dag in report["dags"].items():
        assert Path(dag["file"]).stem == dag_id
        assert "fieldloop" in dag["tags"], dag_id
        assert dag["catchup"] is False, dag_id
        assert dag["tz_aware"], dag_id
        assert dag["doc_md"], dag_id
        assert all(2 <= r <= 4 for r in dag["retries"]), (dag_id, dag["retries"])
