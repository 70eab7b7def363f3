"""Config: defaults, sources and their precedence, and a clear error for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldloop.config import load_config
from fieldloop.errors import ConfigError


def test_defaults_describe_the_embedded_stack_in_japan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./fieldloop.toml here
    cfg = load_config({})
    assert cfg.allowed_regions == ["ap-northeast-1", "ap-northeast-3"]
    assert cfg.site_region == "ap-northeast-1"
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.mlflow.uri == "http://127.0.0.1:5000"
    assert cfg.spark.master == "local[*]"
    assert cfg.home.is_absolute()
    assert cfg.lake == str(cfg.home / "lake")


def test_environment_overrides_file(tmp_path: Path) -> None:
    toml = tmp_path / "fieldloop.toml"
    toml.write_text('site_region = "ap-northeast-3"\n[kafka]\nport = 19092\n[spark]\nmaster = "local[2]"\n')
    cfg = load_config({"FIELDLOOP_KAFKA_PORT": "29092", "FIELDLOOP_HOME": str(tmp_path)}, config_file=toml)
    assert cfg.kafka.port == 29092  # env beats file
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert cfg.site_region == "ap-northeast-3"  # file beats default
    assert cfg.spark.master == "local[2]"
    assert cfg.home == tmp_path


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    toml = tmp_path / "custom.toml"
    toml.write_text("[mlflow]\nport = 5055\n")
    cfg = load_config({"FIELDLOOP_CONFIG": str(toml)})
    assert cfg.mlflow.uri == "http://127.0.0.1:5055"


def test_lists_and_mappings_from_environment() -> None:
    cfg = load_config(
        {
            "FIELDLOOP_ALLOWED_REGIONS": "ap-northeast-1, ap-northeast-3",
            "FIELDLOOP_SPARK_CONF": '{"spark.executor.memory": "1g"}',
            "FIELDLOOP_KAFKA_BOOTSTRAP": "b1.example:9096,b2.example:9096",
        }
    )
    assert cfg.allowed_regions == ["ap-northeast-1", "ap-northeast-3"]
    assert cfg.spark.conf == {"spark.executor.memory": "1g"}
    assert cfg.kafka.bootstrap_servers == "b1.example:9096,b2.example:9096"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"FIELDLOOP_KAFKA_PORTT": "1"},
            "unknown setting FIELDLOOP_KAFKA_PORTT: unset it (did you mean FIELDLOOP_KAFKA_PORT?)",
        ),
        ({"FIELDLOOP_NOPE": "1"}, "unknown setting FIELDLOOP_NOPE"),
        ({"FIELDLOOP_ALLOWED_REGIONS": "tokyo"}, "'allowed_regions': 'tokyo' is not an AWS region name"),
        ({"FIELDLOOP_SITE_REGION": "Japan"}, "'site_region': 'Japan' is not an AWS region name"),
        ({"FIELDLOOP_KAFKA_PORT": "70000"}, "'kafka.port'"),
        ({"FIELDLOOP_KAFKA_PORT": "abc"}, "'kafka.port'"),
        ({"FIELDLOOP_MLFLOW_PORT": "8080"}, "airflow.port and mlflow.port are both 8080"),
        ({"FIELDLOOP_SPARK_MASTER": "local[two]"}, "is not a Spark master URL"),
        ({"FIELDLOOP_LAKE_URI": "gs://bucket/lake"}, "the lake must be a local path or s3a://"),
        ({"FIELDLOOP_KAFKA_BOOTSTRAP": "localhost"}, "'localhost' is not host:port"),
        ({"FIELDLOOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"FIELDLOOP_SPARK_CONF": "not json"}, "FIELDLOOP_SPARK_CONF: expected a JSON object"),
        ({"FIELDLOOP_ALLOWED_REGIONS": ""}, "at least one region is needed"),
    ],
)
def test_invalid_environment_names_the_setting(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(environ)
    assert expected in str(excinfo.value)


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "fieldloop.toml"
    toml.write_text('[kafka]\nbootstraps = "x:1"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'kafka.bootstraps'") as excinfo:
        load_config({}, config_file=toml)
    assert str(toml) in str(excinfo.value)


def test_broken_or_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("home = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config({}, config_file=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"FIELDLOOP_CONFIG": str(tmp_path / "missing.toml")})


def test_secrets_are_redacted() -> None:
    cfg = load_config(
        {
            "FIELDLOOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FIELDLOOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FIELDLOOP_KAFKA_SASL_USERNAME": "fleet",
            "FIELDLOOP_KAFKA_SASL_PASSWORD": "hunter2-do-not-print",
        }
    )
    shown = cfg.redacted()
    assert shown["kafka"]["sasl_password"] == "**********"
    assert "hunter2" not in repr(shown) and "hunter2" not in repr(cfg)
    assert cfg.kafka.sasl_password is not None
    assert cfg.kafka.sasl_password.get_secret_value() == "hunter2-do-not-print"
