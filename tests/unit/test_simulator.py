"""Fleet simulator: deterministic, physically plausible, schema-valid, faults that reconcile."""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastavro.validation import validate

from fieldloop.config import FieldloopConfig, KafkaConfig
from fieldloop.contracts import DataContract, load_contracts
from fieldloop.wire import SchemaRegistry, WireError, decode, default_registry, encode
from ingestion.cli import fleet, make_edge_sink
from ingestion.errors import FaultSpecError
from ingestion.simulator import (
    FaultPlan,
    FaultSpec,
    Fleet,
    FleetSpec,
    Item,
    MemoryRawSender,
    MemorySink,
    Simulation,
    SimulationReport,
)
from ingestion.simulator.faults import JUNK_SEQ_BASE, MALFORMED_KINDS, OVERSIZED_BYTES
from ingestion.simulator.layout import default_layout
from ingestion.simulator.notes import note
from ingestion.simulator.robot import JOINT_LIMITS
from ingestion.simulator.vehicle import A_MAX, A_MIN, M_PER_DEG_LAT, STEERING_RATIO, WHEELBASE_M
from ingestion.simulator.vin import vin_check_digit

# The contracts the shipped fleet file (ingestion/simulator/fleet.toml) sends to.
VEHICLES_PUBLIC = "vehicle-frames-public"
VEHICLES_ACME = "vehicle-frames-acme-mobility"
CAMERAS = "camera-meta-public"
TELEMETRY = "fleet-telemetry"
ROBOTS = "robot-joints-kansai-robotics"
PLANT = "plant-sensors-acme-steel"
CITIES = default_layout().vehicle.cities

JST = timezone(timedelta(hours=9))
VEHICLES = (VEHICLES_PUBLIC, VEHICLES_ACME)
# How phone numbers are written in Japan: mobile (070/080/090 or +81), landline area code + exchange.
JP_PHONE = re.compile(r"0[789]0-[1-9]\d{3}-\d{4}|\+81-[789]0-[1-9]\d{3}-\d{4}|0(?:\d-[2-9]\d{3}|\d\d-[2-9]\d\d)-\d{4}")
# Runs compared with each other start at a given time: a default start is the time of the run.
START = datetime(2025, 1, 1, 11, tzinfo=UTC)


@pytest.fixture(scope="module")
def contracts() -> dict[str, DataContract]:
    return load_contracts()


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return default_registry()


@pytest.fixture(scope="module")
def city_run() -> list[Item]:
    """Ten devices (5 vehicles, 3 furnace sensors, 2 arms), 5 minutes at 10 Hz."""
    return list(Fleet(FleetSpec(devices=10, seconds=300, rate_hz=10, seed=11, start=START)).items())


@pytest.fixture(scope="module")
def two_hours() -> list[Item]:
    """A vehicle, a furnace temperature sensor and an arm for two hours at 1 Hz."""
    return list(Fleet(FleetSpec(devices=3, seconds=7200, rate_hz=1, seed=5, start=START)).items())


def streams(items: list[Item], *contract_ids: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        if item.contract_id in contract_ids:
            out[item.device_id].append(item.record)
    return out


def local_m(record: Mapping[str, Any], centre: tuple[float, float]) -> tuple[float, float]:
    """(north, east) metres of a frame from a city centre."""
    return (
        (record["lat"] - centre[0]) * M_PER_DEG_LAT,
        (record["lon"] - centre[1]) * M_PER_DEG_LAT * math.cos(math.radians(centre[0])),
    )


def nearest_city(record: Mapping[str, Any]) -> tuple[float, float]:
    return min(CITIES.values(), key=lambda c: math.hypot(*local_m(record, c)))


def run(
    spec: FleetSpec,
    faults: list[str],
    contracts: Mapping[str, DataContract],
    registry: SchemaRegistry,
    sink: MemorySink | None = None,
    raw: MemoryRawSender | None = None,
    broker: Any = None,
) -> tuple[SimulationReport, MemorySink, MemoryRawSender]:
    sink = sink or MemorySink(contracts, registry)
    raw = raw or MemoryRawSender()
    sim = Simulation(spec, [FaultSpec.parse(f) for f in faults], contracts, registry)
    return sim.run(sink, raw, broker), sink, raw


# Determinism and the device mix -----------------------------------------------------------
def test_same_seed_same_records_and_other_seed_other_records() -> None:
    spec = FleetSpec(devices=6, seconds=20, rate_hz=10, seed=3, start=START)
    first, again = list(Fleet(spec).items()), list(Fleet(spec).items())
    other = list(Fleet(FleetSpec(devices=6, seconds=20, rate_hz=10, seed=4, start=START)).items())
    assert first == again
    assert len(first) == len(other)
    assert {i.device_id for i in first}.isdisjoint({i.device_id for i in other if i.contract_id in VEHICLES})
    assert [i.record for i in first] != [i.record for i in other]


def test_a_device_records_the_same_whatever_the_fleet_size() -> None:
    small = list(Fleet(FleetSpec(devices=3, seconds=10, rate_hz=10, seed=9, start=START)).items())
    large = list(Fleet(FleetSpec(devices=12, seconds=10, rate_hz=10, seed=9, start=START)).items())
    assert small == [i for i in large if i.unit < 3]


@pytest.mark.parametrize(
    ("devices", "mix"),
    [
        (1, {"vehicle": 1, "robot": 0, "furnace": 0}),
        (3, {"vehicle": 1, "robot": 1, "furnace": 1}),
        (10, {"vehicle": 5, "robot": 2, "furnace": 3}),
        (25, {"vehicle": 12, "robot": 5, "furnace": 8}),
    ],
)
def test_device_mix(devices: int, mix: dict[str, int]) -> None:
    assert Fleet(FleetSpec(devices=devices, seconds=1, rate_hz=1, start=START)).mix() == mix


def test_vins_are_valid_and_unique() -> None:
    vins = [
        d.device_id
        for d in Fleet(FleetSpec(devices=60, seconds=1, rate_hz=1, start=START)).devices
        if d.kind == "vehicle"
    ]
    assert len(vins) == len(set(vins)) == 30
    for vin in vins:
        assert len(vin) == 17 and vin.isalnum() and vin.isupper()
        assert not set(vin) & set("IOQ")
        assert vin[8] == vin_check_digit(vin)


def test_identifiers_planted_in_notes_look_like_real_ones() -> None:
    """A note's VIN has a numeric serial and a check digit, a 車台番号 is model code + serial, phones
    and plates are shaped as in Japan: the scrubber's tests measure what the field sends."""
    texts = [t for i in range(3000) if (t := note(random.Random(i)))]
    vins = [m for t in texts for m in re.findall(r"VIN ?(\S{17})", t)]
    chassis = [m for t in texts for m in re.findall(r"(?:車台番号|[Cc]hassis no\. ?)(\S+?)(?=[ のを、。,]|$)", t)]
    phones = [m for t in texts for m in re.findall(r"(?<![\w-])[+0][-0-9]{9,15}", t)]
    plates = [m for t in texts for m in re.findall(r"(\d{3}) (\S) (\d{1,2}-\d{2}|・+\d+)", t)]
    assert min(len(vins), len(chassis), len(phones), len(plates)) >= 10
    for vin in vins:
        assert vin.isalnum() and vin.isupper() and not set(vin) & set("IOQ"), vin
        assert vin[-6:].isdigit() and vin[8] == vin_check_digit(vin), vin  # ISO 3779 serial, NA check digit
    for number in chassis:
        assert re.fullmatch(r"[A-Z]{1,4}[0-9]{1,3}[A-Z]?-[0-9]{6,7}", number), number  # ZVW30-1234567
    for phone in phones:  # mobile 0X0 or +81 X0, landline area code + exchange: ten digits, eleven for a mobile
        assert JP_PHONE.fullmatch(phone), phone
    for number, kana, serial in plates:  # 品川 300 あ 12-34; under 1000 the serial is dotted: ・・12
        assert number[0] != "0" and "あ" <= kana <= "ん" and kana not in "おしへん", (number, kana)
        assert re.fullmatch(r"[1-9]\d?-\d{2}", serial) or (len(serial) == 4 and re.fullmatch(r"・+[1-9]\d*", serial))


def test_every_record_encodes_with_its_streams_latest_schema(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    seen = set()
    for seed in range(20):
        for item in Fleet(FleetSpec(devices=10, seconds=3, rate_hz=10, seed=seed, start=START)).items():
            schema = registry.get(contracts[item.contract_id].stream)
            validate(item.record, schema.parsed, raise_errors=True, strict=True)  # as the edge SDK checks: no coercion
            payload = encode(item.record, schema)
            seen.add(item.contract_id)
            if item.event_ms % 7 == 0:
                back = decode(payload, registry)
                assert {**back, "ts": int(back["ts"].timestamp() * 1000)} == item.record
    assert seen == {VEHICLES_PUBLIC, VEHICLES_ACME, CAMERAS, TELEMETRY, ROBOTS, PLANT}


# Time --------------------------------------------------------------------------------------
def test_timestamps_are_int_millis_increasing_per_device_and_globally(city_run: list[Item]) -> None:
    start = int(START.timestamp() * 1000)
    assert [i.event_ms for i in city_run] == sorted(i.event_ms for i in city_run)
    last: dict[tuple[str, str], int] = {}
    for item in city_run:
        ts = item.record["ts"]
        assert type(ts) is int and ts == item.event_ms
        assert start <= ts < start + 300_000 + 100
        key = (item.contract_id, item.device_id)
        assert ts > last.get(key, 0)
        last[key] = ts


def test_a_run_ends_now_unless_its_start_is_given() -> None:
    """Without --start the fleet's last readings are from now: a fleet of some past year would
    be older than its contracts' retention and never reach silver."""
    before = datetime.now(UTC)
    spec = FleetSpec(seconds=90, seed=1)
    after = datetime.now(UTC)
    assert before - timedelta(seconds=91) <= datetime.fromtimestamp(spec.start_ms / 1000, UTC) <= after
    assert spec.start_ms == spec.start_ms  # the clock is read once, when the spec is made
    assert FleetSpec(seconds=90, seed=2).start_ms - spec.start_ms < 5_000  # the seed picks no hour any more
    start = datetime(2025, 4, 1, 9, 0, tzinfo=JST)
    first = next(Fleet(FleetSpec(devices=2, seconds=1, seed=1, start=start)).items())
    assert 0 <= first.record["ts"] - int(start.timestamp() * 1000) < 100
    given = FleetSpec(devices=2, seconds=1, seed=1, start=start)
    assert list(Fleet(given).items()) == list(Fleet(FleetSpec(devices=2, seconds=1, seed=1, start=start)).items())


# Physics -----------------------------------------------------------------------------------
def test_vehicles_drive_stop_and_brake_within_physical_bounds(city_run: list[Item]) -> None:
    frames = streams(city_run, *VEHICLES)
    assert len(frames) == 5
    standstill = np.mean([r["speed_mps"] == 0 for recs in frames.values() for r in recs])
    assert 0.05 < standstill < 0.4, "cars wait at lights, but not all day"
    for vin, recs in frames.items():
        speed, accel, brake = (np.array([r[k] for r in recs]) for k in ("speed_mps", "accel_mps2", "brake"))
        dt = np.diff([r["ts"] for r in recs]) / 1000
        assert speed.min() >= 0 and speed.max() <= 40, vin
        assert speed.max() > 10, f"{vin} should drive"
        assert accel.min() >= A_MIN and accel.max() <= A_MAX
        finite = np.diff(speed) / dt
        assert finite.min() >= A_MIN - 0.05 and finite.max() <= A_MAX + 0.05
        assert np.abs(accel[1:] - finite).max() < 0.25, "reported acceleration must match the speeds sent"
        assert (brake[accel < -0.5] > 0).all() and (brake[accel > 0.3] == 0).all()
        assert brake.min() >= 0 and brake.max() <= 1
        assert np.mean([r["intervention"] for r in recs]) < 0.03


def test_steering_follows_yaw_rate_and_the_track_follows_heading(city_run: list[Item]) -> None:
    frames = streams(city_run, *VEHICLES)
    assert max(abs(r["steering_deg"]) for recs in frames.values() for r in recs) > 180, "someone turns a corner"
    for vin, recs in frames.items():
        speed = np.array([r["speed_mps"] for r in recs])
        yaw = np.radians([r["yaw_rate_dps"] for r in recs])
        steer = np.array([r["steering_deg"] for r in recs])
        bicycle = np.degrees(np.arctan(yaw * WHEELBASE_M / np.maximum(speed, 0.1))) * STEERING_RATIO
        moving = speed > 5
        assert np.abs(steer - bicycle)[moving].max() < 4
        # dead reckoning from speed and yaw rate reproduces the GPS track (up to the unknown start heading)
        centre = nearest_city(recs[0])
        track = np.array([complex(*local_m(r, centre)) for r in recs])
        window = 300  # 30 s
        for i in range(0, len(recs) - window, window):
            heading = -np.cumsum(yaw[i : i + window]) * 0.1  # compass heading falls when turning left
            dead = np.cumsum(speed[i : i + window] * np.exp(1j * heading)) * 0.1
            gps = track[i : i + window] - track[i]
            turn = np.vdot(dead, gps)
            if abs(turn) > 0:
                assert np.abs(gps - dead * turn / abs(turn)).max() < 30, f"{vin} window {i}"


def test_vehicles_stay_near_their_city_and_see_more_people_downtown(
    city_run: list[Item], two_hours: list[Item]
) -> None:
    frames = {**streams(city_run, *VEHICLES), **streams(two_hours, *VEHICLES)}
    assert {nearest_city(recs[0]) for recs in frames.values()} == set(CITIES.values())
    distance, pedestrians = [], []
    for recs in frames.values():
        centre = nearest_city(recs[0])
        metres = np.array([math.hypot(*local_m(r, centre)) for r in recs])
        assert metres.max() < 50_000
        hops = np.abs(np.diff([complex(*local_m(r, centre)) for r in recs]))
        dt = np.diff([r["ts"] for r in recs]) / 1000
        assert (hops <= np.array([r["speed_mps"] for r in recs[1:]]) * dt + 3 * dt + 20).all(), "GPS jumps"
        distance += list(metres)
        pedestrians += [r["perception"]["pedestrians"] for r in recs]
    distance_a, pedestrians_a = np.array(distance), np.array(pedestrians)
    central = distance_a < np.median(distance_a)
    assert pedestrians_a[central].mean() > 1.3 * pedestrians_a[~central].mean()


def test_cameras_ride_on_public_vehicles_only(city_run: list[Item]) -> None:
    public = set(streams(city_run, VEHICLES_PUBLIC))
    cameras = streams(city_run, CAMERAS)
    assert {recs[0]["vin"] for recs in cameras.values()} == public
    for recs in cameras.values():
        assert np.all(np.diff([r["frame_no"] for r in recs]) > 0)
        assert all(0 < r["exposure_ms"] <= 33.3 and 0.3 <= d["score"] <= 0.99 for r in recs for d in r["detections"])


def test_model_telemetry_is_stranger_at_night(contracts: dict[str, DataContract]) -> None:
    def mean_ood(hour: int) -> float:
        spec = FleetSpec(devices=10, seconds=120, rate_hz=10, seed=2, start=datetime(2025, 6, 2, hour, tzinfo=JST))
        recs = [r for rs in streams(list(Fleet(spec).items()), TELEMETRY).values() for r in rs]
        assert all(0 <= r["ood_score"] <= 1 and r["latency_ms"] > 0 for r in recs)
        return float(np.mean([r["ood_score"] for r in recs if r["model_name"].startswith("fieldloop.vehicle")]))

    assert mean_ood(2) > mean_ood(13) + 0.1


def test_robot_arms_cycle_within_joint_limits(city_run: list[Item]) -> None:
    arms = streams(city_run, ROBOTS)
    assert len(arms) == 2
    for _robot, recs in arms.items():
        q = np.array([r["joint_pos_rad"] for r in recs])
        torque = np.array([r["joint_torque_nm"] for r in recs])
        grip = np.array([r["gripper_pos"] for r in recs])
        closed = np.array([r["gripper_closed"] for r in recs])
        assert q.shape[1] == torque.shape[1] == 6
        assert (q >= JOINT_LIMITS[:, 0]).all() and (q <= JOINT_LIMITS[:, 1]).all()
        assert (np.abs(np.diff(q, axis=0)) / 0.1).max() < 3, "joints move smoothly"
        releases = np.sum(closed[:-1] & ~closed[1:])
        assert 300 / 12 <= releases <= 300 / 5, "one pick-and-place every 5-12 s"
        assert ((grip > 0.5) == closed)[np.abs(grip - 0.5) > 0.02].all()
        # the shoulder carries the arm: its torque follows gravity, cos(shoulder angle)
        assert np.corrcoef(torque[:, 1], np.cos(q[:, 1]))[0, 1] > 0.7
        assert np.abs(torque[:, 1]).mean() > 20 and np.isfinite(torque).all()


def test_furnace_sensors_stay_in_range_unless_flagged(city_run: list[Item]) -> None:
    units = {"TI": "Cel", "PI": "kPa", "FI": "m3/h"}
    normal = {"Cel": (1150, 1250), "kPa": (205, 255), "m3/h": (740, 860)}
    plant = [i for i in city_run if i.contract_id == PLANT]
    by_sensor = defaultdict(list)
    for item in plant:
        by_sensor[item.device_id].append(item)
    assert len(by_sensor) == 3
    for sensor, items in by_sensor.items():
        unit = units[sensor.split("-")[1]]
        assert {i.record["unit"] for i in items} == {unit}
        calm = np.array([i.record["value"] for i in items if i.truth is None])
        lo, hi = normal[unit]
        assert lo <= calm.min() and calm.max() <= hi, sensor
        assert calm.std() > 0.5, "readings drift, they are not constant"
    quality = [i.record["quality"] for i in plant]
    assert quality.count("GOOD") / len(quality) > 0.95
    assert all(i.truth for i in plant if i.record["quality"] == "BAD"), "BAD only on anomalies"
    assert "truth" not in plant[0].record and "anomaly" not in json.dumps(plant[0].record)


def test_furnace_anomalies_are_flagged_and_visible(two_hours: list[Item]) -> None:
    items = [i for i in two_hours if i.contract_id == PLANT]
    assert {i.record["unit"] for i in items} == {"Cel"}
    kinds = {i.truth for i in items}
    assert kinds == {None, "spike", "step-drift"}
    values = np.array([i.record["value"] for i in items])
    calm = np.array([i.truth is None for i in items])
    assert values[calm].min() >= 1150 and values[calm].max() <= 1250
    for k, item in enumerate(items):
        if item.truth == "spike" and items[k - 1].truth is None:
            assert abs(values[k] - values[k - 1]) > 30, "a spike an anomaly model could find"


# Faults ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "param"),
    [
        ("malformed", "malformed", 0.02),
        ("malformed:0.1", "malformed", 0.1),
        ("network-drop:45", "network-drop", 45),
        ("clock-skew:2.5", "clock-skew", 2.5),
        ("broker-restart", "broker-restart", 15),
        ("duplicates:1", "duplicates", 1),
    ],
)
def test_fault_specs_parse(text: str, kind: str, param: float) -> None:
    assert FaultSpec.parse(text) == FaultSpec(kind, param)


@pytest.mark.parametrize(
    "text", ["flood", "malformed:2", "malformed:x", "network-drop:-5", "clock-skew:0", "duplicates:nan"]
)
def test_bad_fault_specs_are_refused(text: str) -> None:
    with pytest.raises(FaultSpecError):
        FaultSpec.parse(text)


def test_fault_plan_depends_only_on_its_inputs() -> None:
    specs = [FaultSpec.parse(s) for s in ("network-drop:30", "broker-restart", "clock-skew:5", "network-drop:10")]

    def plan(seed: int) -> FaultPlan:
        return FaultPlan.build(specs, seed, 1_000_000, 600_000, 20)

    a, b, c = plan(1), plan(1), plan(2)
    assert (a.windows, a.skews) == (b.windows, b.skews) != (c.windows, c.skews)
    assert len(a.windows) == 3 and len(a.skews) == 4
    assert all(1_000_000 <= w.start_ms < w.end_ms for w in a.windows)
    with pytest.raises(FaultSpecError, match="more than once"):
        FaultPlan.build([FaultSpec.parse("malformed"), FaultSpec.parse("malformed:0.5")], 1, 0, 1000, 2)


def test_same_seed_same_run_report_and_messages(contracts: dict[str, DataContract], registry: SchemaRegistry) -> None:
    spec = FleetSpec(devices=6, seconds=30, rate_hz=10, seed=21, start=START)
    faults = ["malformed:0.05", "duplicates:0.05", "clock-skew", "network-drop:5"]
    first, sink1, raw1 = run(spec, faults, contracts, registry)
    second, sink2, raw2 = run(spec, faults, contracts, registry)
    assert {**first.to_dict(), "wall_seconds": 0} == {**second.to_dict(), "wall_seconds": 0}
    assert sink1.sent == sink2.sent and raw1.messages == raw2.messages


def test_faults_do_not_change_what_devices_generate(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    spec = FleetSpec(devices=6, seconds=30, rate_hz=10, seed=8, start=START)
    _, plain, _ = run(spec, [], contracts, registry)
    _, faulty, raw = run(spec, ["duplicates:0.1", "network-drop:10", "broker-restart"], contracts, registry)
    assert [(s.device_id, s.seq, s.payload) for s in plain.sent] == [
        (s.device_id, s.seq, s.payload) for s in faulty.sent
    ]
    assert raw.messages


def test_malformed_payloads_reach_the_raw_path_and_are_counted(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    report, sink, raw = run(
        FleetSpec(devices=10, seconds=60, rate_hz=10, seed=4, start=START), ["malformed:0.05"], contracts, registry
    )
    generated = report.total.generated
    injected = sum(m["injected"] for m in report.malformed.values())
    assert set(report.malformed) == set(MALFORMED_KINDS)
    assert 0.04 * generated < injected < 0.06 * generated
    sent_raw = defaultdict(list)
    for m in raw.messages:
        sent_raw[m.kind].append(m)
    assert {k: len(v) for k, v in sent_raw.items()} == {
        k: m["raw_sent"] for k, m in report.malformed.items() if m["raw_sent"]
    }
    # junk bytes: the cloud's decoder rejects every one, for the reason the kind names
    for m in sent_raw["truncated"]:
        with pytest.raises(WireError) as excinfo:
            decode(m.payload, registry)
        assert excinfo.value.reason in ("truncated", "bad-magic", "undecodable")
    for m in sent_raw["unknown-fingerprint"]:
        with pytest.raises(WireError, match="not registered"):
            decode(m.payload, registry)
    # NaN: refused at the device, then pushed raw anyway; still valid Avro, the cloud must judge it
    assert report.malformed["nan"]["refused"] == report.refused_reasons["non-finite"] == len(sent_raw["nan"]) > 0
    for m in sent_raw["nan"]:
        record = decode(m.payload, registry)
        assert any(isinstance(v, float) and math.isnan(v) for v in record.values()) or any(
            isinstance(v, list) and any(math.isnan(x) for x in v) for v in record.values()
        )
    # far-future and oversized records pass the SDK's checks: they travel the normal path
    accepted = sink.sent
    assert (
        sum(decode(s.payload, registry)["ts"].year > 2029 for s in accepted if len(s.payload) < 4096)
        == report.malformed["future-ts"]["accepted"]
        > 0
    )
    assert sum(len(s.payload) > OVERSIZED_BYTES for s in accepted) == report.malformed["oversized"]["accepted"] > 0
    # junk never reuses a real (device, seq): it cannot shadow a valid record in the cloud's de-duplication
    assert all(m.seq > JUNK_SEQ_BASE for m in raw.messages)
    assert len({(m.device_id, m.seq) for m in raw.messages}) == len(raw.messages)
    assert {m.contract_id for m in raw.messages} <= set(report.streams)
    assert all(m.device_id in report.per_device for m in raw.messages)


def test_duplicates_repeat_the_exact_message_with_the_same_seq(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    report, sink, raw = run(
        FleetSpec(devices=6, seconds=60, rate_hz=10, seed=4, start=START), ["duplicates:0.03"], contracts, registry
    )
    originals = {(s.device_id, s.seq): s for s in sink.sent}
    assert report.duplicates_sent == len(raw.messages) > 0.02 * len(sink.sent)
    for m in raw.messages:
        original = originals[(m.device_id, m.seq)]
        assert (m.kind, m.contract_id, m.payload) == ("duplicate", original.contract_id, original.payload)


def test_clock_skew_offsets_some_devices_until_ntp_correction(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    spec = FleetSpec(devices=10, seconds=60, rate_hz=5, seed=6, start=START)
    _, plain, _ = run(spec, [], contracts, registry)
    report, skewed, _ = run(spec, ["clock-skew:4"], contracts, registry)
    (fault,) = report.faults
    offsets = {d: round(v["offset_s"] * 1000) for d, v in fault["devices"].items()}
    assert offsets and all(120_000 <= abs(o) <= 240_000 for o in offsets.values())
    seen: dict[str, set[int]] = defaultdict(set)
    last: dict[tuple[str, str], int] = {}
    backwards = set()
    for before, after in zip(plain.sent, skewed.sent, strict=True):
        true_ts = decode(before.payload, registry)["ts"]
        device_ts = decode(after.payload, registry)["ts"]
        seen[after.device_id].add(round((device_ts - true_ts).total_seconds() * 1000))
        key = (after.contract_id, after.device_id)
        ms = int(device_ts.timestamp() * 1000)
        if ms < last.get(key, 0):
            backwards.add(after.device_id)
        last[key] = ms
    for device, diffs in seen.items():
        assert diffs == ({0, offsets[device]} if device in offsets else {0}), device
    assert backwards and backwards <= {d for d, o in offsets.items() if o > 0}


class RecordingRaw(MemoryRawSender):
    """Notes whether the uplink was down when a raw message left."""

    def __init__(self, sink: MemorySink) -> None:
        super().__init__()
        self.sink = sink
        self.while_paused = 0

    def send_raw(self, *args: Any) -> None:
        self.while_paused += self.sink.paused
        super().send_raw(*args)


def test_network_drop_pauses_the_sdk_and_holds_raw_traffic(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    sink = MemorySink(contracts, registry)
    raw = RecordingRaw(sink)
    report, _, _ = run(
        FleetSpec(devices=6, seconds=60, rate_hz=10, seed=2, start=START),
        ["network-drop:15", "duplicates:0.1"],
        contracts,
        registry,
        sink,
        raw,
    )
    drop = report.faults[0]
    assert (sink.pauses, sink.resumes, sink.paused) == (1, 1, False)
    assert drop["executed"] and drop["end_ts"] - drop["start_ts"] == 15_000
    spooled = [s for s in sink.sent if s.paused]
    assert len(spooled) == drop["records_during"] > 0, "records made offline are still handed to the SDK"
    assert raw.messages and raw.while_paused == 0, "nothing leaves an offline device, not even junk"
    assert len(raw.messages) == report.total.raw_sent == report.duplicates_sent, "held messages leave on reconnect"
    assert report.flushed


class FakeBroker:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.down = False

    def stop(self) -> None:
        self.calls.append("stop")
        self.down = True

    def start(self) -> None:
        self.calls.append("start")
        self.down = False


def test_broker_restart_stops_then_starts_the_broker(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    broker = FakeBroker()
    report, _, _ = run(
        FleetSpec(devices=4, seconds=60, rate_hz=10, seed=1, start=START),
        ["broker-restart:10"],
        contracts,
        registry,
        broker=broker,
    )
    assert broker.calls == ["stop", "start"]
    assert report.faults[0]["executed"] and report.faults[0]["records_during"] > 0
    planned_only, _, _ = run(
        FleetSpec(devices=4, seconds=60, rate_hz=10, seed=1, start=START), ["broker-restart:10"], contracts, registry
    )
    assert not planned_only.faults[0]["executed"]


def test_a_crash_mid_run_never_leaves_the_broker_down_or_the_uplink_paused(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    broker = FakeBroker()

    class CrashingSink(MemorySink):
        def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int:
            if broker.down and self.paused:
                raise RuntimeError("device lost power")
            return super().send(contract_id, device_id, record)

    sink = CrashingSink(contracts, registry)
    sim = Simulation(
        FleetSpec(devices=4, seconds=60, rate_hz=10, seed=1, start=START),
        [FaultSpec.parse("broker-restart:40"), FaultSpec.parse("network-drop:40")],
        contracts,
        registry,
    )
    with pytest.raises(RuntimeError):
        sim.run(sink, MemoryRawSender(), broker)
    assert broker.calls == ["stop", "start"] and not sink.paused


def test_report_reconciles_with_refusals_and_round_trips(
    tmp_path: Path, contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    # an SDK that does not know ACME Mobility's contract refuses those vans' frames at the device
    partial = {k: v for k, v in contracts.items() if k != VEHICLES_ACME}
    spec = FleetSpec(devices=10, seconds=30, rate_hz=10, seed=3, start=START)
    report, sink, raw = run(
        spec, ["malformed:0.05", "duplicates:0.05"], contracts, registry, MemorySink(partial, registry)
    )
    total = report.total
    assert report.reconciles()
    assert report.streams[VEHICLES_ACME].accepted == 0
    assert report.refused_reasons["no-contract"] == report.streams[VEHICLES_ACME].refused > 0
    assert total.generated == Fleet(spec).expected_items() == total.accepted + total.refused + total.bypassed
    assert total.accepted == len(sink.sent) and total.raw_sent == len(raw.messages)
    assert total.raw_sent == report.raw_malformed + report.duplicates_sent
    path = tmp_path / "report.json"
    report.save(path)
    loaded = SimulationReport.load(path)
    assert loaded == report and json.loads(path.read_text())["reconciles"] is True
    loaded.per_device[next(iter(loaded.per_device))].accepted += 1
    assert not loaded.reconciles(), "a lost record must show"


def test_a_fleet_without_its_contracts_is_refused_before_it_runs(
    contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    from ingestion.errors import SimulationError

    partial = {k: v for k, v in contracts.items() if k != ROBOTS}
    with pytest.raises(SimulationError, match=ROBOTS):
        Simulation(FleetSpec(devices=3, start=START), [], partial, registry)


def test_the_dry_run_stand_in_judges_records_as_the_edge_sdk_does(
    tmp_path: Path, contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    """The real SDK, built by the CLI's factory, kept offline (paused: it spools, never dials)."""
    cfg = FieldloopConfig(home=tmp_path, kafka=KafkaConfig(bootstrap="127.0.0.1:1"))
    sdk = make_edge_sink(cfg, contracts, registry)
    sdk.pause()
    spec = FleetSpec(devices=10, seconds=3, rate_hz=10, seed=12, start=START)
    faults = [FaultSpec.parse("malformed:0.3"), FaultSpec.parse("duplicates:0.1")]
    try:
        real = Simulation(spec, faults, contracts, registry).run(sdk, MemoryRawSender(), flush_timeout_s=0.05)
    finally:
        sdk.close(timeout_s=0)
    fake = Simulation(spec, faults, contracts, registry).run(MemorySink(contracts, registry), MemoryRawSender())
    assert real.refused_reasons == fake.refused_reasons and "non-finite" in real.refused_reasons
    assert {**real.to_dict(), "flushed": 0, "wall_seconds": 0} == {**fake.to_dict(), "flushed": 0, "wall_seconds": 0}
    assert not real.flushed, "an offline SDK cannot have delivered"


# CLI ---------------------------------------------------------------------------------------
def test_help_says_the_units() -> None:
    runner = CliRunner()
    top = runner.invoke(fleet, ["--help"])
    assert top.exit_code == 0 and "simulate" in top.output
    text = runner.invoke(fleet, ["simulate", "--help"]).output
    for unit in ("Hz", "seconds", "MINUTES", "FRACTION", "ISO 8601", "5 vehicles"):
        assert unit in text


def test_dry_run_prints_and_saves_a_reconciling_report(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    result = CliRunner().invoke(
        fleet,
        [
            "simulate",
            "--dry-run",
            "--devices",
            "4",
            "--seconds",
            "5",
            "--rate",
            "10",
            "--seed",
            "7",
            "--start",
            "2025-04-01T09:00:00",
            "--fault",
            "malformed:0.2",
            "--fault",
            "broker-restart",
            "--report",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    for text in (VEHICLES_PUBLIC, PLANT, ROBOTS, "reconciles", "dry run", "broker-restart"):
        assert text in result.output
    data = json.loads(path.read_text())
    assert data["reconciles"] and data["dry_run"] and data["start"] == "2025-04-01T09:00:00+00:00"
    # 4 devices = vehicle, furnace, robot, vehicle; 50 ticks each
    generated = {c: s["generated"] for c, s in data["streams"].items()}
    assert generated == {VEHICLES_PUBLIC: 100, CAMERAS: 50, TELEMETRY: 15, ROBOTS: 50, PLANT: 50}
    assert data["faults"][1] | {"executed": False} == data["faults"][1]


def test_cli_refuses_bad_input_with_one_clear_line() -> None:
    runner = CliRunner()
    bad_fault = runner.invoke(fleet, ["simulate", "--dry-run", "--fault", "flood:3"])
    assert bad_fault.exit_code == 2 and "network-drop, broker-restart" in bad_fault.output
    bad_config = runner.invoke(fleet, ["simulate", "--dry-run"], env={"FIELDLOOP_KAFKA_BOOTSTRAPP": "x:1"})
    assert bad_config.exit_code == 1
    assert "unknown setting FIELDLOOP_KAFKA_BOOTSTRAPP" in bad_config.output and "Traceback" not in bad_config.output
    too_short = runner.invoke(fleet, ["simulate", "--dry-run", "--seconds", "0.01", "--rate", "1"])
    assert too_short.exit_code == 1 and "less than one record" in too_short.output
