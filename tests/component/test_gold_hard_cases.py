"""Hard cases in the lake: campaign windows go bronze -> silver -> gold like every stream.

A simulated car's frames are the source of both sides: its silver driving frames (written
here, as silver holds them) give the task's ordinary gold rows, and windows of the same
frames, sent as the agent sends them (``hard_cases.v1`` through the SDK's admission rule),
go through the real bronze job and ``refine`` (quality, pseudonyms, residency, privacy
report) into the hard-case gold tables. A hard-case row's features and label must be the
ordinary row's of the same frame; the windows must reconcile; the tables keep their source
contract's class and tenant.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from actuation.agent.campaigns import campaign_signals, frame_signals
from actuation.agent.sources import simulated_frames
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import load_contracts
from fieldloop.datasets import layout
from fieldloop.keys import load_key_ring
from fieldloop.residency import ResidencyGuard
from fieldloop.wire import default_registry
from ingestion.simulator.sink import MemorySink
from refinement.gold import GoldJob
from refinement.run import refine

TASK = "vehicle-longitudinal"
LAY = layout(TASK)
FRAMES = 30
PUBLIC, ACME = "hard_cases_vehicle_longitudinal_public", "hard_cases_vehicle_longitudinal_acme_mobility"


@pytest.fixture(scope="module")
def frames() -> list[dict]:
    return list(itertools.islice(simulated_frames(TASK, 5.0, seed=7), FRAMES))


def window(frames: list[dict], start: int, stop: int, trigger: int, device: str, fleet: str) -> dict:
    """The ``hard_cases.v1`` record the agent sends of ``frames[start:stop]`` (see Collector.record)."""
    names = campaign_signals(LAY)
    return {
        "device_id": device,
        "fleet": fleet,
        "campaign_id": f"{fleet}-c1",
        "trigger_kind": "ood",
        "trigger": "ood>=0.8",
        "model_name": "fieldloop.vehicle-longitudinal",
        "model_version": "3",
        "ts": frames[start + trigger]["ts"],
        "signals": names,
        "frames": [frame_signals(f, names) for f in frames[start:stop]],
        "trigger_index": trigger,
        "output_names": ["accel_mps2"],
        "outputs": [0.25],
        "ood_score": 0.91,
        "disagreement": None,
        "intervention": False,
        "reason": None,
    }


def write_vehicle_silver(spark, lake: str, frames: list[dict]) -> None:
    """The car's frames as silver ``vehicle_frames_public`` holds them (the columns gold reads)."""
    rows = [
        (
            "car-pseudonym",
            datetime.fromtimestamp(f["ts"] / 1000, UTC),
            f["speed_mps"],
            f["accel_mps2"],
            f["brake"],
            f["steering_deg"],
            f["yaw_rate_dps"],
            (f["perception"]["vehicles"], f["perception"]["pedestrians"], f["perception"]["cyclists"]),
            f["intervention"],
        )
        for f in frames
    ]
    schema = (
        "_device STRING, ts TIMESTAMP, speed_mps DOUBLE, accel_mps2 DOUBLE, brake DOUBLE, steering_deg DOUBLE, "
        "yaw_rate_dps DOUBLE, perception STRUCT<vehicles: INT, pedestrians: INT, cyclists: INT>, intervention BOOLEAN"
    )
    spark.createDataFrame(rows, schema).write.format("delta").save(f"{lake}/silver/vehicle_frames_public")


def test_hard_case_windows_become_the_tasks_rows_and_reconcile(
    spark, lake_cfg: FieldloopConfig, write_bronze, frames: list[dict]
) -> None:
    contracts = load_contracts()
    sink = MemorySink(contracts, default_registry())
    car = [
        window(frames, 0, 20, 14, "car-hc-1", "public-cars"),  # rows at frames 9..14
        window(frames, 5, 25, 10, "car-hc-1", "public-cars"),  # rows at frames 14..19
        window(frames, 0, 14, 10, "car-hc-1", "public-cars"),  # 14 frames: too short for a row
    ]
    gap = window(frames, 10, 25, 12, "car-hc-1", "public-cars")  # 15 frames: one row, holding a missing value
    gap["frames"][3][0] = None
    unfit = window(frames, 0, 20, 14, "car-hc-1", "public-cars")  # a frame that names brake otherwise
    unfit["signals"] = ["brake_pct" if n == "brake" else n for n in unfit["signals"]]
    for record in [*car, gap, unfit]:
        sink.send("hard-cases-public", "car-hc-1", record)
    sink.send("hard-cases-acme-mobility", "van-hc-1", window(frames, 0, 16, 8, "van-hc-1", "acme-vans"))
    write_bronze(sink.sent, 0)
    load_key_ring(lake_cfg.key_source, create_for=[c.tenant for c in contracts.values()])  # the tenants' keys

    result = refine(lake_cfg, streams=["hard-cases-public", "hard-cases-acme-mobility"], spark=spark)

    # silver: quality checked, device pseudonymized, a privacy report per table
    silver = {r.table: r for r in result.reports}
    assert set(silver) == {"hard_cases_public", "hard_cases_acme_mobility"}
    assert silver["hard_cases_public"].rows_in == 5 and silver["hard_cases_public"].reconciles
    assert silver["hard_cases_public"].fields["device_id"] == "pseudonym (device)"
    held = spark.read.format("delta").load(silver["hard_cases_public"].path)
    [(device, device_id)] = {(r["_device"], r["device_id"]) for r in held.collect()}
    assert "car-hc-1" not in (device, device_id)

    gold = {g.table: g for g in result.gold}
    assert set(gold) == {PUBLIC, ACME}  # no driving frames refined: the ordinary tables were not touched
    public = gold[PUBLIC]
    assert public.windows == {"windows": 5, "used": 2, "too_short": 1, "unfit": 1, "missing": 1}
    assert public.windows["windows"] == sum(public.windows[k] for k in ("used", "too_short", "unfit", "missing"))
    assert public.rows == 12 and "1 too short (fewer than 15 frames)" in public.notes[0]
    assert gold[ACME].windows == {"windows": 1, "used": 1, "too_short": 0, "unfit": 0, "missing": 0}
    assert gold[ACME].rows == 2  # 16 frames: rows at frames 9 and 10

    # the same features and label as the task's ordinary rows of the same frames
    lake = str(lake_cfg.lake).rstrip("/")
    write_vehicle_silver(spark, lake, frames)
    job = GoldJob(lake_cfg, spark, contracts, ResidencyGuard.from_config(lake_cfg))
    [ordinary] = job.run(only=lambda t: t.name == "vehicle_longitudinal_public")
    by_ts = {r["ts"]: (r["features"], r["target"]) for r in spark.read.format("delta").load(ordinary.path).collect()}
    rows = spark.read.format("delta").load(public.path).collect()
    for row in rows:
        newest = newest_frame(frames, row)
        assert (row["features"], row["target"]) == by_ts[utc(frames[newest]["ts"])], f"frame {newest}"
        assert len(row["features"]) == LAY.width
        assert row["is_trigger"] == (row["frame"] == 0)
        assert (row["trigger_kind"], row["trigger"], row["model_version"], row["outputs"]) == (
            "ood",
            "ood>=0.8",
            "3",
            [0.25],
        )
    assert sorted(newest_frame(frames, r) for r in rows) == sorted([*range(9, 15), *range(14, 20)])
    assert sum(r["is_trigger"] for r in rows) == 2

    # governance: the source contract's class and tenant, the task, pseudonymized
    props = tbl_properties(spark, gold[ACME].path)
    assert props["fieldloop.class"] == "restricted" and props["fieldloop.tenant"] == "acme-mobility"
    assert props["fieldloop.contract"] == "hard-cases-acme-mobility"
    assert props["fieldloop.task"] == TASK and props["fieldloop.gold_kind"] == "hard-cases"
    public_props = tbl_properties(spark, public.path)
    assert public_props["fieldloop.class"] == "public" and "fieldloop.tenant" not in public_props
    assert public_props["fieldloop.sources"] == "silver/hard_cases_public"

    # nothing moved in silver: a second run writes nothing
    again = {g.table: g for g in refine(lake_cfg, streams=["hard-cases-public"], spark=spark).gold}
    assert again[PUBLIC].rows is None and again[PUBLIC].sources == public.sources


def utc(ms: int) -> datetime:
    """A device's timestamp as Spark returns it (the session's time zone is UTC)."""
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def newest_frame(frames: list[dict], row) -> int:
    """Which of the car's frames is the row's newest: ``ts`` is the trigger's, ``frame`` counts from it."""
    trigger_at = next(i for i, f in enumerate(frames) if utc(f["ts"]) == row["ts"])
    return trigger_at + row["frame"]


def tbl_properties(spark, path: str) -> dict[str, str]:
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()}
