"""The components of the embedded stack: how each starts, proves ready and is found.

Each :class:`Component` owns one or more :class:`ManagedProcess` es, the loopback ports
it listens on and a health check that proves it is usable, not merely alive:

* Kafka: a client creates and lists a topic;
* MLflow: ``/health`` answers and the tracking API lists experiments;
* Airflow: the API reports every component healthy and every file in ``dags/`` is
  parsed (as a DAG or as an import error);
* release: nginx (Debian's ``nginx`` package) answers on loopback and serves the release
  repository's directory (``/metadata/``, ``/targets/``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import string
import subprocess
import sys
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import requests

from fieldloop import jvm
from fieldloop.assets import WATCHER_GROUPS, watcher_consumer
from fieldloop.config import FieldloopConfig
from fieldloop.errors import StackError
from fieldloop.layout import DAGS_DIR, INFRA_DIR
from fieldloop.stack.process import ManagedProcess

logger = logging.getLogger(__name__)

HEALTH_TOPIC = "fieldloop.stack.health"


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


def _venv_bin(name: str) -> str:
    """A console script installed next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class Component(ABC):
    """One service of the stack."""

    name: str
    ready_timeout: float = 120.0

    def __init__(self, cfg: FieldloopConfig) -> None:
        self.cfg = cfg

    def _process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name, self.cfg.run_dir, self.cfg.logs_dir / f"{name}.log")

    @property
    @abstractmethod
    def processes(self) -> list[ManagedProcess]:
        """The processes this component runs, in start order."""

    @property
    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Config key -> loopback port this component listens on."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where a person or client reaches it."""

    def preflight(self) -> None:  # noqa: B027 - optional hook: most components need nothing checked
        """Check what the start needs (Java, jars, files); raise StackError naming what to do."""

    @abstractmethod
    def start(self) -> None:
        """Start every process; readiness is awaited by the manager."""

    @abstractmethod
    def health(self) -> Health:
        """Whether the component is usable now."""

    def notes(self) -> list[str]:
        """Extra lines for `stack status` (e.g. where the admin login is)."""
        return []


class KafkaComponent(Component):
    """An Apache Kafka 4.x broker in KRaft combined mode (broker + controller in one JVM)."""

    name = "kafka"
    ready_timeout = 90.0

    @property
    def data_dir(self) -> Path:
        return self.cfg.home / "kafka" / "data"

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self._process("kafka")]

    @property
    def ports(self) -> dict[str, int]:
        return {"kafka.port": self.cfg.kafka.port, "kafka.controller_port": self.cfg.kafka.controller_port}

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.cfg.kafka.port}"

    def preflight(self) -> None:
        jvm.find_java()
        jvm.jars(self.cfg.jars_dir, "kafka")

    def _java(self, main: str, *args: str, heap_mb: int) -> list[str]:
        classpath = str(self.cfg.jars_dir / "kafka" / "*")
        return [
            jvm.find_java(),
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.cfg.logs_dir / 'kafka'}",
            f"-Dlog4j2.configurationFile={INFRA_DIR / 'kafka' / 'log4j2.yaml'}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _write_properties(self) -> Path:
        template = string.Template((INFRA_DIR / "kafka" / "server.properties.template").read_text())
        props = self.cfg.home / "kafka" / "server.properties"
        props.parent.mkdir(parents=True, exist_ok=True)
        props.write_text(
            template.substitute(
                node_id=1,
                host="127.0.0.1",
                port=self.cfg.kafka.port,
                controller_port=self.cfg.kafka.controller_port,
                log_dirs=self.data_dir,
            )
        )
        return props

    def start(self) -> None:
        props = self._write_properties()
        if not (self.data_dir / "meta.properties").exists():
            # First start: format KRaft storage with a fresh cluster id.
            cluster_id = _kafka_cluster_id()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # The template declares a static single-voter quorum, so no --standalone is needed.
            fmt = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), heap_mb=256)
            proc = subprocess.run(fmt, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise StackError(
                    f"kafka: formatting storage in {self.data_dir} failed: {proc.stdout}{proc.stderr}".strip()
                )
        self.processes[0].start(self._java("kafka.Kafka", str(props), heap_mb=self.cfg.kafka.heap_mb), os.environ)

    def health(self) -> Health:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import KafkaError, TopicAlreadyExistsError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=f"127.0.0.1:{self.cfg.kafka.port}",
                request_timeout_ms=5000,
                client_id="fieldloop-stack-health",
            )
        except (KafkaError, OSError, ValueError) as e:
            return Health(False, f"no broker answers on 127.0.0.1:{self.cfg.kafka.port} ({type(e).__name__})")
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(HEALTH_TOPIC, 1, 1)])
            topics = admin.list_topics()
        except (KafkaError, OSError) as e:
            return Health(False, f"broker answers but cannot create/list topics ({type(e).__name__})")
        finally:
            admin.close()
        if HEALTH_TOPIC not in topics:
            return Health(False, "broker does not list the health topic yet")
        return Health(True, f"{len(topics)} topics")


def _kafka_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    One id in 64 would begin with "-", which kafka-storage's argument parser reads
    as an option ("argument --cluster-id/-t: expected one argument"); Kafka's own
    Uuid.randomUuid() redraws those, and so do we.
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class MlflowComponent(Component):
    """An MLflow tracking server: SQLite backend, local artifact store, one worker."""

    name = "mlflow"
    ready_timeout = 120.0

    @property
    def root(self) -> Path:
        return self.cfg.home / "mlflow"

    @property
    def artifacts(self) -> str:
        """Where the server stores artifacts: FIELDLOOP_MLFLOW_ARTIFACT_ROOT, else under its home."""
        return self.cfg.mlflow.artifact_root or str(self.root / "artifacts")

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self._process("mlflow")]

    @property
    def ports(self) -> dict[str, int]:
        return {"mlflow.port": self.cfg.mlflow.port}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.mlflow.port}"

    def start(self) -> None:
        destination = self.artifacts
        if "://" not in destination:
            Path(destination).mkdir(parents=True, exist_ok=True)
            destination = Path(destination).resolve().as_uri()
        argv = [
            _venv_bin("mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.cfg.mlflow.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            destination,
        ]
        env = dict(os.environ)
        # The job runner (huey workers) is for GenAI evaluation jobs we do not use;
        # without it the server starts in seconds at a fraction of the memory.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self.processes[0].start(argv, env, cwd=self.root)

    def health(self) -> Health:
        try:
            resp = requests.get(f"{self.url}/health", timeout=3)
            if resp.status_code != 200:
                return Health(False, f"/health answered {resp.status_code}")
            resp = requests.get(f"{self.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=5)
        except requests.RequestException as e:
            return Health(False, f"no answer on {self.url} ({type(e).__name__})")
        if resp.status_code != 200:
            return Health(False, f"tracking API answered {resp.status_code}")
        return Health(True, "tracking API answers")


class AirflowComponent(Component):
    """Airflow 3: api-server, scheduler, dag-processor and triggerer on SQLite + LocalExecutor."""

    name = "airflow"
    ready_timeout = 240.0
    # Start order; stop is the reverse, so the scheduler stops first (it waits for running
    # tasks, which still need the api-server's Execution API) and the api-server last.
    PARTS = ("api-server", "dag-processor", "triggerer", "scheduler")

    @property
    def home(self) -> Path:
        return self.cfg.airflow_home

    @property
    def secrets_file(self) -> Path:
        return self.home / "fieldloop-secrets.json"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self._process(f"airflow-{part}") for part in self.PARTS]

    @property
    def ports(self) -> dict[str, int]:
        return {"airflow.port": self.cfg.airflow.port}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.airflow.port}"

    def _secrets(self) -> dict[str, str]:
        """Keys every Airflow process must share; generated once, kept 0600 under AIRFLOW_HOME."""
        if self.secrets_file.exists():
            return json.loads(self.secrets_file.read_text())
        from cryptography.fernet import Fernet

        values = {
            "fernet_key": Fernet.generate_key().decode(),
            "jwt_secret": secrets.token_urlsafe(32),
            "secret_key": secrets.token_urlsafe(32),
        }
        self.home.mkdir(parents=True, exist_ok=True)
        self.secrets_file.touch(mode=0o600)
        self.secrets_file.write_text(json.dumps(values))
        return values

    def admin_password(self) -> str | None:
        try:
            return json.loads(self.passwords_file.read_text()).get(self.cfg.airflow.admin_user)
        except (FileNotFoundError, ValueError):
            return None

    def ensure_admin(self) -> str | None:
        """Create the admin login on first start; returns the password only when it was just made."""
        if self.admin_password():
            return None
        password = secrets.token_urlsafe(12)
        self.home.mkdir(parents=True, exist_ok=True)
        self.passwords_file.touch(mode=0o600)
        self.passwords_file.write_text(json.dumps({self.cfg.airflow.admin_user: password}))
        return password

    def env(self) -> dict[str, str]:
        """The environment of every Airflow process (and of `airflow` CLI calls)."""
        keys = self._secrets()
        port = self.cfg.airflow.port
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.cfg.airflow.parallelism),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(self.cfg.airflow.parallelism),
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.cfg.airflow.admin_user}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.cfg.logs_dir / "airflow"),
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
                "PYSPARK_PYTHON": sys.executable,
                "NO_PROXY": "*",
                # the broker the asset watchers read fleet telemetry and hard cases from (fieldloop.assets)
                **{
                    f"AIRFLOW_CONN_{connection.upper()}": json.dumps(
                        {"conn_type": "kafka", "extra": watcher_consumer(self.cfg.kafka.bootstrap_servers, group)}
                    )
                    for connection, group in WATCHER_GROUPS.items()
                },
            }
        )
        # Task processes read the fieldloop config the operator gave the stack.
        return env

    def preflight(self) -> None:
        if not DAGS_DIR.is_dir():
            raise StackError(f"airflow: DAG folder {DAGS_DIR} is missing; run from a fieldloop checkout")

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = self.env()
        airflow = _venv_bin("airflow")
        migrate = subprocess.run(
            [airflow, "db", "migrate"], env=env, cwd=self.home, capture_output=True, text=True, check=False
        )
        if migrate.returncode != 0:
            tail = "\n".join((migrate.stdout + migrate.stderr).splitlines()[-10:])
            raise StackError(f"airflow: `airflow db migrate` failed:\n{tail}")
        for part, proc in zip(self.PARTS, self.processes, strict=True):
            # --skip-serve-logs: task logs are read through the API; the log server would
            # otherwise listen on 0.0.0.0:8793/8794.
            extra = ["--skip-serve-logs"] if part in ("scheduler", "triggerer") else []
            proc.start([airflow, part, *extra], env, cwd=self.home)

    def token(self) -> str:
        """A JWT for the REST API, as the admin."""
        password = self.admin_password()
        resp = requests.post(
            f"{self.url}/auth/token", json={"username": self.cfg.airflow.admin_user, "password": password}, timeout=10
        )
        resp.raise_for_status()
        return resp.json()["access_token"]

    def api(self, path: str, token: str | None = None) -> dict:
        token = token or self.token()
        resp = requests.get(f"{self.url}/api/v2/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def health(self) -> Health:
        try:
            resp = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException as e:
            return Health(False, f"API not answering on {self.url} ({type(e).__name__})")
        if resp.status_code != 200:
            return Health(False, f"health endpoint answered {resp.status_code}")
        report = resp.json()
        unhealthy = [
            name for name, part in report.items() if isinstance(part, dict) and part.get("status") != "healthy"
        ]
        if unhealthy:
            return Health(False, f"not healthy yet: {', '.join(sorted(unhealthy))}")
        try:
            token = self.token()
            dags = {d["dag_id"] for d in self.api("dags?limit=1000", token)["dags"]}
            errors = self.api("importErrors?limit=1000", token)["import_errors"]
        except (requests.RequestException, KeyError, ValueError) as e:
            return Health(False, f"cannot list DAGs through the API ({type(e).__name__}: {e})")
        broken = {Path(e["filename"]).stem for e in errors}
        expected = {p.stem for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_")}
        missing = expected - dags - broken
        if missing:
            return Health(False, f"DAG files not parsed yet: {', '.join(sorted(missing))}")
        detail = f"{len(dags)} DAGs parsed"
        if broken:
            detail += f"; import errors in {', '.join(sorted(broken))} (see the UI's Import Errors)"
        return Health(True, detail)

    def notes(self) -> list[str]:
        if self.passwords_file.exists():
            return [f"admin login: user '{self.cfg.airflow.admin_user}', password in {self.passwords_file}"]
        return []


NGINX = "/usr/sbin/nginx"
NGINX_PACKAGE = "nginx"  # Debian's: the binary and nginx-common, nothing else (nginx-light adds a module)


class ReleaseComponent(Component):
    """nginx serving the release repository (TUF metadata and targets) on 127.0.0.1.

    The repository's files are built by ``fieldloop release`` under ``cfg.release_dir``;
    this only serves them, read-only: ``/metadata/<file>`` and ``/targets/<path>``, files
    only (no directory listing), GET and HEAD only. Production serves the same files
    from S3 behind a CDN.
    """

    name = "release"
    ready_timeout = 20.0

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self._process("release")]

    @property
    def ports(self) -> dict[str, int]:
        return {"release.port": self.cfg.release.port}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.release.port}"

    @property
    def conf_file(self) -> Path:
        return self.cfg.run_dir / "release-nginx.conf"

    def preflight(self) -> None:
        nginx_binary()

    def write_conf(self) -> Path:
        """nginx's config for this home and port (rewritten on every start)."""
        run_dir, logs_dir = self.cfg.run_dir, self.cfg.logs_dir
        served = self.cfg.release_dir
        for d in (run_dir / "release-nginx", logs_dir, served / "metadata", served / "targets"):
            d.mkdir(parents=True, exist_ok=True)
        # Started as root, nginx would switch its worker to `nobody`, which cannot read a home
        # under /root; the worker runs as the user who owns the repository, like every other
        # process of the stack. Not root, nginx ignores the directive, so it is left out.
        user_line = "user root root;" if os.geteuid() == 0 else ""
        values = {
            "run_dir": str(run_dir),
            "logs_dir": str(logs_dir),
            "user_line": user_line,
            "port": str(self.cfg.release.port),
            "release_dir": str(self.cfg.release_dir),
        }
        text = (INFRA_DIR / "nginx" / "release.conf.template").read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        self.conf_file.parent.mkdir(parents=True, exist_ok=True)
        self.conf_file.write_text(text)
        return self.conf_file

    def start(self) -> None:
        conf = self.write_conf()
        # -e: errors go to stderr (our log) from the first line, before the config is read;
        # -p: relative paths resolve under the run directory, never /etc/nginx.
        argv = [nginx_binary(), "-p", str(self.cfg.run_dir / "release-nginx"), "-e", "stderr", "-c", str(conf)]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise StackError(f"release: nginx refused its config {conf}:\n{check.stderr.strip()}")
        self.processes[0].start(argv, os.environ, cwd=self.cfg.run_dir)

    def health(self) -> Health:
        try:
            resp = requests.get(f"{self.url}/health", timeout=3)
            if resp.status_code != 200:
                return Health(False, f"/health answered {resp.status_code}")
            stamp = requests.get(f"{self.url}/metadata/timestamp.json", timeout=3)
        except requests.RequestException as e:
            return Health(False, f"no answer on {self.url} ({type(e).__name__})")
        if stamp.status_code == 404:
            return Health(True, "serving; the repository is empty (run `fieldloop release init`)")
        if stamp.status_code != 200:
            return Health(False, f"/metadata/timestamp.json answered {stamp.status_code}")
        try:
            version = stamp.json()["signed"]["version"]
        except (ValueError, KeyError, TypeError):
            return Health(False, "/metadata/timestamp.json is not TUF metadata")
        return Health(True, f"serving {self.cfg.release_dir} (timestamp v{version})")


def nginx_binary() -> str:
    """The nginx executable, or StackError saying what to install."""
    import shutil

    found = shutil.which("nginx") or (NGINX if os.access(NGINX, os.X_OK) else None)
    if found is None:
        raise StackError(
            f"release: nginx is not installed; install Debian's package with "
            f"`sudo apt-get install {NGINX_PACKAGE}` (or run `bash infra/dev.sh setup` as root), then run "
            "`fieldloop stack up` again"
        )
    return found


def components(cfg: FieldloopConfig) -> list[Component]:
    """The stack, in start order."""
    return [KafkaComponent(cfg), MlflowComponent(cfg), AirflowComponent(cfg), ReleaseComponent(cfg)]
