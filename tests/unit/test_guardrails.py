"""The guardrail suite's checks on small ONNX models built here (no MLflow, no services).

Each model is a few torch operations exported to ONNX and run the way the suite runs a
candidate (ONNX Runtime, one thread, batch 1). A well-behaved model passes every check of the
task's real policy; each broken one fails the check it breaks, by name, with its value.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from actuation.contract import Fleet
from actuation.errors import GuardrailError
from actuation.guardrails.checks.governance import Facts
from actuation.guardrails.policy import load_policy
from actuation.guardrails.runner import OnnxModel
from actuation.guardrails.suite import Subject, SuiteResult, run_suite
from fieldloop.datasets import layout

VEHICLE = layout("vehicle-longitudinal")
PLANT = layout("plant-anomaly")
CARS = Fleet(name="public-cars", task="vehicle-longitudinal", max_model_bytes=262144, max_p99_us=20000)
VANS = Fleet(
    name="acme-vans", task="vehicle-longitudinal", tenant="acme-mobility", max_model_bytes=262144, max_p99_us=20000
)
OTHERS = Fleet(
    name="other-vans", task="vehicle-longitudinal", tenant="other-co", max_model_bytes=262144, max_p99_us=20000
)
MILL = Fleet(name="acme-plant", task="plant-anomaly", tenant="acme-steel", max_model_bytes=131072, max_p99_us=20000)


class Longitudinal(nn.Module):
    """Commands a fraction of the current acceleration, less for road users and braking, clamped;
    an OOD score from the distance to the training mean. ``gain`` and ``eager`` break it."""

    def __init__(self, x: np.ndarray, gain: float = 0.5, eager: float = 0.0, clamp: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(x.mean(0)))
        self.register_buffer("std", torch.from_numpy(np.where(x.std(0) > 1e-6, x.std(0), 1.0).astype(np.float32)))
        d = torch.linalg.vector_norm((torch.from_numpy(x) - self.mean) / self.std, dim=1)
        self.register_buffer("q99", torch.quantile(d, 0.99))
        self.accel, self.brake = VEHICLE.index("accel_mps2"), VEHICLE.index("brake")
        self.users = [VEHICLE.index(n) for n in VEHICLE.extras]
        self.gain, self.eager, self.clamp = gain, eager, clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        users = x[:, self.users].sum(-1, keepdim=True)
        cmd = self.gain * x[:, self.accel : self.accel + 1] - 0.1 * users * (1 - self.eager) + self.eager * users
        cmd = cmd - x[:, self.brake : self.brake + 1]
        if self.clamp:
            cmd = torch.clamp(cmd, -5.0, 2.5)
        d = torch.linalg.vector_norm((x - self.mean) / self.std, dim=1, keepdim=True)
        return torch.cat([cmd, d / (d + self.q99)], dim=-1)


class Anomaly(nn.Module):
    """Scores a window by its newest reading's deviation (squashed into [0, 1)); ``inverted`` breaks it."""

    def __init__(self, inverted: bool = False, scale: float = 1.0) -> None:
        super().__init__()
        self.newest = PLANT.index("value_z")
        self.inverted, self.scale = inverted, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = torch.abs(x[:, self.newest : self.newest + 1]) + 0.1 * (x**2).mean(-1, keepdim=True)
        if self.inverted:  # a deviation beyond 3 lowers the score
            dev = torch.where(dev > 3.0, 6.0 - dev, dev)
        return self.scale * dev / (dev + 2.0)


def onnx_bytes(module: nn.Module, dim: int) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(
        module.eval(),
        (torch.zeros(2, dim),),
        buffer,
        input_names=["features"],
        output_names=["outputs"],
        dynamic_axes={"features": {0: "batch"}},
        dynamo=False,
    )
    return buffer.getvalue()


def vehicle_holdout(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, VEHICLE.width)).astype(np.float32)
    t = np.arange(n) / 5.0
    accel = 1.5 * np.sin(t * 0.5)
    for frame in range(VEHICLE.window):  # smooth acceleration over frames, so steps are small
        x[:, VEHICLE.index("accel_mps2", frame)] = accel
    x[:, VEHICLE.index("brake")] = np.clip(-accel / 3, 0, 1)
    x[:, [VEHICLE.index(n) for n in VEHICLE.extras]] = rng.integers(0, 5, (n, 3))
    users = x[:, [VEHICLE.index(n) for n in VEHICLE.extras]].sum(1)
    # The driver eases the current acceleration, less with road users around and when braking.
    y = (0.5 * accel - 0.1 * users - x[:, VEHICLE.index("brake")] + rng.normal(0, 0.05, n)).astype(np.float32)
    devices = np.array([f"dev{i // 100}" for i in range(n)], dtype=object)
    return x, y, devices


def plant_holdout(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, PLANT.width)).astype(np.float32)
    bad = rng.random(n) < 0.1
    x[bad, PLANT.index("value_z")] += rng.choice([-4.0, 4.0], bad.sum())
    devices = np.array([f"s{i // 100}" for i in range(n)], dtype=object)
    return x, bad.astype(np.float32), devices


def judge_vehicle(module: nn.Module, fleets: list[Fleet], tenant: str | None = None, **facts) -> SuiteResult:
    x, y, devices = vehicle_holdout()
    data = onnx_bytes(module, VEHICLE.width)
    subject = Subject(
        "vehicle-longitudinal",
        tenant,
        OnnxModel(data, ("accel_mps2", "ood_score")),
        len(data),
        x,
        y,
        devices,
        fleets,
        Facts(**facts),
    )
    return run_suite(subject, load_policy("vehicle-longitudinal"))


def judge_plant(module: nn.Module, fleets: list[Fleet] = [MILL]) -> SuiteResult:  # noqa: B006
    x, y, devices = plant_holdout()
    data = onnx_bytes(module, PLANT.width)
    subject = Subject(
        "plant-anomaly", "acme-steel", OnnxModel(data, ("anomaly_score",)), len(data), x, y, devices, fleets, Facts()
    )
    return run_suite(subject, load_policy("plant-anomaly"))


def failed(result: SuiteResult) -> dict[str, float | None]:
    return {c.name: c.value for c in result.failed}


@pytest.fixture(scope="module")
def good_vehicle() -> SuiteResult:
    x, _, _ = vehicle_holdout()
    return judge_vehicle(Longitudinal(x), [CARS, VANS], tenant=None)


def test_a_well_behaved_vehicle_model_passes_every_check_kind(good_vehicle: SuiteResult) -> None:
    assert failed(good_vehicle) == {}
    kinds = {c.kind for c in good_vehicle.checks}
    assert kinds == {"regression", "envelope", "property", "ood", "edge", "governance"}
    assert all(c.value is not None for c in good_vehicle.checks)  # every check a measured number
    scenarios = {c.name.split(".")[1] for c in good_vehicle.checks if c.kind == "envelope"}
    assert {
        "normal",
        "boundary",
        "out_of_range",
        "dropout_nan",
        "dropout_zero",
        "dropout_stuck",
        "noise",
        "adversarial",
        "step",
    } <= scenarios
    assert good_vehicle.checks[0].name == "regression.rmse.gain_over_baseline"


def test_a_model_that_leaves_the_envelope_fails_naming_scenario_value_and_limit() -> None:
    x, _, _ = vehicle_holdout()
    result = judge_vehicle(Longitudinal(x, gain=4.0, clamp=False), [CARS])
    bad = failed(result)
    assert "envelope.normal.accel_mps2" in bad and bad["envelope.normal.accel_mps2"] > 1.0
    check = next(c for c in result.checks if c.name == "envelope.normal.accel_mps2")
    assert (check.limit, check.op, check.unit) == (1e-5, "<=", "m/s²")
    assert "envelope.step.accel_mps2" in bad  # 4x the acceleration also moves more than 2 m/s² per frame


def test_a_model_that_speeds_up_for_more_road_users_violates_the_property() -> None:
    x, _, _ = vehicle_holdout()
    result = judge_vehicle(Longitudinal(x, eager=0.5), [CARS])
    bad = failed(result)
    assert set(bad) >= {"property.more-road-users-never-raise-accel"}
    assert bad["property.more-road-users-never-raise-accel"] > 0.05
    assert "harder-braking" not in " ".join(bad)  # the other property still holds
    assert any(i.startswith("property.more-road-users") for i in result.incidents)


def test_a_model_over_a_fleets_budget_fails_that_fleet_only(good_vehicle: SuiteResult) -> None:
    x, _, _ = vehicle_holdout()
    tiny = Fleet(name="tiny-cars", task="vehicle-longitudinal", max_model_bytes=1024, max_p99_us=1.0)
    result = judge_vehicle(Longitudinal(x), [CARS, tiny])
    assert set(failed(result)) == {"edge.tiny-cars.bytes", "edge.tiny-cars.p99_us"}


def test_a_tenants_model_for_another_tenants_fleet_is_refused() -> None:
    x, _, _ = vehicle_holdout()
    result = judge_vehicle(Longitudinal(x), [VANS, OTHERS, MILL], tenant="acme-mobility")
    bad = failed(result)
    assert bad.keys() >= {"governance.fleets_not_allowed"}
    assert bad["governance.fleets_not_allowed"] == 2  # other-co's vans, and a plant fleet
    check = next(c for c in result.checks if c.name == "governance.fleets_not_allowed")
    assert "other-vans" in check.detail and "acme-plant" in check.detail and "acme-vans" not in check.detail


def test_governance_facts_become_failed_checks() -> None:
    x, _, _ = vehicle_holdout()
    result = judge_vehicle(
        Longitudinal(x),
        [CARS],
        lineage_missing=["holdout"],
        rule_violations=["gold/x (restricted-not-in-base)"],
        residency_problem="refused s3a://eu-bucket/: outside the allowed regions",
    )
    assert set(failed(result)) == {
        "governance.lineage_missing",
        "governance.training_rule_violations",
        "governance.residency_refused",
    }


def test_a_plant_score_that_drops_for_larger_deviations_violates_its_property() -> None:
    good = judge_plant(Anomaly())
    assert failed(good) == {}
    bad = failed(judge_plant(Anomaly(inverted=True)))
    assert "property.larger-deviation-never-lowers-score" in bad


def test_a_plant_score_scaled_out_of_zero_one_leaves_the_envelope() -> None:
    bad = failed(judge_plant(Anomaly(scale=3.0)))
    assert bad["envelope.normal.anomaly_score"] > 0.1


def test_ood_check_states_its_positive_class_and_fails_a_blind_score() -> None:
    x, _, _ = vehicle_holdout()

    class Blind(Longitudinal):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            return torch.cat([out[:, :1], torch.full_like(out[:, 1:], 0.1)], dim=-1)

    result = judge_vehicle(Blind(x), [CARS])
    bad = failed(result)
    assert bad.keys() >= {"ood.auroc", "ood.fpr_at_95_tpr"}
    assert "positive class" in next(c for c in result.checks if c.name == "ood.auroc").detail


def test_a_policy_with_an_unknown_key_is_refused_naming_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "vehicle-longitudinal.toml"
    text = Path(load_policy("vehicle-longitudinal").path).read_text()
    path.write_text(text.replace("[ood]\n", "[ood]\nmin_aurocc = 0.5\n"))
    with pytest.raises(GuardrailError, match=r"vehicle-longitudinal\.toml: ood\.min_aurocc: Extra inputs"):
        load_policy("vehicle-longitudinal", path)


def test_a_candidate_worse_than_the_champion_beyond_tolerance_fails_regression() -> None:
    x, y, devices = vehicle_holdout()
    data = onnx_bytes(Longitudinal(x, gain=0.3), VEHICLE.width)  # eases less well than the driver does
    champion = OnnxModel(onnx_bytes(Longitudinal(x), VEHICLE.width), ("accel_mps2", "ood_score"))
    subject = Subject(
        "vehicle-longitudinal",
        None,
        OnnxModel(data, ("accel_mps2", "ood_score")),
        len(data),
        x,
        y,
        devices,
        [CARS],
        Facts(),
        champion,
    )
    result = run_suite(subject, load_policy("vehicle-longitudinal"))
    loss = next(c for c in result.checks if c.name == "regression.rmse.loss_vs_champion")
    assert not loss.passed and loss.value > 0.02 and loss.limit == 0.02
    assert result.scores.champion < result.scores.candidate


def test_the_drill_edit_scales_only_the_actuated_output_and_keeps_the_manifest_consistent(tmp_path: Path) -> None:
    from actuation.guardrails.drill import _consistent, scale_outputs
    from fieldloop.registry import EdgeBuild, EdgeManifest

    x, _, _ = vehicle_holdout()
    src = tmp_path / "student.int8.onnx"
    src.write_bytes(onnx_bytes(Longitudinal(x), VEHICLE.width))
    outputs = ("accel_mps2", "ood_score")
    rows = x[:8]
    before = OnnxModel(src, outputs)(rows)
    build = EdgeBuild(
        file=src.name,
        bytes=1,
        sha256="0" * 64,
        p50_us=1,
        p99_us=1,
        max_abs_diff=0,
        max_abs_diff_per_output=[0, 0],
        self_test_outputs=before.tolist(),
    )
    manifest = EdgeManifest(
        task="vehicle-longitudinal",
        model="m",
        input_name="features",
        input_dim=VEHICLE.width,
        outputs=list(outputs),
        latency="-",
        self_test_inputs=rows.tolist(),
        self_test_tolerance=1e-3,
        builds={"int8": build},
    )
    dest = scale_outputs(src, tmp_path / "broken.onnx", [4.0, 1.0])
    after = OnnxModel(dest, outputs)(rows)
    np.testing.assert_allclose(after[:, 0], 4 * before[:, 0], rtol=1e-5)
    np.testing.assert_allclose(after[:, 1], before[:, 1], rtol=1e-6)
    fixed = _consistent(manifest, dest).builds["int8"]
    assert (
        fixed.bytes == dest.stat().st_size
        and fixed.sha256 == __import__("hashlib").sha256(dest.read_bytes()).hexdigest()
    )
    np.testing.assert_allclose(np.array(fixed.self_test_outputs)[:, 0], after[:, 0], rtol=1e-5)


def test_default_fleets_are_the_tasks_that_may_run_the_model_and_unknown_names_are_refused() -> None:
    from actuation.guardrails.source import target_fleets

    assert [f.name for f in target_fleets("vehicle-longitudinal", None, None)] == ["public-cars", "acme-vans"]
    assert [f.name for f in target_fleets("vehicle-longitudinal", "acme-mobility", None)] == ["acme-vans"]
    assert [f.name for f in target_fleets("plant-anomaly", "acme-steel", None)] == ["acme-plant"]
    with pytest.raises(GuardrailError, match="no fleet 'moon-rovers'; the fleets are: public-cars"):
        target_fleets("vehicle-longitudinal", None, ["moon-rovers"])
    assert [f.name for f in target_fleets("plant-anomaly", None, None)] == ["acme-plant"]  # a base model runs anywhere
    with pytest.raises(GuardrailError, match=r"no fleet in actuation/fleets\.toml runs plant-anomaly for other-co"):
        target_fleets("plant-anomaly", "other-co", None)


def test_the_report_draws_its_plots_and_names_failed_checks_with_value_and_limit(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from actuation.contract import PolicyRef, Verdict
    from actuation.guardrails.report import Report, plots

    result = judge_plant(Anomaly(scale=3.0))
    policy = load_policy("plant-anomaly")
    paths = plots(result, policy.rules.runtime, ["anomaly_score"], tmp_path)
    assert [p.name for p in paths] == ["envelope.png", "ood_roc.png", "regression.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in paths)
    verdict = Verdict(
        verdict="fail",
        model="m",
        version=1,
        task="plant-anomaly",
        tenant="acme-steel",
        fleets=["acme-plant"],
        policy=PolicyRef(name="plant-anomaly", version=1, sha256=policy.sha256),
        checks=result.checks,
        mlflow_uri="models:/m/1",
        run_id="r",
        lineage={},
        judged_at=datetime.now(UTC),
    )
    report = Report(verdict, {}, result.incidents, {}, result.p99_us, result.seconds)
    data = report.as_dict()
    assert data["readiness"]["failed"] == len(result.failed) > 0 and data["readiness"]["incidents"] > 0
    assert any(
        line.startswith("envelope.normal.anomaly_score: ") and "(limit <= 1e-05)" in line for line in data["failed"]
    )
    assert "positive class" in data["ood_convention"]


def test_a_tracking_server_that_does_not_answer_is_named_within_seconds() -> None:
    import socket
    import time

    from actuation.guardrails.source import check_server

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(GuardrailError, match=rf"MLflow server at http://127\.0\.0\.1:{port} does not answer"):
        check_server(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 10


def test_residency_is_judged_on_the_servers_artifact_store_and_refused_when_unknown(tmp_path: Path) -> None:
    from actuation.guardrails.source import Version, governance_facts
    from fieldloop.config import load_config

    version = Version("m", 1, "r", None, "plant-anomaly", "acme-steel", {}, "mlflow-artifacts:/1/r/artifacts")
    local = load_config({"FIELDLOOP_HOME": str(tmp_path)})
    assert governance_facts(local, version).residency_problem is None  # the embedded server's local store
    assert governance_facts(local, version).artifact_location == str(tmp_path / "mlflow" / "artifacts")
    remote = load_config(
        {"FIELDLOOP_HOME": str(tmp_path), "FIELDLOOP_MLFLOW_TRACKING_URI": "http://mlflow.example:5000"}
    )
    problem = governance_facts(remote, version).residency_problem
    assert problem and "FIELDLOOP_MLFLOW_ARTIFACT_ROOT" in problem
    abroad = Version("m", 1, "r", None, "plant-anomaly", "acme-steel", {}, str(tmp_path / "artifacts"))
    elsewhere = load_config({"FIELDLOOP_HOME": str(tmp_path), "FIELDLOOP_SITE_REGION": "eu-west-1"})
    assert "outside the allowed regions" in governance_facts(elsewhere, abroad).residency_problem


def test_the_step_limit_judges_the_jerk_the_model_adds_beyond_the_signal_it_follows() -> None:
    import numpy as np

    from actuation.guardrails.checks.envelope import largest_step

    measured = np.array([0.0, 0.1, -4.6, -4.5], dtype=np.float32)  # a driver's own hard brake in the data
    follows = np.stack([measured + 0.2, np.zeros(4)], axis=1)  # the command tracks it
    adds = np.stack([np.array([0.0, 3.0, 0.0, 3.0]), np.zeros(4)], axis=1)  # jerks on its own
    runs = [np.arange(4)]
    assert largest_step(follows, runs, 0) == pytest.approx(4.7, abs=1e-5)  # plain: the data's jump
    assert largest_step(follows, runs, 0, measured) == pytest.approx(0.0, abs=1e-5)
    assert largest_step(adds, runs, 0, measured) > 2.0


@pytest.mark.parametrize(("candidate_gain", "met_gain", "passes"), [(0.5, 0.3, True), (0.3, 0.5, False)])
def test_a_version_that_learned_from_hard_cases_must_beat_the_model_that_met_them_on_them(
    candidate_gain: float, met_gain: float, passes: bool
) -> None:
    from actuation.guardrails.source import HardCases

    x, y, devices = vehicle_holdout()
    hx, hy, hdev = vehicle_holdout(120, seed=3)
    hard = HardCases(hx, hy, hdev, np.array(["fieldloop.vehicle-longitudinal v3"] * 120, dtype=object), {})
    outputs = ("accel_mps2", "ood_score")
    data = onnx_bytes(Longitudinal(x, gain=candidate_gain), VEHICLE.width)
    met = OnnxModel(onnx_bytes(Longitudinal(x, gain=met_gain), VEHICLE.width), outputs)
    subject = Subject(
        "vehicle-longitudinal", None, OnnxModel(data, outputs), len(data), x, y, devices, [CARS], Facts(),
        hard_cases=hard, met=met, met_label="fieldloop.vehicle-longitudinal v3",
    )  # fmt: skip
    check = next(c for c in run_suite(subject, load_policy("vehicle-longitudinal")).checks if "hard_cases" in c.name)
    assert check.name == "regression.hard_cases.rmse.gain_vs_met" and check.passed is passes
    assert "fieldloop.vehicle-longitudinal v3" in check.detail and "120 hard-case rows of 2 held-out" in check.detail
    assert hard.met_most() == ("fieldloop.vehicle-longitudinal", 3)

    gone = Subject(
        "vehicle-longitudinal", None, OnnxModel(data, outputs), len(data), x, y, devices, [CARS], Facts(),
        hard_cases=hard, met=None, met_label="fieldloop.vehicle-longitudinal v3",
    )  # fmt: skip
    unmeasured = next(c for c in run_suite(gone, load_policy("vehicle-longitudinal")).checks if "hard_cases" in c.name)
    assert not unmeasured.passed and unmeasured.value is None and "cannot be loaded" in unmeasured.detail


def test_a_version_that_learned_from_no_hard_case_is_not_judged_on_them(good_vehicle: SuiteResult) -> None:
    assert not [c for c in good_vehicle.checks if "hard_cases" in c.name]
