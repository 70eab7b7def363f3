"""The production path: the repository mirrored to S3 (moto's server on loopback), in an order that
keeps what the bucket serves consistent, residency-checked, and readable by a device from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from actuation.contract import load_fleets
from actuation.release.repository import Repository
from actuation.release.s3 import mirror
from actuation.signing import KeyStore
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.errors import ResidencyError
from fieldloop.residency import ResidencyGuard
from tests.release_fixtures import pointer_of, publish_tiny
from tests.stacks import private_home_env, started_moto

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "fieldloop-test",
    "AWS_SECRET_ACCESS_KEY": "fieldloop-test",
    "AWS_DEFAULT_REGION": "ap-northeast-1",
}
FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with started_moto(tmp_path_factory.mktemp("moto")) as url:
        os.environ.update(CREDENTIALS)
        for bucket, region in (("release-tokyo", "ap-northeast-1"), ("release-oregon", "us-west-2")):
            s3 = boto3.client("s3", endpoint_url=url, region_name=region)
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
            # devices read anonymously, as through a CDN in front of the bucket
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    }
                ],
            }
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        yield url


class Recording:
    """The real boto3 client, with the keys it uploaded in order."""

    def __init__(self, client: Any) -> None:
        self.client, self.keys = client, []

    def put_object(self, **kwargs: Any) -> Any:
        self.keys.append(kwargs["Key"])
        return self.client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _rank(key: str) -> int:
    name = key.rsplit("/", 1)[-1]
    if "/targets/" in key:
        return 0
    if name.endswith(".root.json"):
        return 1
    if name == "timestamp.json":
        return 4
    return 3 if name.endswith(".snapshot.json") else 2


def test_the_repository_is_mirrored_in_a_consistent_order_and_a_device_updates_from_the_bucket(
    endpoint: str, tmp_path: Path
) -> None:
    cfg = load_config({"FIELDLOOP_S3_ENDPOINT_URL": endpoint, "FIELDLOOP_HOME": str(tmp_path / "home")})
    guard = ResidencyGuard.from_config(cfg)
    repo = Repository(tmp_path / "release", KeyStore(tmp_path / "home"), load_fleets())
    repo.init()
    publish_tiny(repo, "public-cars", 1)
    client = Recording(boto3.client("s3", endpoint_url=endpoint))

    first = mirror(repo.dir, "s3://release-tokyo/repo", client, guard.check)
    assert first.uploaded == client.keys and len(first.uploaded) == len(list(repo.dir.rglob("*.json*"))) + 1
    ranks = [_rank(k) for k in client.keys]
    assert ranks == sorted(ranks) and client.keys[-1] == "repo/metadata/timestamp.json"

    assert mirror(repo.dir, "s3://release-tokyo/repo", client, guard.check).uploaded == []
    publish_tiny(repo, "public-cars", 2)
    client.keys.clear()
    second = mirror(repo.dir, "s3://release-tokyo/repo", client, guard.check)
    assert [_rank(k) for k in second.uploaded] == [0, 0, 0, 0, 2, 3, 4]  # 3 files + pointer, role, snapshot, ts

    # a device reads the bucket (path-style URL of the S3 server) as it reads nginx
    from tuf.ngclient import Updater

    base = f"{endpoint}/release-tokyo/repo"
    device = tmp_path / "device"
    (device / "metadata").mkdir(parents=True)
    updater = Updater(
        str(device / "metadata"), f"{base}/metadata/", str(device), f"{base}/targets/", bootstrap=repo.root_bytes(1)
    )
    updater.refresh()
    assert pointer_of(updater, "public-cars", device)["active"]["version"] == 2


def test_a_bucket_outside_the_allowed_regions_gets_nothing(endpoint: str, tmp_path: Path) -> None:
    cfg = load_config({"FIELDLOOP_S3_ENDPOINT_URL": endpoint})
    repo = Repository(tmp_path / "release", KeyStore(tmp_path / "home"), load_fleets())
    repo.init()
    client = boto3.client("s3", endpoint_url=endpoint)
    with pytest.raises(ResidencyError, match="us-west-2"):
        mirror(repo.dir, "s3://release-oregon/repo", client, ResidencyGuard.from_config(cfg).check)
    assert client.list_objects_v2(Bucket="release-oregon").get("KeyCount", 0) == 0


def test_release_init_mirrors_with_the_s3_setting(endpoint: str, tmp_path: Path, cfg: FieldloopConfig) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDLOOP_", "MLFLOW_"))}
    env.update(private_home_env(tmp_path / "home", cfg))
    env.update({**CREDENTIALS, "FIELDLOOP_S3_ENDPOINT_URL": endpoint, "FIELDLOOP_RELEASE_S3": "s3://release-tokyo/cli"})
    proc = subprocess.run(
        [FIELDLOOP, "release", "init", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    mirrored = json.loads(proc.stdout)["mirrored"]
    assert mirrored["uri"] == "s3://release-tokyo/cli" and mirrored["uploaded"] > 0
    objects = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="release-tokyo", Prefix="cli/")
    assert "cli/metadata/timestamp.json" in {o["Key"] for o in objects["Contents"]}
