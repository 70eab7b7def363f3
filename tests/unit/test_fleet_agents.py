"""The fleet harness without services: fault specs, which devices a fault hits, the activation
log and the scheduling, with small in-memory agents of our own (the real agent against a real
repository is the integration tier's)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from actuation.fleet import Fault, FaultPlan, FaultSpecError, FieldCondition, FleetRun, FleetSettings, device_ids
from actuation.fleet.faults import CROWD, MOTORWAY_MPS

# -- fault specs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("offline:0.2@10+30", Fault("offline", 0.2, 10.0, 30.0)),
        ("outage@0+5.5", Fault("outage", 1.0, 0.0, 5.5)),
        ("condition:1@2.5+60", Fault("condition", 1.0, 2.5, 60.0)),
        (" offline:0.05@0+1 ", Fault("offline", 0.05, 0.0, 1.0)),
    ],
)
def test_a_fault_spec_is_parsed(spec: str, fault: Fault) -> None:
    assert Fault.parse(spec) == fault
    assert Fault.parse(str(fault)) == fault  # its text form reads back


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("blackout:0.2@1+2", "unknown fault 'blackout'"),
        ("offline:0.2", "no window: add @START+DURATION"),
        ("offline@1+2", "offline needs the share of devices it hits"),
        ("outage:0.5@1+2", "outage hits every device"),
        ("offline:1.5@1+2", "share 1.5 is not in (0, 1]"),
        ("offline:0@1+2", "share 0 is not in (0, 1]"),
        ("offline:half@1+2", "share 'half' is not a number"),
        ("outage@-1+2", "START -1 s is before the run's start"),
        ("outage@1+0", "DURATION 0 s must be positive"),
        ("outage@1+nan", "DURATION 'nan' is not a finite number"),
        ("outage@x+2", "START 'x' is not a number"),
    ],
)
def test_a_bad_fault_spec_says_what_is_wrong_and_how_to_write_one(spec: str, says: str) -> None:
    with pytest.raises(FaultSpecError) as e:
        Fault.parse(spec)
    assert says in str(e.value)
    assert "use offline:SHARE@START+DURATION" in str(e.value)
    assert e.value.spec == spec


def test_the_cli_refuses_a_bad_fault_before_touching_anything(tmp_path: Any) -> None:
    from fieldloop.cli.main import main

    result = CliRunner().invoke(
        main, ["fleet", "agents", "--fleet", "public-cars", "--dir", str(tmp_path), "--fault", "offline:2@1+3"]
    )
    assert result.exit_code == 2
    assert "share 2 is not in (0, 1]" in result.output
    assert not list(tmp_path.iterdir())


def test_a_fault_hits_its_share_of_the_fleet_stably_and_only_in_its_window() -> None:
    ids = device_ids("public-cars", 20)
    offline, condition, outage = (
        Fault.parse("offline:0.25@10+5"),
        Fault.parse("condition:0.25@0+1"),
        Fault.parse("outage@30+2"),
    )
    plan = FaultPlan([offline, condition, outage], ids)
    hit = plan.devices("offline")
    assert len(hit) == 5
    assert hit == FaultPlan([offline], ids).devices("offline")  # the same devices in every run
    assert plan.devices("condition") != hit  # another fault, another slice of the fleet
    device = min(hit)
    assert [plan.offline(device, t) for t in (9.99, 10.0, 14.99, 15.0)] == [False, True, True, False]
    assert not any(plan.offline(i, 12.0) for i in set(range(20)) - hit)
    assert [plan.outage(t) for t in (29.9, 30.0, 31.9, 32.0)] == [False, True, True, False]


def test_the_field_condition_is_out_of_the_simulators_range_and_chatters() -> None:
    frame = {
        "speed_mps": 12.0, "accel_mps2": 0.5, "brake": 0.0, "steering_deg": 1.0, "yaw_rate_dps": 0.1,
        "perception": {"vehicles": 2, "pedestrians": 0, "cyclists": 1},
    }  # fmt: skip
    condition = FieldCondition()
    first, second = condition(frame), condition(frame)
    assert first["speed_mps"] - MOTORWAY_MPS != second["speed_mps"] - MOTORWAY_MPS  # the sensors chatter
    assert min(first["speed_mps"], second["speed_mps"]) >= 12.0 + MOTORWAY_MPS - 15.0
    assert first["perception"] == {"vehicles": 2 + CROWD["vehicles"], "pedestrians": 10, "cyclists": 6}
    assert frame["speed_mps"] == 12.0  # the device's own frame is left alone


# -- the harness with agents of our own ---------------------------------------------------


class Pointer:
    """What the fleet's repository serves, in memory: the release every device should run."""

    def __init__(self, release: str | None) -> None:
        self.release = release


@dataclass(frozen=True)
class Result:
    state: str


@dataclass(frozen=True)
class Decision:
    intervened: bool


class FakeAgent:
    """An agent that takes the pointer's release at each update; records when it was polled."""

    def __init__(self, pointer: Pointer, clock: Any = time.monotonic) -> None:
        self.pointer, self.clock = pointer, clock
        self.active: str | None = None
        self.polls: list[float] = []
        self.frames = 0
        self.last_update: Result | None = None

    def update(self) -> Result:
        self.polls.append(self.clock())
        if self.pointer.release is None:
            self.last_update = Result("no-release")
        elif self.pointer.release == self.active:
            self.last_update = Result("up-to-date")
        else:
            self.active = self.pointer.release
            self.last_update = Result("updated")
        return self.last_update

    def infer(self, frame: Mapping[str, Any]) -> Decision:
        assert "speed_mps" in frame  # the fleet's simulated car
        self.frames += 1
        return Decision(intervened=False)


def fake_fleet(n: int, pointer: Pointer, **settings: Any) -> tuple[FleetRun, dict[str, FakeAgent]]:
    made: dict[str, FakeAgent] = {}

    def make(index: int, device_id: str, fetcher: Any, telemetry: Any) -> FakeAgent:
        made[device_id] = FakeAgent(pointer)
        return made[device_id]

    values = {"fleet": "public-cars", "devices": n, "telemetry": False, "rate_hz": 0, **settings}
    return FleetRun(FleetSettings(**values), agents=make), made


def test_every_change_of_a_devices_model_is_logged_once_with_its_time() -> None:
    pointer = Pointer("m@1")
    run, agents = fake_fleet(10, pointer, poll_s=0.1)
    run.start()
    try:
        assert run.wait_for(lambda r: set(r.versions().values()) == {"m@1"}, 5)
        switched_at = round(run.elapsed(), 3)  # as an activation's at_s is kept
        pointer.release = "m@2"
        assert run.wait_for(lambda r: r.running() == {"m@2": 10}, 5)
        time.sleep(0.3)  # more polls: up to date, nothing logged
    finally:
        run.stop()
    log = run.activations
    assert [(a.previous, a.active) for a in log].count((None, "m@1")) == 10
    assert [(a.previous, a.active) for a in log].count(("m@1", "m@2")) == 10
    assert len(log) == 20
    assert {a.device for a in log} == set(agents)
    assert all(a.at_s >= switched_at for a in log if a.active == "m@2")
    assert [a.at_s for a in log] == sorted(a.at_s for a in log)
    assert run.activations_to("m@2") == [a for a in log if a.active == "m@2"]
    canary = sorted(agents)[:3]
    assert run.converged_at("m@2", canary) == max(a.at_s for a in log if a.active == "m@2" and a.device in canary)
    assert run.converged_at("m@1") is None  # nobody runs it any more
    summary = run.summary()
    assert summary["versions"] == {"m@2": 10}
    assert summary["update_states"]["updated"] == 20
    assert summary["update_states"]["up-to-date"] > 0
    assert len(summary["activations"]) == 20


def test_each_agent_is_polled_about_every_poll_s_at_its_own_phase() -> None:
    run, agents = fake_fleet(12, Pointer("m@1"), poll_s=0.25, threads=3, rate_hz=20)
    seconds = 2.5
    run.run(seconds)
    for agent in agents.values():
        assert 9 <= len(agent.polls) <= 11, agent.polls  # 2.5 s / 0.25 s
        gaps = [b - a for a, b in zip(agent.polls, agent.polls[1:], strict=False)]
        assert 0.2 <= statistics.median(gaps) <= 0.3
        assert 35 <= agent.frames <= 52  # 20 Hz for 2.5 s
    firsts = sorted(a.polls[0] for a in agents.values())
    assert firsts[-1] - firsts[0] > 0.1  # phases are spread over the period, not in lockstep
    summary = run.summary()
    assert summary["polls"] == sum(len(a.polls) for a in agents.values())
    assert summary["inferences"] == sum(a.frames for a in agents.values())


def test_a_run_stops_promptly_from_another_thread() -> None:
    run, _ = fake_fleet(5, Pointer("m@1"), poll_s=30)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (run.run(3600), done.set()))
    t0 = time.monotonic()
    thread.start()
    time.sleep(0.2)
    run.stop()
    assert done.wait(2), "run() did not return after stop()"
    assert time.monotonic() - t0 < 2
    thread.join()


def test_telemetry_for_a_large_fleet_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="--no-telemetry"):
        FleetSettings(fleet="public-cars", devices=1000, telemetry=True)


def test_an_unknown_fleet_is_refused_naming_the_known_ones() -> None:
    from actuation.fleet import FleetError

    run, _ = fake_fleet(2, Pointer(None), fleet="no-such-fleet")
    with pytest.raises(FleetError, match="no fleet 'no-such-fleet'; the fleets are: public-cars"):
        run.start()


def test_an_agent_that_raises_is_counted_and_its_device_keeps_being_polled() -> None:
    class Flaky(FakeAgent):
        def update(self) -> Result:
            if len(self.polls) == 1:
                self.polls.append(self.clock())
                raise RuntimeError("a bug in an agent")
            return super().update()

    made: list[Flaky] = []

    def make(index: int, device_id: str, fetcher: Any, telemetry: Any) -> Flaky:
        made.append(Flaky(Pointer("m@1")))
        return made[-1]

    run = FleetRun(FleetSettings(fleet="public-cars", devices=3, poll_s=0.1, rate_hz=0, telemetry=False), agents=make)
    summary = run.run(0.6)
    assert summary["failures"] == {"poll": 3}
    assert all(len(agent.polls) >= 4 for agent in made)
    assert summary["versions"] == {"m@1": 3}
