"""Training on the real stack: gold Delta tables written by Spark, a real MLflow server.

The module starts an MLflow server of its own (its own home and port) so model names,
aliases and frozen holdouts never mix with the demo's. Its lake holds gold tables of
every kind the training rule must tell apart: public, one tenant's restricted data, a raw
secret table and a public table whose contract allows only evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fieldloop.classes import DataClass
from fieldloop.config import FieldloopConfig, load_config
from fieldloop.contracts import packaged_contracts_dir
from fieldloop.errors import ContaminationError
from fieldloop.lineage import ModelLineage
from fieldloop.registry import EdgeManifest
from tests.stacks import started_private_mlflow
from tests.synthetic_gold import PLANT_SCHEMA, VEHICLE_SCHEMA, write_gold
from training_jobs.errors import ChampionError, DatasetError, HoldoutMovedError
from training_jobs.synthetic import plant_rows, vehicle_rows
from training_jobs.train import TrainRequest, train

pytestmark = pytest.mark.integration

BASE = "fieldloop.vehicle-longitudinal"
FIELDLOOP = str(Path(sys.executable).parent / "fieldloop")


@pytest.fixture(scope="module")
def env(cfg: FieldloopConfig, spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("training")
    contracts = root / "contracts"
    shutil.copytree(packaged_contracts_dir(), contracts)
    evalonly = (contracts / "vehicle-frames-public.toml").read_text()
    evalonly = (
        evalonly.replace('id = "vehicle-frames-public"', 'id = "robot-joints-evalonly"')
        .replace('stream = "vehicle_frames"', 'stream = "robot_joints"')
        .replace(
            'allowed_uses = ["base_training", "tenant_finetune", "rag", "evaluation"]', 'allowed_uses = ["evaluation"]'
        )
    )
    # Its gold dataset is a table of its own: gold names are unique across contracts.
    evalonly = evalonly.replace('name = "vehicle_longitudinal_public"', 'name = "vehicle_longitudinal_evalonly"')
    (contracts / "robot-joints-evalonly.toml").write_text(evalonly)
    lake = str(root / "lake")
    write_gold(
        spark,
        lake,
        "vehicle_longitudinal_public",
        vehicle_rows(8, 150, 1),
        VEHICLE_SCHEMA,
        DataClass.PUBLIC,
        "vehicle-frames-public",
    )
    write_gold(
        spark,
        lake,
        "vehicle_longitudinal_acme_mobility",
        vehicle_rows(4, 150, 2, "p1acme"),
        VEHICLE_SCHEMA,
        DataClass.RESTRICTED,
        "vehicle-frames-acme-mobility",
        "acme-mobility",
    )
    write_gold(
        spark,
        lake,
        "vehicle_longitudinal_secret",
        vehicle_rows(2, 50, 3, "p1sec"),
        VEHICLE_SCHEMA,
        DataClass.SECRET,
        "worker-audio-acme-steel",
        "acme-steel",
    )
    write_gold(
        spark,
        lake,
        "vehicle_longitudinal_evalonly",
        vehicle_rows(2, 50, 4, "p1eval"),
        VEHICLE_SCHEMA,
        DataClass.PUBLIC,
        "robot-joints-evalonly",
    )
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
    settings = {"FIELDLOOP_LAKE_URI": lake, "FIELDLOOP_CONTRACTS_DIR": str(contracts), "FIELDLOOP_TRAIN_EPOCHS": "4"}
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with started_private_mlflow(root / "home", cfg, settings) as values:
            yield values
    finally:
        import mlflow

        # train() sets MLflow's process-wide tracking URI, which MLflow also exports as
        # MLFLOW_TRACKING_URI; later modules must not find this module's stopped server there.
        mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def tcfg(env: dict[str, str]) -> FieldloopConfig:
    return load_config(env)


def client(tcfg: FieldloopConfig):
    from mlflow import MlflowClient

    return MlflowClient(tcfg.mlflow.uri)


def versions(tcfg: FieldloopConfig, name: str) -> list[str]:
    return sorted(v.version for v in client(tcfg).search_model_versions(f"name='{name}'"))


def runs(tcfg: FieldloopConfig, task: str) -> int:
    experiment = client(tcfg).get_experiment_by_name(f"fieldloop.{task}")
    return len(client(tcfg).search_runs([experiment.experiment_id])) if experiment else 0


def experiment_tags(tcfg: FieldloopConfig, task: str) -> dict[str, str]:
    experiment = client(tcfg).get_experiment_by_name(f"fieldloop.{task}")
    return dict(experiment.tags) if experiment else {}


def test_registered_version_carries_lineage_and_its_artifacts_load(tcfg: FieldloopConfig, tmp_path: Path) -> None:
    import mlflow
    import onnxruntime as ort
    import torch

    result = train(tcfg, TrainRequest("vehicle-longitudinal", seed=3))
    assert result is not None and result.uri == f"models:/{BASE}@candidate"
    c = client(tcfg)
    version = c.get_model_version_by_alias(BASE, "candidate")
    assert version.version == result.version and version.run_id == result.run_id

    lineage = ModelLineage.from_mlflow_tags(version.tags)
    (only,) = lineage.inputs
    assert (only.table, only.data_class, only.contract_id, only.tenant) == (
        "gold/vehicle_longitudinal_public",
        DataClass.PUBLIC,
        "vehicle-frames-public",
        None,
    )
    assert only.delta_version == int(result.inputs[0].rsplit("@v", 1)[1])
    assert (
        lineage.data_classes == ["public"] and lineage.tenants == [] and lineage.contracts == ["vehicle-frames-public"]
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert lineage.extra["git_commit"].startswith(head)
    assert lineage.extra["task"] == "vehicle-longitudinal" and lineage.extra["seed"] == "3"
    assert json.loads(lineage.extra["holdout"])["tables"] == {only.path: only.delta_version}

    run = c.get_run(result.run_id)
    assert run.data.params["model_name"] == BASE and run.data.params["init"] == "scratch"
    assert len(c.get_metric_history(result.run_id, "teacher_loss")) == 4  # one point per epoch
    contexts = {}
    for d in run.inputs.dataset_inputs:
        source = json.loads(d.dataset.source)
        assert d.dataset.source_type == "delta_table" and source["path"] == only.path
        assert source["delta_table_version"] == only.delta_version
        contexts[d.tags[0].value] = d.dataset.name
    assert set(contexts) == {"training", "holdout"}

    # The registered PyTorch student and its ONNX export give the same outputs.
    x = np.asarray([row[2] for row in vehicle_rows(1, 30, 99)[:8]], dtype=np.float32)
    x[4:] += np.random.default_rng(0).normal(0, 3, (4, x.shape[1])).astype(np.float32)  # and some far off
    model = mlflow.pytorch.load_model(f"models:/{BASE}/{result.version}")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert expected.shape == (8, 2) and ((expected[:, 1] >= 0) & (expected[:, 1] < 1)).all()
    edge = Path(c.download_artifacts(result.run_id, "edge", str(tmp_path)))
    fp32 = ort.InferenceSession(str(edge / "student.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(edge / "student.int8.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(fp32.run(None, {"features": x})[0], expected, atol=1e-4)
    assert np.abs(int8.run(None, {"features": x})[0] - expected).max() < 0.25
    manifest = EdgeManifest.from_json((edge / "manifest.json").read_text())  # validated as actuation reads it
    assert manifest.model == BASE and manifest.input_dim == x.shape[1]
    assert manifest.builds["fp32"].bytes == (edge / "student.onnx").stat().st_size
    assert manifest.builds["fp32"].sha256 == hashlib.sha256((edge / "student.onnx").read_bytes()).hexdigest()
    assert manifest.builds["int8"].bytes < manifest.builds["fp32"].bytes
    assert manifest.outputs == ["accel_mps2", "ood_score"]
    self_test = np.asarray(manifest.self_test_inputs, dtype=np.float32)
    assert len(self_test) == 8
    for session, build in ((fp32, manifest.builds["fp32"]), (int8, manifest.builds["int8"])):
        got = session.run(None, {manifest.input_name: self_test})[0]
        assert np.abs(got - np.asarray(build.self_test_outputs)).max() <= manifest.self_test_tolerance
    assert run.data.metrics["edge_fp32_p99_us"] > 0 and run.data.metrics["edge_int8_bytes"] > 0
    teacher = mlflow.pytorch.load_model(f"runs:/{result.run_id}/teacher")
    assert teacher(torch.from_numpy(x)).shape == (8, 2)


@pytest.mark.parametrize(
    ("tenant", "table", "rule"),
    [
        (None, "vehicle_longitudinal_acme_mobility", "restricted-not-in-base"),
        ("kansai-robotics", "vehicle_longitudinal_acme_mobility", "tenant-isolation"),
        (None, "vehicle_longitudinal_secret", "secret-never-trains"),
        ("acme-steel", "vehicle_longitudinal_secret", "secret-never-trains"),
        (None, "vehicle_longitudinal_evalonly", "contract-use"),
    ],
)
def test_contaminating_inputs_are_refused_and_nothing_is_registered(
    tcfg: FieldloopConfig, tenant: str | None, table: str, rule: str
) -> None:
    name = BASE + (f".{tenant}" if tenant else "")
    before_versions, before_runs = versions(tcfg, name), runs(tcfg, "vehicle-longitudinal")
    before_tags = experiment_tags(tcfg, "vehicle-longitudinal")
    with pytest.raises(ContaminationError) as refused:
        train(tcfg, TrainRequest("vehicle-longitudinal", tenant, ("vehicle_longitudinal_public", table)))
    message = str(refused.value)
    assert f"gold/{table}" in message and f"[rule: {rule}]" in message and "nothing was registered" in message
    assert "gold/vehicle_longitudinal_public:" not in message  # the allowed input is not blamed
    assert versions(tcfg, name) == before_versions
    assert runs(tcfg, "vehicle-longitudinal") == before_runs  # refused before a run was even started
    assert experiment_tags(tcfg, "vehicle-longitudinal") == before_tags  # and no holdout was frozen


def test_the_same_pinned_versions_and_seed_give_the_same_metrics(tcfg: FieldloopConfig) -> None:
    def once(seed: int) -> dict:
        result = train(tcfg, TrainRequest("vehicle-longitudinal", seed=seed, register=False, from_champion=False))
        assert result is not None and result.version is None
        keep = {k: v for k, v in result.metrics.items() if k.startswith("holdout_")}
        return {"metrics": keep, "curves": result.epochs, "inputs": result.inputs}

    first, second, other = once(11), once(11), once(12)
    assert first == second
    assert other["metrics"] != first["metrics"]  # the seed matters, so equality above is not vacuous


def test_fine_tuning_starts_from_the_champion(tcfg: FieldloopConfig) -> None:
    seeded = train(tcfg, TrainRequest("vehicle-longitudinal", seed=5, from_champion=False))
    client(tcfg).set_registered_model_alias(BASE, "champion", seeded.version)
    tuned = train(tcfg, TrainRequest("vehicle-longitudinal", seed=6))
    scratch = train(tcfg, TrainRequest("vehicle-longitudinal", seed=6, register=False, from_champion=False))
    assert tuned.init == f"champion v{seeded.version} of {BASE}"
    assert client(tcfg).get_run(tuned.run_id).data.params["init"] == tuned.init
    assert tuned.metrics["first_epoch_loss"] < 0.5 * scratch.metrics["first_epoch_loss"]
    # a tenant model without a champion of its own starts from the base champion (public weights)
    tuned_lineage = ModelLineage.from_mlflow_tags(client(tcfg).get_model_version(BASE, tuned.version).tags)
    assert tuned_lineage.extra["parent"] == tuned.init
    tenant = train(tcfg, TrainRequest("vehicle-longitudinal", "acme-mobility", seed=6))
    assert tenant.init == tuned.init and tenant.version is not None
    lineage = ModelLineage.from_mlflow_tags(
        client(tcfg).get_model_version(f"{BASE}.acme-mobility", tenant.version).tags
    )
    assert lineage.tenants == ["acme-mobility"] and lineage.data_classes == ["public", "restricted"]
    # the weights came from the base champion: its inputs are inherited into the tenant model's lineage
    assert {(i.table, i.delta_version) for i in tuned_lineage.inputs} <= {
        (i.table, i.delta_version) for i in lineage.inputs
    }

    # a champion whose data cannot be checked (registered without fieldloop lineage) is not built upon
    bare = client(tcfg).create_model_version(BASE, f"runs:/{seeded.run_id}/model", seeded.run_id)
    client(tcfg).set_registered_model_alias(BASE, "champion", bare.version)
    try:
        with pytest.raises(ChampionError, match="has no fieldloop lineage") as refused:
            train(tcfg, TrainRequest("vehicle-longitudinal", seed=6, register=False))
        assert (refused.value.model, refused.value.version, refused.value.problem) == (BASE, bare.version, "lineage")
    finally:
        client(tcfg).set_registered_model_alias(BASE, "champion", seeded.version)


def test_tenant_plant_model_and_a_base_model_without_public_data(tcfg: FieldloopConfig) -> None:
    result = train(tcfg, TrainRequest("plant-anomaly", "acme-steel"))
    assert result.uri == "models:/fieldloop.plant-anomaly.acme-steel@candidate"
    assert 0.5 < result.metrics["holdout_auroc_teacher"] <= 1.0
    with pytest.raises(DatasetError, match="plant_anomaly_acme_steel \\(contract-use, restricted-not-in-base\\)"):
        train(tcfg, TrainRequest("plant-anomaly"))


def test_torchrun_with_two_processes_logs_one_run(env: dict[str, str], tcfg: FieldloopConfig) -> None:
    before = runs(tcfg, "vehicle-longitudinal")
    proc = subprocess.run(
        [
            FIELDLOOP,
            "train",
            "--task",
            "vehicle-longitudinal",
            "--nproc",
            "2",
            "--epochs",
            "2",
            "--no-register",
            "--from-scratch",
            "--json",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # --json: stdout holds the JSON alone
    assert runs(tcfg, "vehicle-longitudinal") == before + 1
    run = client(tcfg).get_run(result["run_id"])
    assert run.data.params["world_size"] == "2" and run.info.status == "FINISHED"
    assert len(client(tcfg).get_metric_history(result["run_id"], "student_loss")) == 2


def test_a_holdout_frozen_on_tables_the_run_does_not_read_is_not_silently_replaced(tcfg: FieldloopConfig) -> None:
    tenant = "acme-mobility"
    frozen = train(tcfg, TrainRequest("vehicle-longitudinal", tenant, reset_holdout=True, from_champion=False))
    assert len(frozen.holdout["tables"]) == 2  # public and the tenant's own
    with pytest.raises(HoldoutMovedError, match=r"vehicle_longitudinal_acme_mobility, which this run does not read"):
        train(tcfg, TrainRequest("vehicle-longitudinal", tenant, ("vehicle_longitudinal_public",), register=False))
    result = train(
        tcfg,
        TrainRequest(
            "vehicle-longitudinal", tenant, ("vehicle_longitudinal_public",), register=False, reset_holdout=True
        ),
    )
    assert list(result.holdout["tables"]) == [f"{tcfg.lake}/gold/vehicle_longitudinal_public"]
    assert result.holdout["cut"] == frozen.holdout["cut"]  # the task's device split never moves


def test_duplicate_inputs_are_refused(tcfg: FieldloopConfig) -> None:
    with pytest.raises(DatasetError, match="vehicle_longitudinal_public named more than once"):
        train(
            tcfg,
            TrainRequest(
                "vehicle-longitudinal", tables=("vehicle_longitudinal_public", "vehicle_longitudinal_public@1")
            ),
        )


def test_a_fine_tune_learns_from_the_hard_cases_it_may_read_and_is_judged_on_held_out_devices(
    tcfg: FieldloopConfig, spark
) -> None:
    """Last in the module: the hard-case tables it writes would change every fine-tune after it."""
    from training_jobs.holdout import HoldoutCut, in_holdout

    public, acme = "hard_cases_vehicle_longitudinal_public", "hard_cases_vehicle_longitudinal_acme_mobility"
    rows = vehicle_rows(8, 60, 11, "p1hard")
    write_gold(spark, tcfg.lake, public, rows, VEHICLE_SCHEMA, DataClass.PUBLIC, "hard-cases-public")
    acme_rows = vehicle_rows(3, 60, 12, "p1hacme")
    write_gold(
        spark,
        tcfg.lake,
        acme,
        acme_rows,
        VEHICLE_SCHEMA,
        DataClass.RESTRICTED,
        "hard-cases-acme-mobility",
        "acme-mobility",
    )
    seeded = train(tcfg, TrainRequest("vehicle-longitudinal", seed=8, from_champion=False))
    client(tcfg).set_registered_model_alias(BASE, "champion", seeded.version)

    tuned = train(tcfg, TrainRequest("vehicle-longitudinal", seed=9))
    lineage = ModelLineage.from_mlflow_tags(client(tcfg).get_model_version(BASE, tuned.version).tags)
    tables = {i.table for i in lineage.inputs}
    assert f"gold/{public}" in tables
    assert f"gold/{acme}" not in tables  # a tenant's hard cases never reach the base model
    assert lineage.data_classes == ["public"]
    mixed = json.loads(lineage.extra["hard_cases"])
    (named,) = mixed["tables"]
    assert named.startswith(f"gold/{public}@v") and mixed["weight"] == tcfg.train.hard_case_weight
    # the split as the lineage records it: held-out devices' hard cases were never trained on
    devices = np.array([r[0] for r in rows], dtype=object)
    cut = HoldoutCut.frozen(experiment_tags(tcfg, "vehicle-longitudinal"))
    held = in_holdout(devices, cut.salt, cut.cut) | in_holdout(
        devices, mixed["holdout_salt"], int(mixed["holdout_fraction"] * 2**64)
    )
    assert tuned.rows["hard_cases_holdout"] == held.sum() > 0
    assert tuned.rows["hard_cases_train"] == (~held).sum() > 0
    assert tuned.rows["hard_cases_holdout_devices"] == len(set(devices[held]))
    # judged on them beside the champion that met them, and so recorded in MLflow
    recorded = client(tcfg).get_run(tuned.run_id).data.metrics
    for metric in ("hard_cases_rmse_student", "hard_cases_rmse_champion", "hard_cases_rmse_persistence"):
        assert recorded[metric] == pytest.approx(tuned.metrics[metric]) and recorded[metric] > 0
    # ... and in the version's lineage, beside the tables they came from
    held_out = json.loads(tuned.lineage_tags["fieldloop.lineage.hard_cases"])["held_out"]
    assert held_out["rmse_student"] == pytest.approx(tuned.metrics["hard_cases_rmse_student"], abs=1e-6)
    assert held_out["rmse_champion"] == pytest.approx(tuned.metrics["hard_cases_rmse_champion"], abs=1e-6)
    assert held_out["rows"] == tuned.rows["hard_cases_holdout"]

    # the tenant's fine-tune reads its own hard cases and the public ones
    tenant = train(tcfg, TrainRequest("vehicle-longitudinal", "acme-mobility", seed=9, reset_holdout=True))
    tenant_lineage = ModelLineage.from_mlflow_tags(
        client(tcfg).get_model_version(f"{BASE}.acme-mobility", tenant.version).tags
    )
    assert {f"gold/{public}", f"gold/{acme}"} <= {i.table for i in tenant_lineage.inputs}

    # asked not to, or with no champion to fine-tune, a run reads no hard case
    plain = train(tcfg, TrainRequest("vehicle-longitudinal", seed=9, register=False, hard_cases=False))
    scratch = train(tcfg, TrainRequest("vehicle-longitudinal", seed=9, register=False, from_champion=False))
    for result in (plain, scratch):
        assert result.rows["hard_cases_train"] == result.rows["hard_cases_holdout"] == 0
        assert not any("hard_cases" in t for t in result.lineage_tags["fieldloop.lineage.tables"].split(","))
        assert "fieldloop.lineage.hard_cases" not in result.lineage_tags
