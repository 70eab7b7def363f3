"""Typed configuration, read once at the entry point and passed down.

Sources, later ones winning:

1. defaults below (an embedded single-machine stack, lake on local disk declared as a
   Tokyo site);
2. a TOML file: ``$FIELDLOOP_CONFIG`` if set, else ``./fieldloop.toml`` if present;
3. ``FIELDLOOP_*`` environment variables. A top-level field ``x`` is ``FIELDLOOP_X``;
   a field ``y`` of section ``s`` is ``FIELDLOOP_S_Y`` (``FIELDLOOP_KAFKA_BOOTSTRAP``,
   ``FIELDLOOP_SPARK_MASTER``, ``FIELDLOOP_MLFLOW_PORT``). Lists are comma-separated,
   mappings are JSON.

Unknown keys and invalid values raise :class:`~fieldloop.errors.ConfigError` naming the
key and its source before anything connects or starts. Library code never reads the
environment itself: it receives a :class:`FieldloopConfig`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from fieldloop.errors import ConfigError
from fieldloop.residency import is_region_name

ENV_PREFIX = "FIELDLOOP_"
CONFIG_FILE_ENV = "FIELDLOOP_CONFIG"
DEFAULT_CONFIG_FILE = "fieldloop.toml"
JAPAN_REGIONS = ("ap-northeast-1", "ap-northeast-3")

_SPARK_MASTER = re.compile(r"^(local(\[(\*|\d+)(,\d+)?\])?|spark://.+|yarn|k8s://.+|mesos://.+)$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class KafkaConfig(_Section):
    """Kafka: the embedded broker's ports and how clients reach a broker."""

    bootstrap: str | None = Field(None, description="host:port list clients connect to; default 127.0.0.1:<port>")
    port: int = Field(9092, ge=1, le=65535, description="client port of the embedded broker (TCP port)")
    controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port of the embedded broker")
    heap_mb: int = Field(512, ge=128, description="JVM heap of the embedded broker (MiB)")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="client security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (redacted in output)")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates (file path)")

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap_hosts(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{server}' is not host:port (e.g. 127.0.0.1:9092)")
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        return self

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap list clients should use."""
        return self.bootstrap or f"127.0.0.1:{self.port}"

    def client_options(self) -> dict[str, Any]:
        """kafka-python client settings: bootstrap and security (the password in clear: never log it)."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            options["sasl_plain_username"] = self.sasl_username
        if self.sasl_password is not None:
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            options["ssl_cafile"] = str(self.ssl_cafile)
        return options


class SparkConfig(_Section):
    """Spark: where jobs run and extra Spark conf."""

    master: str = Field("local[*]", description="Spark master URL (local[N], spark://, yarn, k8s://)")
    driver_memory: str = Field("2g", description="driver JVM heap (Spark size string, e.g. 2g)")
    shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions (count)")
    ui: bool = Field(False, description="start the Spark UI on 127.0.0.1")
    conf: dict[str, str] = Field(default_factory=dict, description="extra Spark conf, applied last")

    @field_validator("master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        if not _SPARK_MASTER.match(value):
            raise ValueError(
                f"'{value}' is not a Spark master URL (local[*], local[2], spark://host:7077, yarn, k8s://...)"
            )
        return value


class MlflowConfig(_Section):
    """MLflow tracking server (embedded) or the one to use."""

    port: int = Field(5000, ge=1, le=65535, description="port of the embedded tracking server")
    tracking_uri: str | None = Field(None, description="tracking server URL; default http://127.0.0.1:<port>")
    artifact_root: str | None = Field(
        None,
        description="where the tracking server stores artifacts (path or s3://); default <home>/mlflow/artifacts "
        "for the embedded server; set it with tracking_uri so training can check its residency",
    )

    @property
    def uri(self) -> str:
        """The tracking URI clients should use."""
        return self.tracking_uri or f"http://127.0.0.1:{self.port}"


class AirflowConfig(_Section):
    """Airflow 3 (embedded): api-server, scheduler, dag-processor, triggerer."""

    port: int = Field(8080, ge=1, le=65535, description="api-server port (UI and REST API)")
    admin_user: str = Field("admin", description="admin login created on first start")
    parallelism: int = Field(2, ge=1, description="task slots of the LocalExecutor (count)")
    home: Path | None = Field(None, description="AIRFLOW_HOME; default <home>/airflow")


class ReleaseConfig(_Section):
    """The release repository (TUF): where its files are built and where devices fetch them."""

    port: int = Field(8700, ge=1, le=65535, description="port of the embedded static server for the repository")
    url: str | None = Field(None, description="base URL devices fetch from; default http://127.0.0.1:<port>")
    dir: Path | None = Field(None, description="where the repository's files are built; default <home>/release")
    s3: str | None = Field(
        None, description="s3://bucket/prefix the repository is mirrored to after each change (production)"
    )

    @field_validator("s3")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("s3://") or len(value) <= len("s3://")):
            raise ValueError(f"'{value}' is not an s3://bucket/prefix URI")
        return value

    @property
    def base_url(self) -> str:
        """The repository's URL; ``/metadata/`` and ``/targets/`` are under it."""
        return (self.url or f"http://127.0.0.1:{self.port}").rstrip("/")


class S3Config(_Section):
    """S3 or an S3-compatible server for the lake and artifacts."""

    endpoint_url: str | None = Field(None, description="S3 endpoint for on-prem or test servers; default AWS")


class RefineConfig(_Section):
    """Refinement: pseudonym keys, privacy thresholds, quality gates, DP budgets."""

    key_source: str | None = Field(
        None,
        description="where pseudonym keys come from: file:<path>, env:<VAR> or aws-secretsmanager:<secret-id>; "
        "default file:<home>/secrets/pseudonym-keys.json (created with fresh keys on first use)",
    )
    k: int = Field(5, ge=2, description="k of k-anonymity on anonymized tables (distinct devices per class)")
    trip_trim_m: float = Field(
        200.0, ge=0, description="trimmed off each trip's start and end in anonymized tables (metres)"
    )
    trip_gap_s: int = Field(300, ge=1, description="a silence longer than this ends a trip (seconds)")
    max_failure_rate: float = Field(
        0.05, ge=0, le=1, description="share of rows failing quality rules that fails a run (fraction)"
    )
    dp_epsilon_per_month: float = Field(
        3.0, gt=0, description="DP budget per privacy unit and calendar month (epsilon)"
    )
    dp_lateness_minutes: int = Field(
        120, ge=0, description="a day's DP figures are released this long after the day closed (minutes)"
    )
    policies_dir: Path | None = Field(
        None, description="directory of privacy policy files, one per contract; default: the packaged ones"
    )

    @field_validator("key_source")
    @classmethod
    def _key_source(cls, value: str | None) -> str | None:
        if value is not None and value.split(":", 1)[0] not in ("file", "env", "aws-secretsmanager"):
            raise ValueError(f"'{value}': use file:<path>, env:<VAR> or aws-secretsmanager:<secret-id>")
        return value


class TrainConfig(_Section):
    """Training jobs: defaults of `fieldloop train` and the training DAG."""

    epochs: int = Field(12, ge=1, description="epochs for the teacher, then as many for the student (count)")
    seed: int = Field(42, ge=0, description="random seed; the same gold versions and seed give the same metrics")
    batch_size: int = Field(64, ge=1, description="rows per optimizer step, over all processes (count)")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate")
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of devices frozen as holdout on a model's first run (fraction)"
    )
    threads: int = Field(2, ge=1, description="CPU threads per training process (count)")
    hard_case_weight: int = Field(
        4,
        ge=1,
        description="times each training hard case counts per epoch, against once for an ordinary row (count)",
    )
    hard_case_holdout_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="share of the devices that met hard cases kept out of training to judge on (fraction)",
    )


class FieldloopConfig(_Section):
    """The whole effective configuration."""

    home: Path = Field(Path("~/.fieldloop"), description="state: logs, pids, broker data, jars, lake (directory)")
    lake_uri: str | None = Field(
        None, description="root of the Delta lake (path or s3a://bucket/prefix); default <home>/lake"
    )
    allowed_regions: list[str] = Field(
        list(JAPAN_REGIONS), description="regions data may be stored in (AWS region names)"
    )
    site_region: str = Field("ap-northeast-1", description="region declared for local-disk storage at this site")
    contracts_dir: Path | None = Field(None, description="directory of data contract files; default: the packaged ones")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    airflow: AirflowConfig = Field(default_factory=AirflowConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    s3: S3Config = Field(default_factory=S3Config)
    refine: RefineConfig = Field(default_factory=RefineConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("allowed_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one region is needed (e.g. ap-northeast-1)")
        for region in value:
            if not is_region_name(region):
                raise ValueError(f"'{region}' is not an AWS region name (e.g. ap-northeast-1)")
        return value

    @field_validator("site_region")
    @classmethod
    def _site_region(cls, value: str) -> str:
        if not is_region_name(value):
            raise ValueError(f"'{value}' is not an AWS region name (e.g. ap-northeast-1)")
        return value

    @field_validator("lake_uri")
    @classmethod
    def _lake_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else "file"
        if scheme not in ("file", "s3", "s3a"):
            raise ValueError(f"'{value}': the lake must be a local path or s3a://bucket/prefix")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> FieldloopConfig:
        ports = {
            "kafka.port": self.kafka.port,
            "kafka.controller_port": self.kafka.controller_port,
            "mlflow.port": self.mlflow.port,
            "airflow.port": self.airflow.port,
            "release.port": self.release.port,
        }
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}: give each component its own port")
            seen[port] = name
        return self

    # Derived locations -------------------------------------------------------------
    @property
    def lake(self) -> str:
        """Root URI of the lake (``s3a://...`` or an absolute local path)."""
        return self.lake_uri or str(self.home / "lake")

    @property
    def mlflow_artifact_root(self) -> str | None:
        """Where model artifacts are stored: the setting, or the embedded server's; None when unknown."""
        if self.mlflow.artifact_root:
            return self.mlflow.artifact_root
        return None if self.mlflow.tracking_uri else str(self.home / "mlflow" / "artifacts")

    @property
    def release_dir(self) -> Path:
        """The release repository's files (``metadata/``, ``targets/``) as built here."""
        return (self.release.dir or self.home / "release").expanduser().absolute()

    @property
    def jars_dir(self) -> Path:
        return self.home / "jars"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def key_source(self) -> str:
        """Where pseudonym keys come from (see :class:`RefineConfig`)."""
        return self.refine.key_source or f"file:{self.home / 'secrets' / 'pseudonym-keys.json'}"

    @property
    def airflow_home(self) -> Path:
        return (self.airflow.home or self.home / "airflow").expanduser().absolute()

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with secrets replaced, for display."""
        data = self.model_dump(mode="json")
        data["lake_uri"] = self.lake
        data["kafka"]["bootstrap"] = self.kafka.bootstrap_servers
        data["mlflow"]["tracking_uri"] = self.mlflow.uri
        data["airflow"]["home"] = str(self.airflow_home)
        if self.kafka.sasl_password is not None:
            data["kafka"]["sasl_password"] = "**********"
        return data


def _sections() -> dict[str, type[BaseModel]]:
    out = {}
    for name, field in FieldloopConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out[name] = field.annotation
    return out


def _env_value(raw: str, annotation: Any) -> Any:
    """Turn an environment string into what the field expects (lists, mappings)."""
    text = str(annotation)
    if text.startswith("list["):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if text.startswith("dict["):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"expected a JSON object, got {raw!r}") from e
    return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Map ``FIELDLOOP_*`` variables onto config keys; unknown names are an error."""
    sections = _sections()
    top = {n: f for n, f in FieldloopConfig.model_fields.items() if n not in sections}
    out: dict[str, Any] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_FILE_ENV:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        try:
            if name in top:
                out[name] = _env_value(raw, top[name].annotation)
                continue
            for section, model in sections.items():
                key = name.removeprefix(section + "_")
                if key != name and key in model.model_fields:
                    value = _env_value(raw, model.model_fields[key].annotation)
                    out.setdefault(section, {})[key] = value
                    break
            else:
                known = [f"{ENV_PREFIX}{n.upper()}" for n in top] + [
                    f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, m in sections.items() for k in m.model_fields
                ]
                close = difflib.get_close_matches(var, known, n=1)
                hint = f"did you mean {close[0]}?" if close else "`fieldloop config show` lists the known settings"
                raise ConfigError(f"unknown setting {var}: unset it ({hint})")
        except ValueError as e:
            raise ConfigError(f"{var}: {e}") from e
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, sources: str) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}' (remove it; see `fieldloop config show` for the known keys)")
        else:
            problems.append(f"'{where}': {item['msg'].removeprefix('Value error, ')}")
    return f"invalid config ({sources}): " + "; ".join(problems)


def load_config(environ: Mapping[str, str] | None = None, config_file: Path | None = None) -> FieldloopConfig:
    """Build and validate the effective config.

    Args:
        environ: the environment to read (default: ``os.environ``).
        config_file: a TOML file to read instead of the one named by the environment.

    Raises:
        ConfigError: a key is unknown or a value invalid; the message names it.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    sources = []
    path = config_file or (Path(environ[CONFIG_FILE_ENV]) if environ.get(CONFIG_FILE_ENV) else None)
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} does not exist: create it or unset {CONFIG_FILE_ENV}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
        sources.append(str(path))
    overrides = env_overrides(environ)
    if overrides:
        sources.append("FIELDLOOP_* environment")
    try:
        return FieldloopConfig.model_validate(_merge(data, overrides))
    except ValidationError as e:
        raise ConfigError(_describe(e, " + ".join(sources) or "defaults")) from e
