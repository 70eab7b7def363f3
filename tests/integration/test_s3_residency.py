"""Residency guard against a real S3-compatible server (moto's server) on loopback.

One bucket is created in Tokyo, one in Oregon and one with no location constraint
(us-east-1); the guard must ask the server for each bucket's region.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from fieldloop.config import load_config
from fieldloop.errors import ResidencyError
from fieldloop.residency import ResidencyGuard
from tests.stacks import free_port, started_moto

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "fieldloop-test",
    "AWS_SECRET_ACCESS_KEY": "fieldloop-test",
    "AWS_DEFAULT_REGION": "ap-northeast-1",
}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with started_moto(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture(scope="module")
def guard(s3_endpoint: str) -> ResidencyGuard:
    os.environ.update(CREDENTIALS)
    # like AWS, the server wants each bucket created through a client of its own region
    for bucket, region in (("lake-tokyo", "ap-northeast-1"), ("lake-oregon", "us-west-2")):
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=region)
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="lake-default")
    cfg = load_config({"FIELDLOOP_S3_ENDPOINT_URL": s3_endpoint})
    return ResidencyGuard.from_config(cfg)


def test_bucket_in_tokyo_is_accepted(guard: ResidencyGuard) -> None:
    for location in ("s3a://lake-tokyo/bronze/vehicle_frames", "s3://lake-tokyo/checkpoints"):
        residency = guard.check(location)
        assert (residency.region, residency.basis) == ("ap-northeast-1", "bucket-location")


def test_bucket_outside_japan_is_refused_with_its_name_and_region(guard: ResidencyGuard) -> None:
    with pytest.raises(ResidencyError) as excinfo:
        guard.check("s3a://lake-oregon/silver")
    message = str(excinfo.value)
    assert "s3a://lake-oregon/silver" in message and "us-west-2" in message
    assert "ap-northeast-1, ap-northeast-3" in message


def test_bucket_without_location_constraint_is_us_east_1(guard: ResidencyGuard) -> None:
    with pytest.raises(ResidencyError, match="us-east-1"):
        guard.check("s3a://lake-default/x")


def test_missing_bucket_is_refused(guard: ResidencyGuard) -> None:
    with pytest.raises(ResidencyError, match="bucket 'no-such-lake' does not exist"):
        guard.check("s3a://no-such-lake/x")


def test_unreachable_s3_is_refused_not_assumed() -> None:
    cfg = load_config({"FIELDLOOP_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    os.environ.update(CREDENTIALS)
    with pytest.raises(ResidencyError, match="cannot reach S3"):
        ResidencyGuard.from_config(cfg).check("s3a://lake-tokyo/x")


def test_training_refuses_an_mlflow_artifact_store_outside_the_allowed_regions_before_reading(
    guard: ResidencyGuard, s3_endpoint: str, spark, tmp_path: Path
) -> None:
    from fieldloop.classes import DataClass
    from tests.synthetic_gold import VEHICLE_SCHEMA, write_gold
    from training_jobs.request import TrainRequest
    from training_jobs.synthetic import vehicle_rows
    from training_jobs.train import train

    lake = str(tmp_path / "lake")
    write_gold(
        spark,
        lake,
        "vehicle_longitudinal_public",
        vehicle_rows(3, 40, 1),
        VEHICLE_SCHEMA,
        DataClass.PUBLIC,
        "vehicle-frames-public",
    )
    cfg = load_config(
        {
            "FIELDLOOP_HOME": str(tmp_path / "home"),
            "FIELDLOOP_LAKE_URI": lake,
            "FIELDLOOP_S3_ENDPOINT_URL": s3_endpoint,
            # a tracking server nobody listens on: the refusal must come before the registry is asked anything
            "FIELDLOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "FIELDLOOP_MLFLOW_ARTIFACT_ROOT": "s3://lake-oregon/mlflow",
        }
    )
    with pytest.raises(ResidencyError) as excinfo:
        train(cfg, TrainRequest("vehicle-longitudinal"))
    assert "s3://lake-oregon/mlflow" in str(excinfo.value) and "us-west-2" in str(excinfo.value)

    # another server whose artifact store nobody named: unverifiable, so refused too
    unknown = load_config(
        {
            "FIELDLOOP_HOME": str(tmp_path / "home"),
            "FIELDLOOP_LAKE_URI": lake,
            "FIELDLOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        }
    )
    with pytest.raises(ResidencyError, match="FIELDLOOP_MLFLOW_ARTIFACT_ROOT"):
        train(unknown, TrainRequest("vehicle-longitudinal"))
