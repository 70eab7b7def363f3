"""A device's install: ``pip install fieldloop[edge]``, pinned by the lock, runs the SDK and the
edge agent against a real broker.

The venv is built from this checkout with the lock as constraints, so it holds exactly
the versions the full install holds, minus everything the cloud side needs. The SDK in it
sends to the session's broker; a plain consumer in the test reads the records back. The
agent in it updates from the test's release repository behind a real HTTP server, runs its
model and sends its telemetry to the broker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from fieldloop.contracts import packaged_contracts_dir
from fieldloop.layout import PROJECT_ROOT
from fieldloop.wire import decode, default_registry
from tests.kafka_topics import read_all
from tests.tuf_repository import ReleaseRepository, tiny_model

LOCK = PROJECT_ROOT / "infra" / "requirements.lock"
# numpy and onnxruntime are the edge agent's (inference), tuf and securesystemslib its updates'
CLOUD = ("pyspark", "delta-spark", "deltalake", "torch", "mlflow", "apache-airflow", "pandas", "pyarrow", "onnx")
AGENT = ("numpy", "onnxruntime", "tuf", "securesystemslib")
RECORDS = 20

DEVICE = r"""
import json, sys
from pathlib import Path

from fieldloop.contracts import load_contracts
from ingestion import EdgeProducer, EdgeProducerConfig, RefusedError

contracts_dir, bootstrap, spool = sys.argv[1:4]
config = EdgeProducerConfig(bootstrap_servers=bootstrap, spool_dir=Path(spool))
record = {"device_id": "edge-dev-1", "model_name": "fieldloop.vehicle-longitudinal", "model_version": "3",
          "latency_ms": 1.5, "ood_score": 0.25, "disagreement": 0.0, "intervention": False}
with EdgeProducer(config, load_contracts(Path(contracts_dir))) as device:
    seqs = [device.send("fleet-telemetry", "edge-dev-1", {**record, "ts": 1_700_000_000_000 + i}) for i in range(20)]
    try:
        device.send("fleet-telemetry", "edge-dev-1", {**record, "ts": 1, "latency_ms": float("nan")})
        refused = None
    except RefusedError as e:
        refused = e.reason
    flushed = device.flush(30)
heavy = sorted(m for m in ("pyspark", "torch", "mlflow", "airflow", "deltalake", "numpy", "pandas") if m in sys.modules)
print(json.dumps({"seqs": seqs, "refused": refused, "flushed": flushed, "heavy": heavy}))
"""


def du(path: Path) -> int:
    """Bytes on disk under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("edge")
    venv = root / "venv"
    # build from a copy: setuptools leaves build/ in the tree it builds
    source = root / "fieldloop"
    ignore = shutil.ignore_patterns(".git", ".venv", ".fieldloop", "build", "*.egg-info", "__pycache__")
    shutil.copytree(PROJECT_ROOT, source, ignore=ignore)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    proc = subprocess.run([*pip, "-c", str(LOCK), f"{source}[edge]"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return venv


def test_the_edge_install_brings_the_sdk_and_nothing_of_the_cloud_side(edge_venv: Path) -> None:
    listed = subprocess.run(
        [str(edge_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert not set(CLOUD) & set(installed), sorted(set(CLOUD) & set(installed))
    pinned = dict(line.split("==", 1) for line in LOCK.read_text().splitlines() if "==" in line)
    pinned = {k.lower(): v for k, v in pinned.items()}
    assert set(AGENT) <= set(installed), sorted(set(AGENT) - set(installed))
    for name in ("kafka-python", "fastavro", "pydantic", *AGENT):
        assert installed[name] == pinned[name], name  # the lock's versions, not the newest

    full = Path(sys.prefix)
    edge_mib, full_mib = du(edge_venv) / 2**20, du(full) / 2**20
    print(f"edge venv {edge_mib:.0f} MiB, full venv {full_mib:.0f} MiB ({edge_mib / full_mib:.1%})")
    assert edge_mib < full_mib / 10


def test_the_edge_install_sends_through_the_sdk_to_a_real_broker(
    edge_venv: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"fieldloop.test.edge-{uuid.uuid4().hex[:8]}.telemetry.v1"
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    telemetry = (packaged_contracts_dir() / "fleet-telemetry.toml").read_text()
    (contracts / "fleet-telemetry.toml").write_text(
        telemetry.replace('topic = "fieldloop.fleet.telemetry.v1"', f'topic = "{topic}"')
    )
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = subprocess.run(
        [str(edge_venv / "bin" / "python"), "-c", DEVICE, str(contracts), kafka_bootstrap, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,  # not the checkout: the installed copy
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["flushed"] is True
    assert out["refused"] == "non-finite"  # refused at the device, before the spool

    records = read_all(kafka_bootstrap, topic)
    assert len(records) == RECORDS
    headers = [dict(r.headers) for r in records]
    assert [int(h["fieldloop.seq"]) for h in headers] == out["seqs"]
    assert {h["fieldloop.contract"] for h in headers} == {b"fleet-telemetry"}


def test_the_edge_install_says_which_commands_need_the_cloud_install(edge_venv: Path, tmp_path: Path) -> None:
    fieldloop = str(edge_venv / "bin" / "fieldloop")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    assert subprocess.run([fieldloop, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path).returncode == 0
    proc = subprocess.run(
        [fieldloop, "train", "--task", "plant-anomaly"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 1
    assert "which this install lacks" in proc.stderr and "fieldloop[cloud]" in proc.stderr
    assert "Traceback" not in proc.stderr


AGENT_IMPORTS = r"""
import json, sys
import actuation.agent
from actuation.agent import Agent
heavy = sorted(m for m in ("pyspark", "torch", "mlflow", "airflow", "deltalake", "pandas", "pyarrow", "onnx")
               if m in sys.modules)
print(json.dumps({"heavy": heavy}))
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def release_site(tmp_path: Path) -> Iterator[tuple[ReleaseRepository, str]]:
    """The test's release repository (version 1 for public-cars) behind a real HTTP server."""
    repo = ReleaseRepository(tmp_path / "cloud")
    repo.release("public-cars", 1, tiny_model())
    repo.write(tmp_path / "site")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield repo, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_edge_install_runs_the_agent_from_update_to_telemetry(
    edge_venv: Path, kafka_bootstrap: str, release_site: tuple[ReleaseRepository, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"FIELDLOOP_HOME": str(tmp_path / "home"), "FIELDLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap})
    python, fieldloop = str(edge_venv / "bin" / "python"), str(edge_venv / "bin" / "fieldloop")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    imported = run(python, "-c", AGENT_IMPORTS)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert json.loads(imported.stdout)["heavy"] == []
    assert run(fieldloop, "agent", "--help").returncode == 0

    repo, url = release_site
    (tmp_path / "root.json").write_bytes(repo.root_bytes)
    device = f"edge-agent-{uuid.uuid4().hex[:8]}"
    provisioned = run(fieldloop, "agent", "provision", "--device", device, "--fleet", "public-cars",
                      "--root", "root.json", "--repo", url, "--json")  # fmt: skip
    assert provisioned.returncode == 0, provisioned.stderr[-3000:]
    topic = "fieldloop.fleet.telemetry.v1"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    ran = run(fieldloop, "agent", "run", "--device", device, "--fleet", "public-cars", "--once", "--frames", "20",
              "--flush-seconds", "30", "--json")  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads(ran.stdout)
    assert summary["active"] == "fieldloop.vehicle-longitudinal@1" and summary["telemetry_delivered"] is True
    records = [
        decode(r.value, default_registry()) for r in read_all(kafka_bootstrap, topic) if r.key == device.encode()
    ]
    assert len(records) == 20 and {(r["model_version"], r["update_state"]) for r in records} == {("1", "updated")}
