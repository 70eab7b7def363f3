"""Bronze -> silver on local Spark: idempotency, quality quarantine, residency, governance.

Bronze tables are written by the real bronze job from a simulated fleet (see conftest).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fieldloop.catalog import list_tables
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import load_contracts
from fieldloop.errors import ResidencyError
from fieldloop.keys import load_key_ring
from fieldloop.residency import ResidencyGuard
from ingestion.simulator import FleetSpec
from refinement.errors import QualityError, RefinementError
from refinement.policy import default_policies
from refinement.silver import SilverJob
from tests.fleet_rows import simulate

PLANT = "plant-sensors-acme-steel"


def silver_job(spark, cfg: FieldloopConfig) -> SilverJob:
    contracts = load_contracts()
    keys = load_key_ring(cfg.key_source, create_for=[c.tenant for c in contracts.values()])
    return SilverJob(cfg, spark, contracts, default_policies(), keys, ResidencyGuard.from_config(cfg))


def plant_records(seconds: float = 20, seed: int = 3):
    # devices 1..N cycle through kinds; 8 devices include furnace sensors
    return [s for s in simulate(FleetSpec(devices=8, seconds=seconds, rate_hz=2, seed=seed)) if s.contract_id == PLANT]


def table_rows(spark, path: str) -> list[tuple]:
    return sorted(tuple(r) for r in spark.read.format("delta").load(path).collect())


def history_len(spark, path: str) -> int:
    return spark.sql(f"DESCRIBE HISTORY delta.`{path}`").count()


def test_silver_is_incremental_and_idempotent(spark, lake_cfg: FieldloopConfig, write_bronze) -> None:
    sent = plant_records()
    assert sent, "the simulated fleet has plant sensors"
    half = len(sent) // 2
    write_bronze(sent[:half], 0)
    job = silver_job(spark, lake_cfg)
    [first] = job.run(PLANT)
    path = first.path
    assert first.rows_in == half and first.reconciles
    assert first.rows_out + sum(first.quarantined.values()) == half

    # nothing new in bronze: no commit, same rows
    before, commits = table_rows(spark, path), history_len(spark, path)
    [again] = job.run(PLANT)
    assert again.bronze_versions is None and again.rows_in == 0
    assert table_rows(spark, path) == before and history_len(spark, path) == commits

    # a second bronze commit: only its rows are read
    write_bronze(sent[half:], 1)
    [second] = job.run(PLANT)
    assert second.rows_in == len(sent) - half
    assert second.bronze_versions[0] == first.bronze_versions[1] + 1
    rows = spark.read.format("delta").load(path)
    assert rows.count() == first.rows_out + second.rows_out
    assert rows.select("_device", "_seq").distinct().count() == rows.count()  # nothing twice

    # replaying the last run over the same bronze versions replaces, never appends
    after = table_rows(spark, path)
    [redo] = job.run(PLANT, since=first.bronze_versions[1])
    assert redo.bronze_versions == second.bronze_versions and redo.rows_out == second.rows_out
    assert table_rows(spark, path) == after


def test_a_run_over_bronze_versions_that_added_no_row_writes_none_and_reconciles(
    spark, lake_cfg: FieldloopConfig, write_bronze
) -> None:
    """Bronze commits that add no row (a batch of resends, or its retention and VACUUM commits):
    the run reads nothing, and adaptive execution, dropping the empty plan, takes its
    observations with it; the run must still count zero, not fail."""
    sent = plant_records(10)
    write_bronze(sent, 0)
    job = silver_job(spark, lake_cfg)
    [first] = job.run(PLANT)
    write_bronze(sent, 1)  # every record again: a bronze commit of duplicates only
    [second] = job.run(PLANT)
    assert second.bronze_versions == (first.bronze_versions[1] + 1,) * 2
    assert (second.rows_in, second.rows_out, second.reconciles) == (0, 0, True)
    assert spark.read.format("delta").load(first.path).count() == first.rows_out
    [third] = job.run(PLANT)  # silver recorded that it holds that version: nothing to read again
    assert third.bronze_versions is None


def test_silver_table_carries_governance_and_change_feed(spark, lake_cfg: FieldloopConfig, write_bronze) -> None:
    write_bronze(plant_records(10), 0)
    [report] = silver_job(spark, lake_cfg).run(PLANT)
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{report.path}`").collect()}
    assert props["fieldloop.class"] == "restricted" and props["fieldloop.tenant"] == "acme-steel"
    assert props["fieldloop.appi_level"] == "pseudonymized" and props["fieldloop.policy_version"] == "1"
    assert props["fieldloop.residency_region"] == "ap-northeast-1" and props["fieldloop.layer"] == "silver"
    assert props["delta.enableChangeDataFeed"] == "true"
    assert props["delta.deletedFileRetentionDuration"] == "interval 7 days"
    # statistics only on the columns silver is filtered by (the upkeep test Z-orders by them)
    assert props["delta.dataSkippingStatsColumns"] == "_device,ts,_seq,_bronze_version"
    saved = json.loads(Path(report.location).read_text())
    assert saved["rows_in"] == report.rows_in and saved["reconciles"] is True
    assert saved["fields"]["sensor_id"] == "keep"


def with_changes(sent: list, change, which) -> list:
    """``sent`` with ``change(record)`` applied to the records ``which(record)`` selects, re-encoded."""
    from fieldloop.wire import decode, default_registry, encode

    reg = default_registry()
    out = []
    for s in sent:
        record = decode(s.payload, reg)
        if which(record):
            change(record)
            s = type(s)(s.contract_id, s.device_id, s.seq, encode(record, reg.get("plant_sensors")), False)
        out.append(s)
    return out


def test_rows_failing_quality_rules_go_to_quarantine_with_the_rule(
    spark, lake_cfg: FieldloopConfig, write_bronze
) -> None:
    sent = plant_records(10)
    bad = sent[3]
    # no furnace gets this hot, in any unit
    sent[3:4] = with_changes([bad], lambda r: r.update(value=99_999.0), lambda r: True)
    write_bronze(sent, 0)
    [report] = silver_job(spark, lake_cfg).run(PLANT)
    assert report.quarantined == {"value-range-per-unit": 1}
    assert report.rows_out == len(sent) - 1 and report.reconciles
    path = f"{lake_cfg.lake}/quarantine/plant_sensors_acme_steel_quality"
    q = spark.read.format("delta").load(path).collect()
    assert [(r["reason"], r["_device_id"], r["_seq"]) for r in q] == [("value-range-per-unit", bad.device_id, bad.seq)]

    # A later clean run leaves quarantine alone: there is nothing of its versions to clear.
    # A re-run of the first run's versions would clear (replace) what that run put there.
    job, (a, b) = silver_job(spark, lake_cfg), report.bronze_versions
    commits = history_len(spark, path)
    # Later readings of the same sensors (new sequence numbers: another seed would send the
    # same (device, seq) again, which bronze drops as duplicates, and refine nothing).
    held = {(s.device_id, s.seq) for s in sent}
    later = [s for s in plant_records(20) if (s.device_id, s.seq) not in held]
    assert later
    write_bronze(later, 1)
    [clean] = job.run(PLANT)
    assert clean.quarantined == {} and clean.rows_out > 0
    assert history_len(spark, path) == commits
    lo, hi = clean.bronze_versions
    assert job._holds_window(path, a - 1, b) and not job._holds_window(path, lo - 1, hi)


def test_a_run_over_the_failure_threshold_fails_and_writes_nothing(
    spark, lake_cfg: FieldloopConfig, write_bronze
) -> None:
    # a unit no range is declared for: every row of those sensors fails
    write_bronze(with_changes(plant_records(10), lambda r: r.update(unit="degF"), lambda r: r["unit"] == "Cel"), 0)
    with pytest.raises(QualityError, match=r"fail quality rules.*known-unit"):
        silver_job(spark, lake_cfg).run(PLANT)
    assert not Path(f"{lake_cfg.lake}/silver/plant_sensors_acme_steel").exists()


def test_residency_refusal_writes_nothing(spark, lake_cfg: FieldloopConfig, write_bronze) -> None:
    write_bronze(plant_records(5), 0)
    abroad = load_config(
        {
            "FIELDLOOP_HOME": str(lake_cfg.home),
            "FIELDLOOP_LAKE_URI": lake_cfg.lake,
            "FIELDLOOP_SITE_REGION": "us-west-2",
            "FIELDLOOP_REFINE_KEY_SOURCE": lake_cfg.key_source,
        }
    )
    with pytest.raises(ResidencyError, match="us-west-2"):
        silver_job(spark, abroad).run(PLANT)
    assert not Path(f"{lake_cfg.lake}/silver").exists()
    assert not Path(f"{lake_cfg.lake}/quarantine/plant_sensors_acme_steel_quality").exists()


def test_upkeep_deletes_expired_rows_compacts_and_vacuums_once_a_day(
    spark, lake_cfg: FieldloopConfig, write_bronze
) -> None:
    from datetime import UTC, timedelta

    from refinement.maintenance import maintain

    write_bronze(plant_records(10), 0)
    [report] = silver_job(spark, lake_cfg).run(PLANT)
    contract = load_contracts()[PLANT]
    newest = spark.read.format("delta").load(report.path).selectExpr("max(ts)").first()[0].replace(tzinfo=UTC)

    def history() -> list[str]:
        return [r["operation"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{report.path}`").collect()]

    # nothing due: no Spark job, no commit; a table seen for the first time is compacted a day later
    commits = len(history())
    first = maintain(spark, lake_cfg, report.path, contract, "ts", now=newest + timedelta(hours=1))
    assert (first.expired_rows, first.optimized) == (0, False) and first.skipped.startswith("first seen")
    assert len(history()) == commits
    # a day after the newest row passed its retention, every row has: deleted, then compacted and vacuumed
    later = newest + timedelta(days=contract.retention_days + 1)
    done = maintain(spark, lake_cfg, report.path, contract, "ts", now=later)
    assert done.expired_rows == report.rows_out and done.optimized and done.vacuumed
    assert spark.read.format("delta").load(report.path).count() == 0
    assert {"DELETE", "VACUUM END"} <= set(history())
    again = maintain(spark, lake_cfg, report.path, contract, "ts", now=later + timedelta(hours=1))
    assert again.skipped and not again.optimized and again.expired_rows == 0
    [table] = [t for t in list_tables(lake_cfg) if t.path == report.path]
    assert table.retention_deleted == report.rows_out


def test_silver_range_rules_are_check_constraints_delta_enforces(spark, lake_cfg: FieldloopConfig) -> None:
    from delta.tables import DeltaTable
    from py4j.protocol import Py4JJavaError
    from pyspark.sql.types import DoubleType, StructField, StructType

    job = silver_job(spark, lake_cfg)
    contract = load_contracts()["vehicle-frames-acme-mobility"]
    path = f"{lake_cfg.lake}/silver/constraint_probe"
    schema = StructType([StructField("speed_mps", DoubleType())])
    props = job._properties(
        contract,
        "silver",
        "pseudonymized",
        1,
        "ap-northeast-1",
        {"speed_Plausible": "speed_mps IS NULL OR (speed_mps >= 0.0 AND speed_mps <= 90.0)"},
    )
    # The first write creates the table with its constraints: one breaking them creates nothing.
    with pytest.raises(Exception, match="DELTA_VIOLATE_CONSTRAINT"):
        job._replace(spark.createDataFrame([(120.0,)], schema), path, "true", {"bronze_version": 1}, props)
    assert not DeltaTable.isDeltaTable(spark, path)
    job._replace(spark.createDataFrame([(12.5,), (None,)], schema), path, "true", {"bronze_version": 1}, props)
    with pytest.raises(Py4JJavaError, match="DELTA_VIOLATE_CONSTRAINT"):
        spark.createDataFrame([(120.0,)], schema).write.format("delta").mode("append").save(path)
    assert spark.read.format("delta").load(path).count() == 2
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"]
    assert detail["delta.constraints.speed_plausible"].startswith("speed_mps IS NULL")


def test_rules_by_key_marks_each_row_as_mark_does(spark) -> None:
    """The job's first pass shuffles only keys and verdicts; every row must get the rule the whole-row marking gives."""
    from refinement import quality

    expect = default_policies()["vehicle-frames-acme-mobility"].expect
    ok = {"vin": "V1", "ts": None, "lat": 35.6, "lon": 139.7, "speed_mps": 10.0, "accel_mps2": 0.5, "brake": 0.1}
    cases = [
        ("a", 1, 0, {}),  # passes
        ("a", 2, 1, {"speed_mps": 120.0}),  # one range rule
        ("a", 3, 0, {}),  # time went back from seq 2: monotonic only
        ("a", 4, 5, {"lat": None, "speed_mps": -1.0}),  # required comes first in the file, so it wins over speed
        ("b", 1, 9, {}),
        ("b", 2, 3, {"lon": 170.0}),  # both longitude and monotonic: longitude is listed first
    ]
    rows = [
        {**ok, "_device_id": d, "_seq": seq, "ts": datetime(2026, 5, 1, 8, 0, second, tzinfo=UTC), **bad}
        for d, seq, second, bad in cases
    ]
    schema = (
        "vin STRING, ts TIMESTAMP, lat DOUBLE, lon DOUBLE, speed_mps DOUBLE, accel_mps2 DOUBLE, brake DOUBLE, "
        "_device_id STRING, _seq LONG"
    )
    df = spark.createDataFrame([tuple(r[c.split()[0]] for c in schema.split(", ")) for r in rows], schema)
    whole = {(r["_device_id"], r["_seq"]): r["_rule"] for r in quality.mark(df, expect).collect()}
    keyed = quality.rules_by_key(df, expect, ["_device_id", "_seq"])
    assert keyed.columns == ["_device_id", "_seq", "_rule"]
    assert (
        {(r["_device_id"], r["_seq"]): r["_rule"] for r in keyed.collect()}
        == whole
        == {
            ("a", 1): None,
            ("a", 2): "speed-plausible",
            ("a", 3): "time-monotonic",
            ("a", 4): "required-fields",
            ("b", 1): None,
            ("b", 2): "longitude-in-japan",
        }
    )


def test_first_pass_counts_the_placeholders_only_of_the_notes_silver_keeps(spark, lake_cfg: FieldloopConfig) -> None:
    """Placeholder counts come out of the gate's pass: a quarantined row's note is not in the report."""
    from refinement.text import NoteScrubber, ScrubberConfig

    cid = "vehicle-frames-acme-mobility"
    job = silver_job(spark, lake_cfg)
    job.notes = ScrubberConfig(use_model=False)  # patterns only: no recognizer to load for this check
    kept_notes = ["Call 090-1234-5678 after the shift.", "Mail ops-lead@example.co.jp and 03-5555-0199."]
    cases = [  # seq, speed, note
        (1, 10.0, kept_notes[0]),
        (2, 10.0, None),
        (3, 120.0, "Quarantined: write to someone@example.com"),  # fails speed-plausible
        (4, 10.0, kept_notes[1]),
    ]
    schema = (
        "vin STRING, driver_id STRING, ts TIMESTAMP, lat DOUBLE, lon DOUBLE, speed_mps DOUBLE, "
        "accel_mps2 DOUBLE, brake DOUBLE, driver_note STRING, _device_id STRING, _seq LONG"
    )
    df = spark.createDataFrame(
        [
            ("V1", "d-7", datetime(2026, 5, 1, 8, 0, seq, tzinfo=UTC), 35.6, 139.7, speed, 0.5, 0.1, note, "V1", seq)
            for seq, speed, note in cases
        ],
        schema,
    )
    first = job._first_pass(df, job.policies[cid], job.outputs(cid))
    try:
        assert first.rows_in == 4 and first.failed == {"speed-plausible": 1}
        assert first.noted == {"driver_note": 2}
        expected: dict[str, int] = {}
        for result in NoteScrubber(ScrubberConfig(use_model=False)).scrub_many(kept_notes):
            for kind, n in result.counts.items():
                expected[kind] = expected.get(kind, 0) + n
        assert expected == {"PHONE": 2, "EMAIL": 1}
        assert first.placeholders == {"driver_note": expected}
        assert first.id_columns == ("_device_id", "driver_id", "vin") and first.ids == [("V1", "d-7", "V1")]
        assert first.id_values(["vin", "driver_id"]) == {("V1", "d-7")}
        assert [r["driver_note"] for r in first.notes("driver_note").orderBy("_seq").collect()] == [
            "Call [PHONE] after the shift.",
            "Mail [EMAIL] and [PHONE].",
        ]
    finally:
        first.side.unpersist()


def test_first_pass_walks_trips_and_gathers_cells_as_a_pass_over_the_passing_rows_would(
    spark, lake_cfg: FieldloopConfig
) -> None:
    """The first pass walks trips and counts k-anonymity cells among rows that include failing
    ones, skipping them. It must find what walking and counting the passing rows alone finds."""
    import random
    from datetime import timedelta

    from pyspark.sql import functions as F

    from refinement import anonymize, quality
    from refinement.silver import generalized

    cid = "vehicle-frames-public"
    job = silver_job(spark, lake_cfg)
    policy = job.policies[cid]
    [anon] = [o for o in job.outputs(cid) if o.policy.level == "anonymized"]
    rng = random.Random(5)
    t0 = datetime(2026, 5, 1, 7, 40, tzinfo=UTC)
    rows = []
    for d in range(6):  # two trips each, 1 Hz at ~15 m/s, the second across the hour's end: 12+ cells
        seq = 0
        for start in (t0, t0 + timedelta(minutes=19)):
            lat, lon = 35.55 + d * 0.04, 139.70 + d * 0.07  # a few 10 km meshes
            for i in range(90):
                seq += 1
                ts = start + timedelta(seconds=i)
                speed = 15.0
                if rng.random() < 0.06:
                    speed = 120.0  # fails speed-plausible, mid-trip
                if rng.random() < 0.03:
                    ts -= timedelta(seconds=30)  # time goes back: fails time-monotonic
                lat += 15 / 111_195
                rows.append(
                    (f"V{d}", f"drv-{d}", ts, lat, lon, speed, 0.2, 0.1, rng.random() < 0.2, None, f"V{d}", seq)
                )
    schema = (
        "vin STRING, driver_id STRING, ts TIMESTAMP, lat DOUBLE, lon DOUBLE, speed_mps DOUBLE, accel_mps2 DOUBLE, "
        "brake DOUBLE, intervention BOOLEAN, driver_note STRING, _device_id STRING, _seq LONG"
    )
    df = spark.createDataFrame(rows, schema)
    cfg = lake_cfg.refine

    first = job._first_pass(df, policy, job.outputs(cid))
    try:
        passing = quality.mark(df, policy.expect).where("_rule IS NULL").drop("_rule")
        assert 0 < sum(first.failed.values()) == df.count() - passing.count()
        walked = anonymize.mark_trip_ends(passing, "_device_id", "ts", "lat", "lon", cfg.trip_trim_m, cfg.trip_gap_s)
        ends = {(r["_device_id"], r["_seq"]) for r in walked.where(anonymize.TRIP_END).collect()}
        assert ends, "the trips are long enough to have ends to trim"
        assert {(r["_device_id"], r["_seq"]) for r in first.ends().collect()} == ends
        assert first.trip_ends == len(ends)

        kept = walked.where(f"NOT {anonymize.TRIP_END}")
        tp = anon.policy
        kept = kept.select("_device_id", *[generalized(tp, q).alias(q) for q in (*tp.quasi_identifiers, *tp.sensitive)])
        reference = anonymize.cells_of(kept, "_device_id", tp.quasi_identifiers, tp.sensitive)

        def as_set(cells) -> set[tuple]:
            return {
                (*(r[c] for c in ("_device_id", *tp.quasi_identifiers, "_rows")), tuple(sorted(r["_l_0"])))
                for r in cells.collect()
            }

        got = first.cells(anon.name)
        assert got.columns == reference.columns
        assert len(as_set(reference)) >= 12 and as_set(got) == as_set(reference)
        assert got.agg(F.sum("_rows")).first()[0] == kept.count()
    finally:
        first.side.unpersist()


def test_bronze_versions_without_a_change_feed_fail_the_run_saying_so_and_write_nothing(
    spark, lake_cfg: FieldloopConfig, write_bronze
) -> None:
    """Versions whose change data Delta did not record (the feed turned off, or a table from
    before fieldloop enabled it) fail the run with what to do, when the pass reads them."""
    sent = plant_records(10)
    write_bronze(sent[: len(sent) // 2], 0)
    job = silver_job(spark, lake_cfg)
    [first] = job.run(PLANT)
    bronze = job.bronze_path(job.contracts[PLANT])
    spark.sql(f"ALTER TABLE delta.`{bronze}` SET TBLPROPERTIES (delta.enableChangeDataFeed = false)")
    write_bronze(sent[len(sent) // 2 :], 1)
    before, commits = table_rows(spark, first.path), history_len(spark, first.path)
    with pytest.raises(RefinementError, match="has no change data feed for versions"):
        job.run(PLANT)
    assert table_rows(spark, first.path) == before and history_len(spark, first.path) == commits
