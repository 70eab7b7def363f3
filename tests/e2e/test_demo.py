"""`fieldloop demo`, the README's main job, end to end on the real stack.

A simulated fleet streams through the edge SDK into Kafka (with malformed records and
resends injected); Spark lands it in bronze; the demo's own reconciliation line must
balance and the tables must carry what it printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fieldloop.catalog import list_tables
from fieldloop.config import FieldloopConfig

FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


def test_demo_streams_a_fleet_into_bronze_and_reconciles(airflow: object, cfg: FieldloopConfig) -> None:
    before = {t.name: t.rows for t in list_tables(cfg) if t.layer == "bronze"}
    proc = subprocess.run([FIELDLOOP, "demo"], capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]

    match = re.search(r"reconciles: consumed (\d+) = new (\d+) \+ duplicates (\d+) \+ quarantined (\d+)", out)
    assert match, out[-3000:]
    consumed, new, dups, quarantined = map(int, match.groups())
    assert "MISMATCH" not in out
    assert consumed == new + dups + quarantined
    assert new > 1000 and dups > 0 and quarantined > 0  # the injected resends and junk were seen
    sim = re.search(
        r"generated [\d,]+ = accepted ([\d,]+) \+ refused (\d+) \+ bypassed \d+: reconciles; "
        r"raw sent [\d,]+ \(([\d,]+) malformed",
        out,
    )
    assert sim, out[-3000:]
    accepted, refused, malformed = (int(g.replace(",", "")) for g in sim.groups())
    assert refused > 0  # the NaN records were stopped at the device
    # every record that left a device - accepted by the SDK, or junk sent around it - is in
    # bronze or quarantine exactly once; resends are the duplicates, nothing else
    # ... and so is what the plant's edge released (DP aggregates, sent by the SDK outside the fleet)
    edge = re.search(r"(\d+) DP aggregates sent", out)
    released = int(edge.group(1)) if edge else 0
    assert new + quarantined == accepted + malformed + released

    after = {t.name: t.rows for t in list_tables(cfg) if t.layer == "bronze"}
    assert sum(after.values()) - sum(before.get(k, 0) for k in after) == new
    for name in ("vehicle_frames_public", "plant_sensors_acme_steel", "robot_joints_kansai_robotics"):
        assert after.get(name, 0) > before.get(name, 0), name
    assert "worker_audio_acme_steel" not in after  # secret data has no bronze table

    # refinement: every silver table got a privacy report that reconciles, gold was built
    assert "privacy report" in out and "does not reconcile" not in out, out[-4000:]
    silver = {t.name: t for t in list_tables(cfg) if t.layer == "silver"}
    for name in ("vehicle_frames_public", "vehicle_frames_public_anon", "plant_sensors_acme_steel", "fleet_telemetry"):
        assert name in silver, sorted(silver)
    assert silver["vehicle_frames_public_anon"].properties["fieldloop.appi_level"] == "anonymized"
    assert "gold/vehicle_longitudinal_public" in out and "DP releases charged to the ledger" in out
    # secret data at the edge: the raw record was refused, only DP aggregates were sent
    assert "raw record refused by the edge SDK: raw-secret" in out
    assert re.search(r"\d+ DP aggregates sent|no release: .*budget", out), out[-4000:]

    # training: a candidate registered from the public gold dataset only, with its lineage
    match = re.search(
        r"fieldloop\.vehicle-longitudinal v(\d+) registered: models:/fieldloop\.vehicle-longitudinal@candidate", out
    )
    assert match, out[-4000:]
    assert re.search(
        r"trained on gold/vehicle_longitudinal_public@v\d+; classes public; tenants -; "
        r"contracts vehicle-frames-public",
        out,
    ), out[-4000:]
    from mlflow import MlflowClient

    version = MlflowClient(cfg.mlflow.uri).get_model_version_by_alias("fieldloop.vehicle-longitudinal", "candidate")
    assert version.version == match.group(1)
    assert version.tags["fieldloop.lineage.classes"] == "public"
