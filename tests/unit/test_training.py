"""Training pieces without services: split, models, metrics, edge export, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from training_jobs.data import parse_pin
from training_jobs.errors import DatasetError, ExportError
from training_jobs.holdout import device_hash, in_holdout
from training_jobs.tasks import auroc, get_task


def test_holdout_membership_is_stable_and_a_device_is_never_on_both_sides() -> None:
    devices = np.array([f"p1{i:04x}" for i in range(200)] * 3, dtype=object)
    cut = sorted(device_hash("t", d) for d in set(devices))[39]  # 40 of 200 devices
    mask = in_holdout(devices, "t", cut)
    assert (mask == in_holdout(devices[::-1], "t", cut)[::-1]).all()  # row order does not matter
    held = set(devices[mask])
    assert len(held) == 40 and not held & set(devices[~mask])
    assert set(devices[in_holdout(devices, "other-task", cut)]) != held  # the salt separates tasks


def test_auroc_matches_pair_counting() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert auroc(scores, labels) == pytest.approx(pairs)
    assert auroc(np.arange(10.0), np.arange(10) >= 5) == 1.0


def test_ood_score_is_bounded_and_grows_away_from_the_training_data() -> None:
    import torch

    teacher, student = get_task("vehicle-longitudinal").build(53)
    x = torch.randn(500, 53) * 2 + 1
    get_task("vehicle-longitudinal").calibrate(teacher, student, x, normalization=True)
    near, far = student(x[:50])[:, 1], student(x[:50] + 20)[:, 1]
    assert ((near >= 0) & (near < 1)).all() and ((far >= 0) & (far < 1)).all()
    assert far.min() > near.max()
    assert float((student(x)[:, 1] > 0.5).float().mean()) <= 0.02  # 0.5 = the training data's 99th percentile


def test_anomaly_score_is_bounded() -> None:
    import torch

    task = get_task("plant-anomaly")
    teacher, student = task.build(10)
    x = torch.randn(300, 10)
    task.calibrate(teacher, student, x, normalization=True)
    task.after_teacher(teacher, student, x)
    for model in (teacher, student):
        s = model(x)
        assert s.shape == (300, 1) and ((s >= 0) & (s < 1)).all()


def test_edge_build_reproduces_the_student_and_refuses_a_wrong_export(tmp_path: Path, monkeypatch) -> None:
    import torch

    from training_jobs import export

    torch.manual_seed(0)
    task = get_task("vehicle-longitudinal")
    teacher, student = task.build(53)
    x = np.random.default_rng(0).normal(size=(32, 53)).astype(np.float32)
    task.calibrate(teacher, student, torch.from_numpy(x), normalization=True)
    builds = export.build_edge(student, x, tmp_path / "ok", runs=50)
    assert builds["fp32"].max_abs_diff <= export.FP32_TOLERANCE
    assert builds["int8"].bytes < builds["fp32"].bytes and builds["int8"].p99_us > 0

    _, other = task.build(53)  # an export of different weights must not pass the check
    original = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda model, dim, path: original(other, dim, path))
    with pytest.raises(ExportError, match="differs from PyTorch") as refused:
        export.build_edge(student, x, tmp_path / "bad", runs=10)
    assert refused.value.build == "fp32" and refused.value.max_abs_diff > refused.value.tolerance


def test_the_edge_manifest_lets_a_device_self_test_each_build(tmp_path: Path) -> None:
    """What a device does after loading a build: the manifest's rows through the file, as one batch."""
    import onnxruntime as ort
    import torch

    from fieldloop.registry import EdgeManifest
    from training_jobs import export

    torch.manual_seed(0)
    task = get_task("vehicle-longitudinal")
    teacher, student = task.build(53)
    x = np.random.default_rng(0).normal(size=(64, 53)).astype(np.float32)
    task.calibrate(teacher, student, torch.from_numpy(x), normalization=True)
    self_test = export.self_test_rows(x)
    assert len(self_test) == export.SELF_TEST_ROWS and (self_test[0] == x[0]).all() and (self_test[-1] == x[-1]).all()
    builds = export.build_edge(student, x, tmp_path, runs=20, self_test=self_test)
    manifest = EdgeManifest.from_json(
        export.edge_manifest(
            task.name, "fieldloop.vehicle-longitudinal", ["accel_mps2", "ood_score"], builds, self_test
        ).to_json()
    )
    assert manifest.input_dim == 53 and manifest.self_test_tolerance == export.SELF_TEST_TOLERANCE
    rows = np.asarray(manifest.self_test_inputs, dtype=np.float32)
    assert (rows == self_test).all()  # float32 rows survive JSON exactly
    outputs = {}
    for label, build in manifest.builds.items():
        session = ort.InferenceSession(str(tmp_path / build.file), providers=["CPUExecutionProvider"])
        outputs[label] = session.run(None, {manifest.input_name: rows})[0]
        expected = np.asarray(build.self_test_outputs)
        assert np.abs(outputs[label] - expected).max() <= manifest.self_test_tolerance, label
    # Each build answers with its own outputs: int8's are not fp32's, so a swapped file fails its self-test.
    swapped = np.abs(outputs["int8"] - np.asarray(manifest.builds["fp32"].self_test_outputs)).max()
    assert swapped > manifest.self_test_tolerance


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vehicle_longitudinal_public", ("vehicle_longitudinal_public", None)),
        ("gold/vehicle_longitudinal_public@3", ("vehicle_longitudinal_public", 3)),
        ("vehicle_longitudinal_public@v12", ("vehicle_longitudinal_public", 12)),
    ],
)
def test_parse_pin(text: str, expected: tuple) -> None:
    assert parse_pin(text) == expected


def test_parse_pin_refuses_what_is_not_a_table() -> None:
    with pytest.raises(DatasetError, match="NAME@VERSION"):
        parse_pin("../etc/passwd")


def test_train_command_help_and_unknown_task() -> None:
    from fieldloop.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--task", "--tenant", "--table", "--nproc", "--from-scratch", "--reset-holdout", "--json"):
        assert option in result.output
    result = runner.invoke(main, ["train", "--task", "nope"])
    assert result.exit_code == 2 and "vehicle-longitudinal" in result.output


def test_gold_changes_pick_the_models_that_learn_from_them() -> None:
    from fieldloop.contracts import load_contracts
    from training_jobs.schedule import models_for

    contracts = load_contracts()

    def names(*args: object) -> list[str]:
        return [t.name for t in models_for(contracts, *args)]

    assert names(["vehicle_longitudinal_acme_mobility"]) == ["fieldloop.vehicle-longitudinal.acme-mobility"]
    assert names(["vehicle_longitudinal_public"]) == [
        "fieldloop.vehicle-longitudinal",
        "fieldloop.vehicle-longitudinal.acme-mobility",
    ]
    assert names(["plant_anomaly_acme_steel"]) == ["fieldloop.plant-anomaly.acme-steel"]
    assert names(["fleet_telemetry_hourly"]) == []  # not a training dataset
    # what a fleet sent home under a release's campaign fine-tunes the models that may learn from it
    assert names(["hard_cases_vehicle_longitudinal_acme_mobility"]) == ["fieldloop.vehicle-longitudinal.acme-mobility"]
    assert names(["hard_cases_vehicle_longitudinal_public"]) == names(["vehicle_longitudinal_public"])
    assert len(names(None)) == 3
    assert names(None, "plant-anomaly", "acme-steel") == ["fieldloop.plant-anomaly.acme-steel"]
    assert names(None, None, "acme-mobility") == ["fieldloop.vehicle-longitudinal.acme-mobility"]
    with pytest.raises(Exception, match="known tasks: plant-anomaly, vehicle-longitudinal"):
        models_for(contracts, None, "nope")


def test_more_road_users_or_harder_braking_never_raise_the_command_whatever_the_weights() -> None:
    """By construction: random weights, random rows, each never-raise feature moved up."""
    import torch

    task = get_task("vehicle-longitudinal")
    torch.manual_seed(3)
    teacher, student = task.build(task.layout.width)
    x = torch.randn(512, task.layout.width) * 3
    for net in (teacher, student):
        for p in net.parameters():  # far from the zero init, as training could leave them
            p.data.normal_(0, 1)
        net.std.uniform_(0.5, 2.0)
        for name in task.never_raise:
            moved = x.clone()
            moved[:, task.layout.index(name)] += torch.rand(512) * 4
            with torch.no_grad():
                assert (net.predict(moved) <= net.predict(x) + 1e-5).all(), name


def test_the_vehicle_command_saturates_at_the_actuator_range_the_guardrails_enforce() -> None:
    import torch

    from actuation.contract import load_runtime_limits

    task = get_task("vehicle-longitudinal")
    (limit,) = load_runtime_limits("vehicle-longitudinal").outputs
    assert task.command_range == (limit.min, limit.max)
    _, student = task.build(task.layout.width)
    for p in student.parameters():
        p.data.normal_(0, 5)
    with torch.no_grad():
        out = student(torch.randn(256, task.layout.width) * 10)[:, 0]
    assert out.min() >= limit.min and out.max() <= limit.max


def test_the_vehicle_command_adds_at_most_the_runtime_step_to_the_vehicles_own() -> None:
    """Whatever the weights, between two frames the command moves at most 2 x max_correction
    beyond the measured acceleration's own move, and that is inside the monitor's max_step."""
    import numpy as np
    import torch

    from actuation.contract import load_runtime_limits
    from actuation.guardrails.checks.envelope import largest_step

    task = get_task("vehicle-longitudinal")
    (limit,) = load_runtime_limits("vehicle-longitudinal").outputs
    assert limit.max_step is not None and 2 * task.max_correction < limit.max_step
    _, student = task.build(task.layout.width)
    torch.manual_seed(3)
    for p in student.parameters():
        p.data.normal_(0, 5)
    x = torch.randn(512, task.layout.width) * 10  # every frame unlike the one before
    with torch.no_grad():
        out = student(x).numpy()
    current = x[:, task.layout.index(task.layout.target_signal)].numpy()
    assert np.abs(out[:, 0] - np.clip(current, *task.command_range)).max() <= task.max_correction + 1e-5
    step = largest_step(out, [np.arange(512)], 0, current)
    assert 1.0 < step <= 2 * task.max_correction + 1e-5  # the bound is reached, not avoided
