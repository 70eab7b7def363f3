"""The privacy promises of silver and gold, checked on local Spark against planted canaries.

A simulated fleet (Tokyo and Osaka vehicles, robot arms, furnace sensors) goes through the
real bronze job; canaries are planted in its records: identifiers in structured fields
and in free-text notes. After refinement none may appear in any string column of any
silver or gold table, pseudonyms must be keyed and per tenant, the key must appear in no
plan or table, and every anonymized table must be k-anonymous.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fieldloop.config import FieldloopConfig, load_config
from fieldloop.wire import decode, default_registry, encode
from ingestion.simulator import FleetSpec, SentRecord
from refinement.run import refine
from tests.fleet_rows import simulate

REG = default_registry()
CANARY_VIN = "JTDKB20U893456789"
CANARY_DRIVER = "drv-canary-4711"
NOTE_CANARIES = {
    "今日は佐藤一郎さんと交代しました。連絡先は090-1234-5678です。": ["佐藤一郎", "090-1234-5678"],
    "車台番号 NZE161-3012345 の車両を品川 300 あ 12-34 で回収。": ["NZE161-3012345", "品川 300 あ 12-34"],
    "Please call Hannah Fischer at +81 3-5555-0199 about the brakes.": ["Hannah Fischer", "3-5555-0199"],
    "Dropped off at 東京都江東区有明3-5-7, mail ops-lead@example.co.jp": ["有明3-5-7", "ops-lead@example.co.jp"],
}


def plant(sent: list[SentRecord]) -> tuple[list[SentRecord], dict[str, list[str]]]:
    """Canaries in the first vehicle of each vehicle contract and in a few of its notes."""
    out, planted, notes = [], {}, iter(NOTE_CANARIES.items())
    first: dict[str, str] = {}
    for s in sent:
        if s.contract_id.startswith("vehicle-frames"):
            device = first.setdefault(s.contract_id, s.device_id)
            if s.device_id == device:
                record = decode(s.payload, REG)
                record["ts"] = int(record["ts"].timestamp() * 1000)
                record["vin"], record["driver_id"] = CANARY_VIN, CANARY_DRIVER
                if s.seq % 7 == 0:
                    text, secrets = next(notes, (None, []))
                    if text:
                        record["driver_note"] = text
                        planted[text] = secrets
                s = SentRecord(s.contract_id, s.device_id, s.seq, encode(record, REG.get("vehicle_frames")), False)
        out.append(s)
    assert len(planted) == len(NOTE_CANARIES)
    return out, planted


@pytest.fixture(scope="module")
def refined(spark, cfg: FieldloopConfig, tmp_path_factory: pytest.TempPathFactory):
    from fieldloop.contracts import load_contracts
    from fieldloop.residency import ResidencyGuard
    from ingestion.cloud.bronze import BronzeJob
    from tests.fleet_rows import KAFKA_SCHEMA, kafka_rows, subscribed

    root = tmp_path_factory.mktemp("privacy")
    lake_cfg = load_config(
        {
            "FIELDLOOP_HOME": str(cfg.home),
            "FIELDLOOP_LAKE_URI": str(root / "lake"),
            "FIELDLOOP_REFINE_KEY_SOURCE": f"file:{root / 'keys.json'}",
            "FIELDLOOP_REFINE_K": "2",
        }
    )  # a small fleet: k=2 still has to hold exactly
    # 16 devices for 40 s: enough vehicles that some mesh/hour classes hold several of them
    # recent data: the run's upkeep deletes rows past their contract's retention
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sent, planted = plant(simulate(FleetSpec(devices=16, seconds=40, rate_hz=5, seed=11, start=start)))
    contracts = load_contracts()
    job = BronzeJob(lake_cfg, spark, contracts, REG, ResidencyGuard.from_config(lake_cfg))
    job.process_batch(
        spark.createDataFrame(kafka_rows(subscribed(sent, contracts, job.by_topic), contracts), KAFKA_SCHEMA), 0
    )
    # key ring written before the run so the test knows the key bytes
    from fieldloop.keys import KeyRing

    (root / "keys.json").write_text(KeyRing.generate([c.tenant for c in contracts.values()], "t"))
    # refined the next morning: the fleet's day has closed, so its DP figures are released
    result = refine(lake_cfg, spark=spark, clock=lambda: start + timedelta(days=1, hours=4))
    return lake_cfg, result, planted, json.loads((root / "keys.json").read_text())


def string_values(spark, path: str) -> list[str]:
    """Every string anywhere in the table, nested ones included, as JSON text per row."""
    return [r[0] for r in spark.read.format("delta").load(path).selectExpr("to_json(struct(*))").collect()]


def refined_tables(lake: str) -> list[str]:
    return [
        str(p)
        for layer in ("silver", "gold")
        for p in sorted(Path(lake, layer).iterdir())
        if (p / "_delta_log").is_dir()
    ]


def test_no_canary_survives_in_any_silver_or_gold_table(spark, refined) -> None:
    lake_cfg, result, planted, _ = refined
    tables = refined_tables(lake_cfg.lake)
    assert any(t.endswith("vehicle_frames_public") for t in tables) and any("gold" in t for t in tables)
    canaries = [CANARY_VIN, CANARY_DRIVER, *[c for found in planted.values() for c in found]]
    for table in tables:
        rows = "\n".join(string_values(spark, table))
        assert rows, f"{table} is empty: the check would prove nothing"
        survivors = [c for c in canaries if c in rows]
        assert not survivors, f"{table} still holds {survivors}"
    placeholders = {k for r in result.reports for k in r.placeholders}
    assert {"PERSON", "PHONE"} <= placeholders
    # the report says what found the names, so runs scrubbed differently can be told apart
    assert {r.fields["driver_note"] for r in result.reports if r.table == "vehicle_frames_public"} == {
        "scrub_text (sudachi)"
    }


def test_no_raw_device_or_driver_id_survives_an_anti_join_against_bronze(spark, refined) -> None:
    lake_cfg, _, _, _ = refined
    lake = lake_cfg.lake
    raw_ids = {
        r[0]
        for t in ("vehicle_frames_public", "vehicle_frames_acme_mobility")
        for r in spark.read.format("delta")
        .load(f"{lake}/bronze/{t}")
        .selectExpr("explode(array(vin, driver_id, _device_id))")
        .collect()
    }
    assert len(raw_ids) > 3
    raw = spark.createDataFrame([(x,) for x in raw_ids], "raw STRING")
    for table in refined_tables(lake):
        df = spark.read.format("delta").load(table)
        for column in [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]:
            hits = df.join(raw, df[column] == raw["raw"]).count()
            assert hits == 0, f"{table}.{column} holds raw ids"


def test_pseudonyms_are_keyed_and_differ_across_tenants(spark, refined) -> None:
    lake_cfg, result, _, keys = refined
    lake = lake_cfg.lake
    public = spark.read.format("delta").load(f"{lake}/silver/vehicle_frames_public").where("_key_id IS NOT NULL")
    acme = spark.read.format("delta").load(f"{lake}/silver/vehicle_frames_acme_mobility")
    # the canary VIN was planted in both fleets: same raw id, two tenants
    pub_vins = {r[0] for r in public.select("vin").distinct().collect()}
    acme_vins = {r[0] for r in acme.select("vin").distinct().collect()}
    assert pub_vins and acme_vins and not pub_vins & acme_vins
    unkeyed = {h(CANARY_VIN.encode()).hexdigest() for h in (hashlib.sha256, hashlib.md5, hashlib.sha1)}
    for p in pub_vins | acme_vins:
        assert p.startswith("p1") and not any(p[2:] in u for u in unkeyed)
    key_ids = {r[0] for r in acme.select("_key_id").distinct().collect()}
    assert key_ids == {next(k["id"] for k in keys["keys"] if k["tenant"] == "acme-mobility")}
    assert {k for r in result.reports for k in r.key_ids} >= key_ids


def test_the_key_appears_in_no_plan_table_or_report(spark, refined) -> None:
    from fieldloop.keys import PseudonymKey
    from refinement.pseudonym import pseudonymize

    lake_cfg, _, _, keys = refined
    secrets = []
    for k in keys["keys"]:
        raw = base64.b64decode(k["secret_b64"])
        secrets += [k["secret_b64"], raw.hex(), raw.decode("latin-1")]
    key = keys["keys"][0]
    df = spark.read.format("delta").load(f"{lake_cfg.lake}/bronze/vehicle_frames_public")
    out = pseudonymize(
        df, {"vin": "vehicle"}, PseudonymKey(key["tenant"], key["id"], base64.b64decode(key["secret_b64"]))
    )
    plans = out._jdf.queryExecution().toString()
    texts = [plans, *(json.dumps(string_values(spark, t)) for t in refined_tables(lake_cfg.lake))]
    texts += [p.read_text() for p in Path(lake_cfg.lake).rglob("*.json")]  # privacy reports, Delta logs
    for text in texts:
        assert not any(s in text for s in secrets)


def test_anonymized_table_is_k_anonymous_and_reconciles(spark, refined) -> None:
    lake_cfg, result, _, _ = refined
    [anon] = [r for r in result.reports if r.table == "vehicle_frames_public_anon"]
    assert anon.level == "anonymized" and anon.reconciles
    assert anon.trimmed_rows > 0  # trip ends were cut
    assert anon.rows_out > 0, "nothing survived k-anonymity: the test fleet is too small to show anything"
    assert anon.k_achieved is not None and anon.k_achieved >= lake_cfg.refine.k
    df = spark.read.format("delta").load(anon.path)
    assert not {"vin", "driver_id", "driver_note", "_device", "_seq", "lat", "lon"} & set(df.columns)
    assert df.groupBy("mesh", "ts").count().agg({"count": "min"}).first()[0] >= lake_cfg.refine.k


def test_gold_tables_carry_lineage_and_dp_releases_are_on_the_ledger(spark, refined) -> None:
    _lake_cfg, result, _, _ = refined
    gold = {g.table: g for g in result.gold}
    assert {
        "vehicle_longitudinal_public",
        "vehicle_longitudinal_acme_mobility",
        "plant_anomaly_acme_steel",
        "fleet_telemetry_hourly",
        "fleet_telemetry_dp_daily",
    } <= set(gold)
    props = {
        r["key"]: r["value"]
        for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{gold['vehicle_longitudinal_acme_mobility'].path}`").collect()
    }
    assert props["fieldloop.class"] == "restricted" and props["fieldloop.tenant"] == "acme-mobility"
    assert props["fieldloop.task"] == "vehicle-longitudinal"
    windows = spark.read.format("delta").load(gold["vehicle_longitudinal_public"].path)
    assert windows.selectExpr("min(size(features))", "max(size(features))").first() == (53, 53)
    dp = gold["fleet_telemetry_dp_daily"].dp
    assert dp and all(r["epsilon"] > 0 and r["contribution_bound"] == 1 for r in dp)
