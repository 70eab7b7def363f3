"""A contract's own regions decide where its data may go: a Kansai-only stream in a Tokyo lake.

The robot contract allows only ap-northeast-3 (Osaka); the lake of these tests is declared
ap-northeast-1 (Tokyo), which the deployment allows. Its stream is not read into bronze,
refinement skips it, and nothing of it is written anywhere in the lake, each with a reason
that names the contract; the other streams land and refine as usual.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import load_contracts
from fieldloop.errors import ResidencyError
from fieldloop.keys import KeyRing
from fieldloop.residency import ResidencyGuard
from fieldloop.wire import default_registry
from ingestion.cloud.bronze import BronzeJob
from ingestion.simulator import FleetSpec
from refinement.run import refine
from tests.fleet_rows import simulate

KANSAI = "robot-joints-kansai-robotics"
ACME_VANS = "vehicle-frames-acme-mobility"


def bronze_job(spark, cfg: FieldloopConfig) -> BronzeJob:
    return BronzeJob(cfg, spark, load_contracts(), default_registry(), ResidencyGuard.from_config(cfg))


def test_a_kansai_only_stream_is_not_written_to_a_tokyo_lake_and_says_why(spark, lake_cfg, write_bronze) -> None:
    job = bronze_job(spark, lake_cfg)
    assert "contract robot-joints-kansai-robotics allows only ap-northeast-3" in job.refused[KANSAI]
    assert KANSAI not in {t.contract.id for t in job.targets}  # its topic is not even subscribed
    assert ACME_VANS in {t.contract.id for t in job.targets}

    sent = simulate(FleetSpec(devices=10, seconds=10, rate_hz=2, seed=3))
    assert any(s.contract_id == KANSAI for s in sent)
    write_bronze([s for s in sent if s.contract_id != KANSAI], 0)  # what the stream would have read

    contracts = load_contracts()
    Path(lake_cfg.refine.key_source.removeprefix("file:")).write_text(
        KeyRing.generate([c.tenant for c in contracts.values()], "t")
    )
    result = refine(lake_cfg, spark=spark)
    assert "allows only ap-northeast-3" in result.refused[KANSAI]
    assert {r.contract for r in result.reports} >= {"vehicle-frames-public", ACME_VANS, "plant-sensors-acme-steel"}
    assert not [p for p in Path(lake_cfg.lake).rglob("*") if "robot_joints" in p.name]  # no byte, no folder

    with pytest.raises(ResidencyError, match="contract robot-joints-kansai-robotics allows only ap-northeast-3"):
        refine(lake_cfg, [KANSAI], spark=spark)  # asked for by name: an error, not a skip


def test_an_osaka_lake_holds_the_kansai_stream_and_refuses_tokyo_only_ones(spark, lake_cfg) -> None:
    osaka = load_config(
        {
            "FIELDLOOP_HOME": str(lake_cfg.home),
            "FIELDLOOP_LAKE_URI": lake_cfg.lake,
            "FIELDLOOP_SITE_REGION": "ap-northeast-3",
            "FIELDLOOP_REFINE_KEY_SOURCE": lake_cfg.refine.key_source,
        }
    )
    job = bronze_job(spark, osaka)
    assert KANSAI in {t.contract.id for t in job.targets}
    assert "contract vehicle-frames-acme-mobility allows only ap-northeast-1" in job.refused[ACME_VANS]


def test_a_lake_outside_the_deployments_regions_is_an_error_not_a_skip(spark, lake_cfg) -> None:
    abroad = load_config(
        {
            "FIELDLOOP_HOME": str(lake_cfg.home),
            "FIELDLOOP_LAKE_URI": lake_cfg.lake,
            "FIELDLOOP_SITE_REGION": "us-west-2",
        }
    )
    with pytest.raises(ResidencyError, match="outside the allowed regions"):
        bronze_job(spark, abroad)
