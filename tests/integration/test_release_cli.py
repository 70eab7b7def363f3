"""`fieldloop release ...` as an operator runs it (the real CLI, the real MLflow server), and the
private keys nowhere but their files: not in any output, log, repository file or MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from actuation.signing import KeyStore
from fieldloop.config import FieldloopConfig
from tests.release_fixtures import approved_version, private_key_strings
from tests.stacks import private_home_env

FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


@pytest.fixture()
def env(tmp_path: Path, cfg: FieldloopConfig, mlflow_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDLOOP_", "MLFLOW_"))}
    env.update(private_home_env(tmp_path / "home", cfg))
    env["FIELDLOOP_MLFLOW_TRACKING_URI"] = mlflow_uri
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FIELDLOOP, *args], env=env, capture_output=True, text=True, timeout=120)


def test_an_operator_publishes_rotates_and_refreshes_and_no_private_key_leaks(
    env: dict[str, str], cfg: FieldloopConfig, mlflow_uri: str, tmp_path: Path
) -> None:
    outputs: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = _cli(env, "--verbose", "release", *args)  # verbose: every log line goes to stderr
        outputs.extend([proc.stdout, proc.stderr])
        assert proc.returncode == 0, proc.stderr
        return proc

    home = Path(env["FIELDLOOP_HOME"])
    assert json.loads(run("init", "--json").stdout)["root_version"] == 1
    run("init")
    model, version = approved_version(MlflowClient(mlflow_uri), KeyStore(home), fleets=("public-cars",))
    first = json.loads(
        run("publish", "--model", model, "--version", str(version), "--fleet", "public-cars", "--json").stdout
    )
    assert first["changed"] and first["pointer"]["active"]["model"] == model
    again = run("publish", "--model", model, "--version", str(version), "--fleet", "public-cars")
    assert "already runs" in again.stdout and "nothing was written" in again.stdout
    status = json.loads(run("status", "--json").stdout)
    runs = {f["fleet"]: f["runs"] for f in status["fleets"]}
    assert runs["public-cars"]["version"] == version and runs["acme-vans"] is None
    assert {r["role"] for r in status["roles"]} >= {"root", "targets", "snapshot", "timestamp", "fleet-acme-plant"}
    assert status["guardrail_keyids"] == [KeyStore(home).entry("guardrail").keyid]
    run("root", "--out", str(tmp_path / "root.json"))
    assert (tmp_path / "root.json").read_bytes() == (home / "release" / "metadata" / "1.root.json").read_bytes()
    assert "no longer trusted" in run("rotate", "--role", "targets").stdout
    assert json.loads(run("rotate", "--role", "root", "--json").stdout)["root_version"] == 3
    assert json.loads(run("refresh", "--json").stdout)["renewed"] == []
    assert "nothing near expiry" in run("refresh").stdout

    secrets = private_key_strings(KeyStore(home))
    text = "\n".join(outputs).encode()
    assert not [s for s in secrets if s in text], "a private key reached the command output or logs"
    keys_dir = KeyStore(home).dir
    searched = [home, cfg.home / "mlflow"]  # this home (repository, logs) and the MLflow server's store
    for root in searched:
        for path in root.rglob("*"):
            if path.is_file() and keys_dir not in path.parents and path.stat().st_size < 50_000_000:
                data = path.read_bytes()
                assert not [s for s in secrets if s in data], f"{path} holds private key material"


def test_a_repository_outside_the_allowed_regions_is_refused_before_anything_is_written(env: dict[str, str]) -> None:
    env = {**env, "FIELDLOOP_SITE_REGION": "us-west-2"}
    proc = _cli(env, "release", "init")
    assert proc.returncode == 1
    assert "us-west-2" in proc.stderr and "outside the allowed regions" in proc.stderr
    assert not (Path(env["FIELDLOOP_HOME"]) / "release").exists()


def test_publishing_to_an_unknown_fleet_names_the_fleets(env: dict[str, str]) -> None:
    before_init = _cli(env, "release", "publish", "--model", "m", "--version", "1", "--fleet", "public-cars")
    assert before_init.returncode == 1 and "fieldloop release init" in before_init.stderr
    assert _cli(env, "release", "init").returncode == 0
    proc = _cli(env, "release", "publish", "--model", "m", "--version", "1", "--fleet", "no-such")
    assert proc.returncode == 1 and "public-cars" in proc.stderr and "fleets.toml" in proc.stderr


def test_a_fleets_first_release_is_its_champion_and_a_new_version_goes_through_a_rollout(
    env: dict[str, str], mlflow_uri: str
) -> None:
    home = Path(env["FIELDLOOP_HOME"])
    assert _cli(env, "release", "init").returncode == 0
    client = MlflowClient(mlflow_uri)
    model, v1 = approved_version(client, KeyStore(home))
    publish = ("release", "publish", "--model", model, "--fleet", "public-cars", "--version")
    assert _cli(env, *publish, str(v1)).returncode == 0
    assert client.get_model_version_by_alias(model, "champion").version == str(v1)  # what the fleet runs

    _, v2 = approved_version(client, KeyStore(home), model=model, seed=1)
    refused = _cli(env, *publish, str(v2))
    assert refused.returncode == 1
    assert f"runs {model} v{v1}" in refused.stderr and "fieldloop rollout start" in refused.stderr
    assert "--direct" in refused.stderr
    status = json.loads(_cli(env, "release", "status", "--json").stdout)
    assert {f["fleet"]: f["runs"] for f in status["fleets"]}["public-cars"]["version"] == v1  # nothing written

    direct = _cli(env, *publish, str(v2), "--direct")
    assert direct.returncode == 0, direct.stderr
    assert client.get_model_version_by_alias(model, "champion").version == str(v1)  # a rollout moves it, not this
