"""The edge SDK's public face: what a device imports, and that importing it stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ingestion

HEAVY = ("pyspark", "torch", "airflow", "mlflow", "deltalake", "numpy", "pandas", "pyarrow", "click", "rich")


def test_the_device_imports_the_sdk_from_the_package_root() -> None:
    assert sorted(ingestion.__all__) == [
        "EdgeProducer",
        "EdgeProducerConfig",
        "IngestionError",
        "ProducerStats",
        "RefusedError",
        "SpoolBusyError",
        "SpoolCorruptError",
        "SpoolFullError",
    ]
    for name in ingestion.__all__:
        assert getattr(ingestion, name).__module__ in ("ingestion.producer", "ingestion.errors"), name


def test_importing_the_sdk_loads_nothing_a_device_does_not_install() -> None:
    script = (
        "import json, sys\n"
        "from ingestion import EdgeProducer, EdgeProducerConfig, RefusedError, SpoolFullError\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
