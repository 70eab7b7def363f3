"""`fieldloop demo`, the README's main job, end to end on the real stack.

A simulated fleet streams through the edge SDK into Kafka (with malformed records and
resends injected); Spark lands it in bronze; refinement writes silver and gold; training
registers a candidate; the guardrails approve it and refuse a broken copy; it is signed into
the release repository and three agents run it; their telemetry lands in bronze. The test
reads the demo's ``--json`` summary and checks every count
against the lake and the registry, not against the demo's own words.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fieldloop.catalog import list_tables
from fieldloop.config import FieldloopConfig

FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


def test_demo_runs_the_loop_and_every_count_reconciles(
    airflow: object, release_server: str, cfg: FieldloopConfig
) -> None:
    before = {t.name: t.rows for t in list_tables(cfg) if t.layer == "bronze"}
    proc = subprocess.run([FIELDLOOP, "demo", "--json"], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)

    # the fleet: every generated record was accepted, refused at the device, or went around the SDK
    fleet = summary["fleet"]
    assert fleet["reconciles"] is True
    assert fleet["generated"] == fleet["accepted"] + fleet["refused"] + fleet["bypassed"]
    assert fleet["refused"] > 0 and "non-finite" in fleet["refused_reasons"]  # NaN records stopped at the device

    # secret data at the edge: the raw record was refused, only DP aggregates were sent (or the budget said no)
    edge = summary["edge"]
    assert edge["raw_refused"] == "raw-secret"
    assert edge["released"] > 0 or edge["skipped"]

    # bronze: consumed = new + duplicates + quarantined, and what left a device landed exactly once
    bronze = summary["bronze"]
    assert bronze["reconciles"] is True
    assert bronze["consumed"] == bronze["new"] + bronze["duplicates"] + bronze["quarantined"]
    assert bronze["new"] > 1000 and bronze["duplicates"] > 0 and bronze["quarantined"] > 0
    # every record that reached Kafka on a stream this lake may hold was consumed exactly once ...
    placed = {cid: c for cid, c in fleet["by_contract"].items() if cid not in bronze["refused"]}
    assert bronze["consumed"] == sum(c["accepted"] + c["raw_sent"] for c in placed.values()) + edge["released"]
    # ... and the Kansai robots' stream, which its contract keeps in Osaka, stayed in Kafka: this lake is Tokyo's
    why = bronze["refused"]["robot-joints-kansai-robotics"]
    assert "contract robot-joints-kansai-robotics allows only ap-northeast-3" in why
    after = {t.name: t.rows for t in list_tables(cfg) if t.layer == "bronze"}
    # the fleet's records (step 4), then the cars' telemetry and hard cases, landed by each later
    # iteration and at the end
    later = summary["iterations"][1:]
    landed = bronze["new"] + sum(it["bronze"]["landed"] for it in later) + summary["telemetry"]["landed"]
    assert sum(after.values()) - sum(before.get(k, 0) for k in after) == landed
    for name in ("vehicle_frames_public", "plant_sensors_acme_steel"):
        assert after.get(name, 0) > before.get(name, 0), name
    assert "worker_audio_acme_steel" not in after  # secret data has no bronze table
    assert "robot_joints_kansai_robotics" not in after  # nor the Osaka-only stream, in a Tokyo lake

    # refinement: every silver report reconciles, gold was built
    refine = summary["refine"]
    silver = {r["table"]: r for r in refine["silver"]}
    assert all(r["reconciles"] for r in refine["silver"]), refine["silver"]
    for name in ("vehicle_frames_public", "vehicle_frames_public_anon", "plant_sensors_acme_steel", "fleet_telemetry"):
        assert name in silver, sorted(silver)
    lake = {t.name: t for t in list_tables(cfg) if t.layer == "silver"}
    assert lake["vehicle_frames_public_anon"].properties["fieldloop.appi_level"] == "anonymized"
    gold = {g["table"]: g for g in refine["gold"]}
    assert "vehicle_longitudinal_public" in gold and "fleet_telemetry_dp_daily" in gold

    # training: a candidate registered from the public gold dataset only, with its lineage
    train = summary["train"]
    assert train["model_name"] == "fieldloop.vehicle-longitudinal"
    assert train["uri"] == "models:/fieldloop.vehicle-longitudinal@candidate"
    assert [i.split("@")[0] for i in train["inputs"]] == ["gold/vehicle_longitudinal_public"]
    assert train["lineage_tags"]["fieldloop.lineage.classes"] == "public"
    assert train["lineage_tags"]["fieldloop.lineage.tenants"] == ""
    # the demo's fleet sends enough for a candidate that beats doing nothing on its holdout
    metrics = train["metrics"]
    assert train["beats_persistence"] is (metrics["holdout_rmse_student"] < metrics["holdout_rmse_persistence"])
    assert train["beats_persistence"], metrics
    from mlflow import MlflowClient

    guardrails = summary["guardrails"]
    assert guardrails["approved"] == int(train["version"]), guardrails["failed"]
    client = MlflowClient(cfg.mlflow.uri)
    version = client.get_model_version("fieldloop.vehicle-longitudinal", train["version"])
    assert version.tags["fieldloop.guardrail.verdict"] == "pass"
    assert version.tags["fieldloop.lineage.classes"] == "public"

    # actuation: the candidate passed the guardrails, the broken drill copy did not, the
    # approved version reached every agent through the signed repository, and their telemetry
    # landed in bronze
    broken = guardrails["broken"]
    assert broken["verdict"] == "fail" and any(f.startswith("envelope.") for f in broken["failed"]), broken
    refused = client.get_model_version("fieldloop.vehicle-longitudinal", str(broken["version"]))
    assert refused.tags["fieldloop.guardrail.verdict"] == "fail"
    release = summary["release"]
    assert (release["published"], release["fleet"], release["changed"]) == (int(train["version"]), "public-cars", True)
    # the release asked the fleet for its hard cases: the policy's campaign, signed and running
    from actuation.campaigns import CampaignBook
    from actuation.release.cli import open_repository

    (asked,) = [c for c in CampaignBook(open_repository(cfg)).list("public-cars") if c.id == release["campaign"]]
    assert asked.trigger.expression == "brake>=0.5 or accel_mps2<=-2" and not asked.stopped
    devices = summary["agents"]["devices"]
    assert len(devices) == 3
    for device, s in devices.items():
        assert s["active"] == f"fieldloop.vehicle-longitudinal@{train['version']}", (device, s)
        assert s["window"]["inferences"] > 0 and s["telemetry_delivered"] is True, (device, s)
    # their telemetry landed with the next landing of the field's records: iteration 2's first step
    telemetry = summary["iterations"][1]["bronze"]
    assert telemetry["new"] >= sum(s["window"]["inferences"] for s in devices.values()), telemetry
    assert telemetry["quarantined"] == 0 and summary["telemetry"]["quarantined"] == 0

    # staged rollout: a next fine-tune from the champion passed the guardrails, went through every
    # stage on the simulated cars and became champion; the miscalibrated drill passed the
    # guardrails and was halted at its canary, which no car outside ever ran, and rolled back
    following = summary["next"]
    assert following["trained"] and following["approved"] == following["version"], following
    rollouts = summary["rollouts"]
    good, drill = rollouts["good"], rollouts["drill"]
    assert good["state"] == "complete" and good["devices_activated"] == 40, good
    assert [d["action"] for d in good["decisions"] if d["action"] in ("advance", "complete")] == [
        "advance",
        "advance",
        "advance",
        "complete",
    ]
    completed = [d for d in good["decisions"] if d["action"] == "complete"]
    assert completed and completed[0]["version"] == following["version"]
    assert drill["state"] == "rolled-back" and drill["stage"] == "canary", drill
    assert drill["stray_activations"] == 0 and 0 < drill["devices_activated"] < 40
    assert drill["back_after_s"] is not None
    assert "fallbacks" in drill["reason"]
    # the drill passed the guardrails and the field refused it (@approved moved on to iteration 2's
    # fine-tune, which the guardrails passed after it)
    copy = client.get_model_version("fieldloop.vehicle-longitudinal", str(drill["version"]))
    assert copy.tags["fieldloop.drill"].startswith(f"copy of v{following['version']}: OOD score")
    assert copy.tags["fieldloop.guardrail.verdict"] == "pass"

    # the demo ends with the status screen: the fleet's champion is the rolled-out version, the
    # drill's rollback is an incident of the last day
    status = summary["status"]
    fleets = {f["name"]: f for f in status["fleets"]["fleets"]}
    assert fleets["public-cars"]["champion"]["version"] == (later[-1]["next"]["approved"] or following["version"])
    assert any(i["kind"] == "rollback" for i in status["incidents"]["incidents"]), status["incidents"]

    healthy = {s["name"]: s["healthy"] for s in summary["stack"]}
    assert healthy == {"kafka": True, "mlflow": True, "airflow": True, "release": True}

    # the second iteration: the hard cases the first one's cars sent (a signed campaign, asked for by
    # the release and the rollout) came home and trained the next model, which beat the champion
    # that met them on the cars it held out, and was rolled out in its turn
    assert [it["number"] for it in summary["iterations"]] == [1, 2]
    (second,) = later
    public, acme = "hard_cases_vehicle_longitudinal_public", "hard_cases_vehicle_longitudinal_acme_mobility"
    assert second["bronze"]["hard_cases"]["hard_cases_public"] > 0, second["bronze"]
    gold_rows = {g["table"]: g["rows"] for g in second["refine"]["gold"]}
    assert gold_rows[public] > 0, gold_rows
    tuned = second["next"]
    # whatever the guardrails said, the fine-tune learned from the public hard cases only and was
    # judged on the cars it held out, beside the champion that met them, and recorded so
    tags = tuned["lineage_tags"]
    mixed = json.loads(tags["fieldloop.lineage.hard_cases"])
    assert [t.split("@")[0] for t in mixed["tables"]] == [f"gold/{public}"]
    assert acme not in tags["fieldloop.lineage.tables"]  # a tenant's hard cases never reach the base model
    gain = second["hard_cases"]
    assert gain["champion"] == following["version"] and gain["version"] == tuned["version"], gain
    recorded = client.get_run(client.get_model_version("fieldloop.vehicle-longitudinal", str(tuned["version"])).run_id)
    assert recorded.data.metrics["hard_cases_rmse_student"] == pytest.approx(gain["rmse_new"])
    assert mixed["held_out"]["rmse_student"] == pytest.approx(gain["rmse_new"], abs=1e-6)
    verdict = client.get_model_version("fieldloop.vehicle-longitudinal", str(tuned["version"])).tags
    assert verdict["fieldloop.guardrail.verdict"] == ("pass" if tuned["approved"] else "fail")
    assert {"bronze", "refine", "train and judge", "rollout"} <= set(second["stages"])
    for it in summary["iterations"]:  # every stage timed; a closed loop's stages add up to its closure
        if it["loop_closure_s"] is not None:
            assert sum(it["closure_stages"].values()) == pytest.approx(it["loop_closure_s"], abs=2.0), it
    assert {"fleet", "bronze", "refine", "train", "guardrails", "release", "rollout"} <= set(
        summary["iterations"][0]["stages"]
    )
    assert summary["iterations"][0]["loop_closure_s"] > 0
    if tuned["approved"] is None:
        # Known open problem (issue 20): every fine-tune can miss the champion's 2 % margin on the
        # demo's 2-device frozen holdout. The guardrails then refuse it, nothing is rolled out, and
        # the fleet keeps its champion. That is the right outcome, but it is not the loop closing.
        assert second["rollouts"] == {"good": None, "drill": None}
        pytest.xfail(f"iteration 2: the guardrails refused every fine-tune: {tuned['tries']}")
    assert gain["rmse_new"] < gain["rmse_champion"], gain  # the guardrails' hard-case check passed it
    assert second["rollouts"]["good"]["state"] == "complete" and second["rollouts"]["drill"] is None
    champion = client.get_model_version_by_alias("fieldloop.vehicle-longitudinal", "champion")
    assert champion.version == str(tuned["version"])
    assert second["loop_closure_s"] > 0
