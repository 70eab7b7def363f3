"""The guardrail suite on the real stack: a really trained model version in a real MLflow
server (a private one, started by the project's own stack code), its frozen holdout read
from gold Delta tables written by Spark.

Judging records the verdict where people and the release side look: the alias, the
``fieldloop.guardrail.*`` tags, the signed attestation (verified here with the KeyStore's
public key against the edge files' digests), the report and plots, the model card and the
datasets of the logged model.

The synthetic student trained here violates the plant policy's property (its score drops for
some larger deviations) on these few epochs, so its verdict is recorded as whatever it is and
checked for consistency; the pass path is shown on a copy of that version whose edge file is
a well-behaved score built in the test (``drill.register_copy``: same lineage, holdout and
registry, another file). A drill copy whose int8 graph scales the actuated output is refused,
naming the envelope check with its value and limit, by the API and the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actuation.attestation import sha256_file, verify
from actuation.errors import GuardrailError
from actuation.guardrails.drill import register_broken, register_copy
from actuation.guardrails.judge import ATTESTATION_ARTIFACT, judge
from actuation.guardrails.source import logged_model_id
from actuation.signing import KeyStore
from fieldloop.classes import DataClass
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.datasets import layout
from fieldloop.registry import APPROVED, GUARDRAIL_TAG_PREFIX, EdgeManifest
from tests.stacks import started_private_mlflow
from tests.synthetic_gold import PLANT_SCHEMA, VEHICLE_SCHEMA, write_gold
from tests.unit.test_guardrails import Anomaly, onnx_bytes
from training_jobs.synthetic import plant_rows, vehicle_rows
from training_jobs.train import TrainRequest, train

pytestmark = pytest.mark.integration

MODEL = "fieldloop.plant-anomaly.acme-steel"
FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


@pytest.fixture(scope="module")
def env(cfg: FieldloopConfig, spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("guardrails")
    lake = str(root / "lake")
    write_gold(
        spark,
        lake,
        "plant_anomaly_acme_steel",
        plant_rows(6, 200, 5),
        PLANT_SCHEMA,
        DataClass.RESTRICTED,
        "plant-sensors-acme-steel",
        "acme-steel",
        task="plant-anomaly",
    )
    write_gold(
        spark,
        lake,
        "vehicle_longitudinal_public",
        vehicle_rows(8, 150, 1),
        VEHICLE_SCHEMA,
        DataClass.PUBLIC,
        "vehicle-frames-public",
    )
    settings = {"FIELDLOOP_LAKE_URI": lake, "FIELDLOOP_TRAIN_EPOCHS": "4"}
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with started_private_mlflow(root / "home", cfg, settings) as values:
            yield values
    finally:
        import mlflow

        mlflow.set_tracking_uri(before)  # train() sets the process-wide URI; later modules must not see this server


@pytest.fixture(scope="module")
def tcfg(env: dict[str, str]) -> FieldloopConfig:
    return load_config(env)


@pytest.fixture(scope="module")
def client(tcfg: FieldloopConfig):
    from mlflow import MlflowClient

    return MlflowClient(tcfg.mlflow.uri)


@pytest.fixture(scope="module")
def candidate(tcfg: FieldloopConfig) -> int:
    return int(train(tcfg, TrainRequest("plant-anomaly", "acme-steel")).version)


def guardrail_tags(client, version: int) -> dict[str, str]:
    tags = client.get_model_version(MODEL, str(version)).tags
    return {k.removeprefix(GUARDRAIL_TAG_PREFIX): v for k, v in tags.items() if k.startswith(GUARDRAIL_TAG_PREFIX)}


def attested(client, tcfg: FieldloopConfig, version: int, tmp_path: Path):
    """The version's attestation, verified with the guardrail key against its edge files."""
    run_id = client.get_model_version(MODEL, str(version)).run_id
    edge = Path(client.download_artifacts(run_id, "edge", str(tmp_path / str(version))))
    envelope = Path(client.download_artifacts(run_id, ATTESTATION_ARTIFACT, str(tmp_path / str(version)))).read_bytes()
    subjects = {
        "student.int8.onnx": sha256_file(edge / "student.int8.onnx"),
        "manifest.json": sha256_file(edge / "manifest.json"),
    }
    return verify(envelope, [KeyStore(tcfg.home).public_key("guardrail")], subjects), envelope, edge


def test_the_trained_candidate_is_judged_and_its_verdict_recorded_consistently(
    tcfg: FieldloopConfig, client, candidate: int, tmp_path: Path
) -> None:
    report = judge(tcfg, MODEL)  # the version @candidate points at
    verdict = report.verdict
    assert (verdict.model, verdict.version, verdict.fleets) == (MODEL, candidate, ["acme-plant"])
    print("trained candidate:", verdict.verdict, [f"{c.name}={c.value:.4g} {c.op} {c.limit}" for c in verdict.failed])
    tags = guardrail_tags(client, candidate)
    assert tags["verdict"] == verdict.verdict and tags["failed"] == ",".join(c.name for c in verdict.failed)
    aliases = client.get_registered_model(MODEL).aliases
    assert (aliases.get(APPROVED) == str(candidate)) == report.passed
    signed, _, _ = attested(client, tcfg, candidate, tmp_path)
    assert signed.verdict == verdict.verdict and [c.name for c in signed.failed] == [c.name for c in verdict.failed]
    card = client.get_model_version(MODEL, str(candidate)).description
    assert f"## Guardrail verdict: **{verdict.verdict.upper()}**" in card
    assert all(f"`{c.name}`" in card for c in verdict.failed)
    with pytest.raises(GuardrailError, match=r"fieldloop\.plant-anomaly\.nobody has no version under the @candidate"):
        judge(tcfg, "fieldloop.plant-anomaly.nobody")


@pytest.fixture(scope="module")
def good(tcfg: FieldloopConfig, candidate: int) -> int:
    def well_behaved(_original: Path, dest: Path) -> None:
        dest.write_bytes(onnx_bytes(Anomaly(), layout("plant-anomaly").width))

    return register_copy(tcfg, MODEL, candidate, well_behaved, "a well-behaved score built by the test")


def test_a_passing_version_is_approved_attested_reported_and_carded(
    tcfg: FieldloopConfig, client, good: int, tmp_path: Path
) -> None:
    report = judge(tcfg, MODEL, good)
    verdict = report.verdict
    assert verdict.verdict == "pass", [f"{c.name}={c.value} {c.op} {c.limit}" for c in verdict.failed]
    assert client.get_model_version_by_alias(MODEL, APPROVED).version == str(good)
    assert report.readiness == {
        "model": MODEL,
        "version": good,
        "checks": len(verdict.checks),
        "passed": len(verdict.checks),
        "failed": 0,
        "incidents": 0,
    }

    tags = guardrail_tags(client, good)
    assert tags["verdict"] == "pass" and tags["policy"] == "plant-anomaly@1" and tags["failed"] == ""
    assert tags["judged_at"].startswith(verdict.judged_at.strftime("%Y-%m-%dT%H:%M"))
    assert int(tags["checks_passed"]) == len(verdict.checks) > 15

    mv = client.get_model_version(MODEL, str(good))
    logged = {f.path for f in client.list_artifacts(mv.run_id, "guardrail")}
    assert logged == {
        ATTESTATION_ARTIFACT,
        "guardrail/report.json",
        "guardrail/envelope.png",
        "guardrail/ood_roc.png",
        "guardrail/regression.png",
    }
    signed, envelope, edge = attested(client, tcfg, good, tmp_path)
    assert signed.verdict == "pass" and signed.version == good and signed.fleets == ["acme-plant"]
    assert signed.policy.sha256 == verdict.policy.sha256
    assert signed.lineage == {k: v for k, v in mv.tags.items() if k.startswith("fieldloop.lineage.")}
    assert signed.mlflow_uri == f"models:/{MODEL}/{good}"
    private = (Path(tcfg.home) / "keys/signing/guardrail.pem").read_text().splitlines()[1]
    assert private not in envelope.decode() + json.dumps(report.as_dict(), default=str) + mv.description

    card = mv.description
    manifest = EdgeManifest.from_json((edge / "manifest.json").read_text())
    assert "## Guardrail verdict: **PASS**" in card
    assert manifest.builds["int8"].sha256 in card and "gold/plant_anomaly_acme_steel@v" in card
    assert "acme-steel" in card and "restricted" in card and "value_z" in card

    model = client.get_logged_model(logged_model_id(mv))
    linked = {m.dataset_name for m in model.metrics or [] if m.dataset_name}
    assert any(name.endswith("holdout") for name in linked), linked


def test_the_drill_is_refused_naming_the_envelope_check_by_api_and_cli(
    tcfg: FieldloopConfig, env: dict[str, str], client, good: int
) -> None:
    drill = register_broken(tcfg, MODEL, good, scale=4.0)
    assert drill > good and client.get_model_version_by_alias(MODEL, "candidate").version == str(drill)
    client.set_registered_model_alias(MODEL, APPROVED, str(drill))  # as if approved by mistake before
    client.set_registered_model_alias(MODEL, "champion", str(good))  # judged against it too

    proc = subprocess.run(
        [FIELDLOOP, "guardrail", "--model", MODEL, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["verdict"]["verdict"] == "fail" and report["verdict"]["version"] == drill
    failed = {c["name"]: c for c in report["verdict"]["checks"] if not c["passed"]}
    normal = failed["envelope.normal.anomaly_score"]
    assert normal["value"] > 0.1 and (normal["op"], normal["limit"]) == ("<=", 1e-5)
    assert any(
        line.startswith("envelope.normal.anomaly_score: ") and "(limit <= 1e-05)" in line for line in report["failed"]
    )
    assert APPROVED not in client.get_registered_model(MODEL).aliases  # withdrawn from the drill version
    # Scaling scores by 4 leaves their ranking, so the AUROC against the champion's file is unchanged.
    versus = next(c for c in report["verdict"]["checks"] if c["name"] == "regression.auroc.loss_vs_champion")
    assert versus["passed"] and abs(versus["value"]) < 1e-3
    tags = guardrail_tags(client, drill)
    assert tags["verdict"] == "fail" and "envelope.normal.anomaly_score" in tags["failed"]

    human = subprocess.run(
        [FIELDLOOP, "guardrail", "--model", MODEL, "--version", str(drill)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert human.returncode == 1
    assert "FAIL" in human.stdout and "envelope.normal.anomaly_score" in human.stdout and "FAILED" in human.stdout


def test_a_base_vehicle_model_is_judged_for_every_fleet_of_its_task(tcfg: FieldloopConfig, client) -> None:
    version = int(train(tcfg, TrainRequest("vehicle-longitudinal")).version)
    report = judge(tcfg, "fieldloop.vehicle-longitudinal", fleets=None)
    verdict = report.verdict
    assert (verdict.version, verdict.tenant, verdict.fleets) == (version, None, ["public-cars", "acme-vans"])
    print("vehicle candidate:", verdict.verdict, [f"{c.name}={c.value:.4g} {c.op} {c.limit}" for c in verdict.failed])
    names = {c.name for c in verdict.checks}
    assert {
        "regression.rmse.gain_over_baseline",
        "envelope.out_of_range.accel_mps2",
        "envelope.step.accel_mps2",
        "property.more-road-users-never-raise-accel",
        "property.harder-braking-never-raises-accel",
        "ood.auroc",
        "edge.public-cars.p99_us",
        "edge.acme-vans.bytes",
        "governance.fleets_not_allowed",
    } <= names
    assert all(c.passed for c in verdict.checks if c.kind in ("governance", "edge"))
    assert report.scores["baseline_name"].startswith("persistence") and report.scores["candidate"] > 0
    tags = client.get_model_version("fieldloop.vehicle-longitudinal", str(version)).tags
    assert tags[GUARDRAIL_TAG_PREFIX + "verdict"] == verdict.verdict


def test_a_fine_tune_that_learned_from_hard_cases_is_judged_against_the_model_that_met_them(
    tcfg: FieldloopConfig, client, spark
) -> None:
    """Last in the module: it makes a vehicle champion and a hard-case table every later fine-tune would read."""
    base = "fieldloop.vehicle-longitudinal"
    seeded = train(tcfg, TrainRequest("vehicle-longitudinal", seed=8, from_champion=False))
    client.set_registered_model_alias(base, "champion", seeded.version)
    met = (base, seeded.version)  # what the cars ran when they met these
    rows = [(*r, *met) for r in vehicle_rows(8, 60, 13, "p1hard")]
    schema = f"{VEHICLE_SCHEMA}, model_name STRING, model_version STRING"
    write_gold(
        spark, tcfg.lake, "hard_cases_vehicle_longitudinal_public", rows, schema, DataClass.PUBLIC, "hard-cases-public"
    )
    tuned = train(tcfg, TrainRequest("vehicle-longitudinal", seed=9))
    assert tuned.rows["hard_cases_holdout"] > 0

    report = judge(tcfg, base, int(tuned.version))
    (check,) = [c for c in report.verdict.checks if c.name == "regression.hard_cases.rmse.gain_vs_met"]
    assert check.value is not None and check.passed == (check.value > 0)
    assert f"{base} v{seeded.version}" in check.detail
    assert f"{tuned.rows['hard_cases_holdout']} hard-case rows" in check.detail
    # the same gain the training run measured against the champion's PyTorch weights, within int8 rounding
    trained = 1 - tuned.metrics["hard_cases_rmse_student"] / tuned.metrics["hard_cases_rmse_champion"]
    assert check.value == pytest.approx(trained, abs=0.05)

    # a version that learned from none is not judged on them
    plain = train(tcfg, TrainRequest("vehicle-longitudinal", seed=9, hard_cases=False))
    assert not [c for c in judge(tcfg, base, int(plain.version)).verdict.checks if "hard_cases" in c.name]
