"""Residency guard for local paths and unverifiable schemes (S3 is tested against a real server)."""

from __future__ import annotations

import pytest

from fieldloop.errors import ResidencyError
from fieldloop.residency import ResidencyGuard

JAPAN = ["ap-northeast-1", "ap-northeast-3"]


def test_local_paths_take_the_declared_site_region() -> None:
    guard = ResidencyGuard(JAPAN, "ap-northeast-3")
    for location in ("/data/lake", "file:///data/lake", "relative/lake"):
        residency = guard.check(location)
        assert (residency.region, residency.basis) == ("ap-northeast-3", "site-declaration")


def test_local_paths_refused_when_the_site_is_outside() -> None:
    guard = ResidencyGuard(JAPAN, "us-west-2")
    with pytest.raises(ResidencyError) as excinfo:
        guard.check("/data/lake/bronze")
    message = str(excinfo.value)
    assert "/data/lake/bronze" in message and "us-west-2" in message and "ap-northeast-1" in message


@pytest.mark.parametrize("location", ["gs://bucket/lake", "abfss://c@acct.dfs.core.windows.net/x", "hdfs://nn/lake"])
def test_unverifiable_schemes_are_refused(location: str) -> None:
    with pytest.raises(ResidencyError, match="cannot verify the region"):
        ResidencyGuard(JAPAN, "ap-northeast-1").check(location)


def test_s3_uri_without_bucket() -> None:
    with pytest.raises(ResidencyError, match="no bucket in the URI"):
        ResidencyGuard(JAPAN, "ap-northeast-1", lambda: None).check("s3a:///prefix")


def test_a_contract_narrows_where_its_data_may_go() -> None:
    from fieldloop.contracts import load_contracts

    contracts = load_contracts()
    kansai, acme = contracts["robot-joints-kansai-robotics"], contracts["vehicle-frames-acme-mobility"]
    tokyo = ResidencyGuard(JAPAN, "ap-northeast-1")
    assert tokyo.check("/lake/bronze/vehicle_frames_public", [contracts["vehicle-frames-public"]]).region == (
        "ap-northeast-1"
    )
    with pytest.raises(ResidencyError) as excinfo:
        tokyo.check("/lake/bronze/robot_joints_kansai_robotics", [kansai])
    message = str(excinfo.value)
    assert "/lake/bronze/robot_joints_kansai_robotics" in message
    assert "contract robot-joints-kansai-robotics allows only ap-northeast-3" in message
    # a location holding both (a model's artifacts) may only be where every one of them may go
    assert tokyo.allowed_for([kansai, acme]) == ()
    with pytest.raises(ResidencyError, match="a region every contract allows"):
        tokyo.check("/mlflow/artifacts", [kansai, acme])
    assert ResidencyGuard(JAPAN, "ap-northeast-3").check("/lake", [kansai]).region == "ap-northeast-3"
