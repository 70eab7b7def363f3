"""On the device at run time: the feature vector is gold's layout, and the safety monitor
replaces every output it must by the signed fallback, counting each as an intervention."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from actuation.agent import Agent, DeviceConfig, provision
from actuation.agent.features import FeatureWindow
from actuation.agent.monitor import SafetyMonitor
from actuation.contract import OutputLimit, RuntimeLimits, load_runtime_limits
from fieldloop.datasets import layout
from tests.tuf_repository import BASE_URL, MemoryFetcher, ReleaseRepository, tiny_model

LIMITS = load_runtime_limits("vehicle-longitudinal")  # accel in [-6, 3], step 2, OOD 0.8, fallback -1
OUTPUTS = ["accel_mps2", "ood_score"]


def frame(k: int) -> dict:
    return {
        "speed_mps": 10.0 + k, "accel_mps2": 0.1 * k, "brake": 0.01 * k, "steering_deg": -k, "yaw_rate_dps": 2.0 * k,
        "perception": {"vehicles": k, "pedestrians": k + 1, "cyclists": k + 2},
    }  # fmt: skip


def test_the_feature_vector_is_laid_out_as_gold_lays_out_training_rows() -> None:
    lay = layout("vehicle-longitudinal")
    window = FeatureWindow(lay)
    got = [window.push(frame(k)) for k in range(12)]
    assert all(v is None for v in got[:9])  # fewer frames than the window: no input yet
    vector = got[-1]
    assert vector.shape == (53,) and vector.dtype == np.float32
    # by name, as fieldloop.datasets names gold's features: the last 10 frames (2..11), then extras of the newest
    newest = 11
    for i, name in enumerate(lay.names()):
        signal, _, offset = name.partition("@")
        if offset:
            source = frame(newest + int(offset))[signal]
        else:
            group, _, field = signal.partition(".")
            source = frame(newest)[group][field]
        assert vector[i] == pytest.approx(source, rel=1e-6), name


@pytest.mark.parametrize(
    ("outputs", "reason"),
    [
        ([math.nan, 0.1], "non-finite"),
        ([math.inf, 0.1], "non-finite"),
        ([3.5, 0.1], "envelope"),
        ([-6.01, 0.1], "envelope"),
        ([0.0, 0.8], "ood"),  # at the threshold falls back
        ([0.0, math.nan], "ood"),
    ],
)
def test_the_monitor_commands_the_fallback_instead_of(outputs: list[float], reason: str) -> None:
    monitor = SafetyMonitor(LIMITS, OUTPUTS)
    decision = monitor.decide(outputs)
    assert (decision.commanded, decision.reason, decision.intervened) == ((-1.0,), reason, True)


def test_the_monitor_lets_through_what_is_inside_the_limits_even_at_float32_rounding() -> None:
    monitor = SafetyMonitor(LIMITS, OUTPUTS)
    at_max = float(np.float32(np.clip(np.float32(3.1), np.float32(-6.0), np.float32(3.0))))
    for value in (0.0, 1.9, at_max):
        decision = monitor.decide([value, 0.79])
        assert decision.reason is None and decision.commanded == (value,)


def test_the_monitor_refuses_a_jump_larger_than_the_step_and_recovers_after_it() -> None:
    monitor = SafetyMonitor(LIMITS, OUTPUTS)
    assert monitor.decide([-2.0, 0.1]).reason is None
    jump = monitor.decide([0.5, 0.1])  # 2.5 m/s² in one frame, the limit is 2
    assert (jump.reason, jump.commanded, jump.disagreement) == ("step", (-1.0,), pytest.approx(1.5))
    assert monitor.decide([1.0, 0.1]).reason is None  # the model's own next step is 0.5: it drives again


def test_the_agent_enforces_the_limits_signed_in_the_release_not_a_local_file(tmp_path: Path) -> None:
    repo = ReleaseRepository(tmp_path / "cloud")
    tight = RuntimeLimits(outputs=[OutputLimit(name="accel_mps2", min=-0.2, max=0.2, fallback=0.0)])
    repo.release("public-cars", 1, tiny_model(), limits=tight)
    config = DeviceConfig(device_id="car-9", fleet="public-cars", repo_url=BASE_URL, task="vehicle-longitudinal")
    agent = Agent(provision(tmp_path / "dev", config, repo.root_bytes), fetcher=MemoryFetcher(repo))
    agent.update()
    decisions = [agent.infer(frame(k)) for k in range(12)]  # the model commands ~the newest accel: 0.9..1.1
    assert [d.reason for d in decisions[-2:]] == ["envelope", "envelope"]
    assert decisions[-1].commanded == (0.0,)
    window = agent.summary()["window"]
    assert window["interventions_by_reason"] == {"warm-up": 9, "envelope": 3}
    records = [r[2] for r in agent.telemetry.records]
    assert [r["intervention"] for r in records[-3:]] == [True, True, True]
    assert records[-1]["disagreement"] == pytest.approx(1.1, abs=0.15)


def test_a_frame_missing_a_signal_is_a_fallback_and_an_error_not_a_crash(tmp_path: Path) -> None:
    repo = ReleaseRepository(tmp_path / "cloud")
    repo.release("public-cars", 1, tiny_model())
    config = DeviceConfig(device_id="car-9", fleet="public-cars", repo_url=BASE_URL, task="vehicle-longitudinal")
    agent = Agent(provision(tmp_path / "dev", config, repo.root_bytes), fetcher=MemoryFetcher(repo))
    agent.update()
    good = [agent.infer(frame(k)) for k in range(10)]
    assert good[-1].reason is None
    broken = {k: v for k, v in frame(10).items() if k != "brake"}
    assert agent.infer(broken).reason == "bad-frame" and agent.infer(broken).commanded == (-1.0,)
    after = agent.infer(frame(10))  # the window did not move on the broken frames
    assert after.reason is None
    assert agent.summary()["window"]["errors"] == {"frame": 2}


def test_a_plant_sensors_window_is_z_scored_over_what_the_device_has_seen() -> None:
    window = FeatureWindow(layout("plant-anomaly"))
    values = [100.0, 102.0, 98.0, 101.0, 99.0, 103.0, 97.0, 100.0, 104.0, 96.0, 150.0]
    got = [window.push({"value": v}) for v in values]
    assert got[8] is None and got[9] is not None
    # each reading z-scored with the population mean and std of the readings up to it, as gold does per sensor
    expected = [(v - np.mean(values[: i + 1])) / max(np.std(values[: i + 1]), 1e-9) for i, v in enumerate(values)]
    assert got[-1] == pytest.approx(np.array(expected[-10:], dtype=np.float32), rel=1e-5, abs=1e-6)
    assert got[-1][-1] > 2.5  # the spike stands out


def test_a_plant_device_without_a_model_reports_the_reading_as_anomalous(tmp_path: Path) -> None:
    from actuation.agent.sources import simulated_frames

    repo = ReleaseRepository(tmp_path / "cloud", fleets=("acme-plant",))
    config = DeviceConfig(
        device_id="BF1-TI-101", fleet="acme-plant", tenant="acme-steel", repo_url=BASE_URL, task="plant-anomaly"
    )
    agent = Agent(provision(tmp_path / "dev", config, repo.root_bytes), fetcher=MemoryFetcher(repo))
    frames = simulated_frames("plant-anomaly", 1.0)
    decisions = [agent.infer(next(frames)) for _ in range(12)]
    assert {d.commanded for d in decisions} == {(1.0,)}  # the plant policy's fail-safe fallback
