"""Fleet simulator: deterministic devices with plausible physics, sent through the edge SDK.

Workflow:

1. a :class:`FleetSpec` (devices, rate, seconds, seed, start) is validated;
2. :class:`Fleet` builds the devices by a fixed pattern (:data:`DEVICE_PATTERN`: of every 10,
   5 vehicles, 3 blast-furnace sensors, 2 robot arms), each drawing from its own
   ``numpy.random.Generator`` seeded by (seed, device index), so a device's output depends
   only on the seed and its index, never on how many devices run beside it;
3. :meth:`Fleet.items` yields :class:`Item` s in event-time order on a simulated clock;
4. :meth:`Simulation.run` applies the :class:`~ingestion.faults.FaultPlan`, offers each
   record to a :class:`Sink` (the edge SDK), sends junk and duplicates through a
   :class:`~ingestion.faults.RawSender`, and returns a :class:`SimulationReport`.

This module never touches Kafka; ``ingestion.cli`` wires the real SDK, raw producer and
broker. ``--rate`` is the rate of each device's main stream; a vehicle's camera reports every
2nd frame and each vehicle and robot reports model telemetry every 10th.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from fieldloop.contracts import DataContract
from fieldloop.errors import FieldloopError
from fieldloop.wire import RegisteredSchema, SchemaRegistry, encode
from ingestion._internal.admission import admit
from ingestion.errors import SimulationError
from ingestion.faults import (
    BYTE_KINDS,
    JUNK_SEQ_BASE,
    Event,
    FaultPlan,
    FaultSpec,
    RawSender,
    Window,
    junk_bytes,
    junk_record,
)
from ingestion.notes import note

# Contract ids the fleet writes under (fieldloop/contracts/streams/*.toml).
VEHICLES_PUBLIC = "vehicle-frames-public"
VEHICLES_ACME = "vehicle-frames-acme-mobility"
CAMERAS = "camera-meta-public"
TELEMETRY = "fleet-telemetry"
ROBOTS = "robot-joints-kansai-robotics"
PLANT = "plant-sensors-acme-steel"

DEVICE_PATTERN = (  # interleaved, so small fleets get every kind
    "vehicle",
    "furnace",
    "robot",
    "vehicle",
    "furnace",
    "vehicle",
    "robot",
    "vehicle",
    "furnace",
    "vehicle",
)
EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z; the default start is an hour of 2025 picked by the seed
_DEVICE_STREAM = 1  # SeedSequence spawn-key stream of device physics (faults use others)
_H = 0.1  # s, longest integration step of the vehicle model


@dataclass(frozen=True)
class Item:
    """One generated record.

    Attributes:
        contract_id: the data contract governing the record's stream.
        device_id: the id the SDK sends it under.
        record: the record, as its stream's Avro schema expects it.
        event_ms: true simulated time (epoch millis); ``record["ts"]`` is the device clock.
        unit: index of the simulated device that produced it (a vehicle emits three streams).
        truth: ground-truth label not in the record (furnace ``spike`` / ``step-drift``).
    """

    contract_id: str
    device_id: str
    record: dict[str, Any]
    event_ms: int
    unit: int = 0
    truth: str | None = None


def _rng(seed: int, unit: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_DEVICE_STREAM, unit)))


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else float(x)


def _jst_hour(t_ms: int) -> float:
    return (t_ms / 3_600_000 + 9) % 24


def _lognormal_ms(rng: np.random.Generator, median_ms: float, sigma: float) -> float:
    latency = median_ms * math.exp(sigma * rng.normal())
    if rng.random() < 0.01:  # GC pause, thermal throttling
        latency *= rng.uniform(3, 8)
    return round(latency, 3)


# VINs ----------------------------------------------------------------------------------
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # ISO 3779: no I, O, Q
_VIN_VALUES = dict(zip("ABCDEFGHJKLMNPRSTUVWXYZ", "12345678123457923456789", strict=True))  # ISO 3779 transliteration
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit(vin: str) -> str:
    """The 9th character of a 17-character VIN (North American check digit)."""
    total = sum(int(c if c.isdigit() else _VIN_VALUES[c]) * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    return "X" if total % 11 == 10 else str(total % 11)


def make_vin(rng: np.random.Generator, wmi: str) -> str:
    """A plausible VIN: maker code, vehicle descriptor, check digit, 2023-25 model year, plant, serial."""
    vds = "".join(_VIN_CHARS[int(i)] for i in rng.integers(len(_VIN_CHARS), size=5))
    tail = "PRS"[int(rng.integers(3))] + _VIN_CHARS[int(rng.integers(23))] + f"{int(rng.integers(1_000_000)):06d}"
    draft = wmi + vds + "0" + tail
    return wmi + vds + vin_check_digit(draft) + tail


# Devices -------------------------------------------------------------------------------
class Device:
    """A simulated device: one unit of the fleet, emitting one or more streams."""

    kind: ClassVar[str]
    unit: int
    device_id: str
    rng: np.random.Generator

    @property
    def device_ids(self) -> list[str]:
        return [self.device_id]

    @property
    def contract_ids(self) -> list[str]:
        raise NotImplementedError

    def step(self, k: int, t_ms: int) -> list[Item]:
        """Advance one tick (1/rate s) to ``t_ms`` and return what the device emits."""
        raise NotImplementedError

    def count(self, ticks: int) -> int:
        """How many items :meth:`step` emits over ``ticks`` ticks."""
        raise NotImplementedError


CITIES = {"tokyo": (35.6812, 139.7671), "osaka": (34.7025, 135.4959)}  # Tokyo Station, Osaka Station
M_PER_DEG_LAT = 111_320.0
NOTE_EVERY_S = 10.0  # a driver or operator types a note about this often (mean, s); a third are empty
A_MIN, A_MAX = -6.0, 3.0  # m/s^2: emergency braking .. brisk acceleration
WHEELBASE_M = 2.7
STEERING_RATIO = 15.0
MAX_STEER_RAD = math.radians(35)
A_LAT_MAX = 3.0  # m/s^2, what drivers accept in a turn
SPEED_LIMITS = (8.3, 11.1, 13.9, 16.7, 16.7, 22.2)  # m/s (30-80 km/h; expressway rarer)
# Of every 5 vehicles: city and the contract their frames fall under (ACME's vans drive in Tokyo).
_VEHICLE_FLEETS = (
    ("tokyo", VEHICLES_PUBLIC),
    ("osaka", VEHICLES_PUBLIC),
    ("tokyo", VEHICLES_ACME),
    ("osaka", VEHICLES_PUBLIC),
    ("tokyo", VEHICLES_PUBLIC),
)


def perception_rates(distance_km: float, speed_mps: float) -> tuple[float, float, float]:
    """Mean tracked vehicles, pedestrians and cyclists: denser downtown and in slow traffic."""
    slow = speed_mps < 5
    vehicles = 1.5 + 10 * math.exp(-distance_km / 6) * (1.4 if slow else 1.0)
    pedestrians = 0.3 + 9 * math.exp(-distance_km / 3) * (1.5 if slow else 0.6)
    cyclists = 0.2 + 2.5 * math.exp(-distance_km / 5)
    return vehicles, pedestrians, cyclists


class Vehicle(Device):
    """A car in Tokyo or Osaka with its front camera and its model's telemetry.

    Longitudinal: speed follows a target (speed limits, traffic stops, rare emergency
    braking) with bounded acceleration and jerk. Lateral: yaw rate from lane wander,
    90-degree turns after stops and, far from the centre, a pull back towards it; heading
    integrates yaw rate, position integrates speed along heading, steering follows the
    bicycle model. Perception counts are Poisson, denser downtown.
    """

    kind = "vehicle"

    def __init__(self, unit: int, ordinal: int, rng: np.random.Generator, rate_hz: float) -> None:
        self.unit, self.rng, self.dt = unit, rng, 1.0 / rate_hz
        self.city, self.contract_id = _VEHICLE_FLEETS[ordinal % len(_VEHICLE_FLEETS)]
        self.centre = CITIES[self.city]
        wmi = "JTF" if self.contract_id == VEHICLES_ACME else ("JTD", "JN1", "JHM", "JM1", "JF1")[int(rng.integers(5))]
        self.device_id = self.vin = make_vin(rng, wmi)
        self.driver_id = f"{'am-' if self.contract_id == VEHICLES_ACME else ''}drv-{int(rng.integers(10_000, 100_000))}"
        # a restricted fleet's camera metadata would be restricted too; only public vehicles publish it
        self.camera_id = f"cam-{self.vin}-front" if self.contract_id == VEHICLES_PUBLIC else None
        self.model_version = str(int(rng.integers(3, 9)))
        radius, bearing = rng.uniform(300, 8000), rng.uniform(0, 2 * math.pi)
        self.north, self.east = radius * math.cos(bearing), radius * math.sin(bearing)
        self.heading = rng.uniform(0, 2 * math.pi)  # compass bearing, rad
        self.v = float(rng.uniform(0, 12))
        self.a = 0.0
        self.yaw = 0.0  # rad/s, left positive
        self.wander = 0.0
        self.steer_rad = 0.0
        self.target = SPEED_LIMITS[int(rng.integers(len(SPEED_LIMITS)))]
        self.mode, self.mode_left = "cruise", rng.uniform(10, 40)
        self.turn_left_rad = 0.0  # remaining signed turn
        self.takeover_left = 0.0
        self.counts = (0, 0, 0)
        self.frame_no = int(rng.integers(1_000_000))
        self.since_telemetry = {"intervention": False, "emergency": False}
        # notes draw from their own stream: whether a frame has one never shifts the physics
        self.notes = random.Random(int(rng.integers(2**62)))
        self.note_chance = 1.0 / (NOTE_EVERY_S * rate_hz)

    @property
    def device_ids(self) -> list[str]:
        return [self.vin] + ([self.camera_id] if self.camera_id else [])

    @property
    def contract_ids(self) -> list[str]:
        return [self.contract_id, TELEMETRY] + ([CAMERAS] if self.camera_id else [])

    def count(self, ticks: int) -> int:
        return ticks + (ticks + 9) // 10 + ((ticks + 1) // 2 if self.camera_id else 0)

    @property
    def distance_m(self) -> float:
        return math.hypot(self.north, self.east)

    def _home_error(self) -> float:
        """Signed angle from heading to the centre's bearing (rad, positive: centre to the right)."""
        home = math.atan2(-self.east, -self.north)
        return (home - self.heading + math.pi) % (2 * math.pi) - math.pi

    def _modes(self, h: float) -> None:
        rng = self.rng
        self.mode_left -= h
        if self.mode == "cruise":
            if self.v > 8 and rng.random() < h / 600:
                self.mode, self.mode_left = "emergency", rng.uniform(1.0, 2.5)
                self.since_telemetry["emergency"] = True
                if rng.random() < 0.3:
                    self.takeover_left = rng.uniform(2, 8)
            elif self.mode_left <= 0:
                if rng.random() < 0.4:
                    self.mode = "stopping"  # red light ahead
                else:
                    self.target = SPEED_LIMITS[int(rng.integers(len(SPEED_LIMITS)))]
                    self.mode_left = rng.uniform(15, 60)
        elif self.mode == "stopping" and self.v == 0:
            self.mode, self.mode_left = "stopped", rng.uniform(10, 45)
        elif self.mode == "stopped" and self.mode_left <= 0:
            self.mode, self.mode_left = "cruise", rng.uniform(15, 60)
            self.target = SPEED_LIMITS[int(rng.integers(4))]
            if rng.random() < 0.5:
                far = self.distance_m > 8000
                right = self._home_error() > 0 if far else rng.random() < 0.5
                self.turn_left_rad = -math.pi / 2 if right else math.pi / 2
        elif self.mode == "emergency" and (self.mode_left <= 0 or self.v == 0):
            self.mode, self.mode_left = "cruise", rng.uniform(5, 20)
        if self.takeover_left > 0:
            self.since_telemetry["intervention"] = True
            self.takeover_left -= h
        elif rng.random() < h / 3600:
            self.takeover_left = rng.uniform(2, 8)

    def _integrate(self, h: float) -> None:
        self._modes(h)
        if self.mode == "emergency":
            a_des, jerk = A_MIN, 30.0
        elif self.mode in ("stopping", "stopped"):
            a_des, jerk = (-min(3.0, 0.4 * self.v + 0.5) if self.v > 0 else 0.0), 5.0
        else:
            a_des, jerk = _clip(0.5 * (self.target - self.v), -2.5, 2.0), 4.0
        self.a = _clip(self.a + _clip(a_des - self.a, -jerk * h, jerk * h), A_MIN, A_MAX)
        v_old = self.v
        self.v = max(0.0, v_old + self.a * h)
        if self.v == 0.0:
            self.a = (self.v - v_old) / h
        # lateral: what the tyres allow at this speed, and what the driver accepts
        r_max = min(self.v * math.tan(MAX_STEER_RAD) / WHEELBASE_M, A_LAT_MAX / max(self.v, 0.1), math.radians(25))
        if self.turn_left_rad:
            r = math.copysign(r_max, self.turn_left_rad)
            if abs(r * h) >= abs(self.turn_left_rad):
                r, self.turn_left_rad = self.turn_left_rad / h, 0.0
            else:
                self.turn_left_rad -= r * h
        else:
            self.wander += -self.wander * h / 3 + 0.01 * math.sqrt(h) * self.rng.normal()
            pull = _clip((self.distance_m - 8000) / 4000, 0, 1)
            r = self.wander - 0.03 * pull * _clip(self._home_error(), -1, 1)
            r = _clip(r, -r_max, r_max)
        self.yaw = r
        if self.v > 0.5:
            self.steer_rad = math.atan(r * WHEELBASE_M / self.v)
        self.heading = (self.heading - r * h) % (2 * math.pi)
        v_mid = 0.5 * (v_old + self.v)
        self.north += v_mid * math.cos(self.heading) * h
        self.east += v_mid * math.sin(self.heading) * h

    def step(self, k: int, t_ms: int) -> list[Item]:
        rng = self.rng
        v_start = self.v
        n = max(1, math.ceil(self.dt / _H - 1e-9))
        for _ in range(n):
            self._integrate(self.dt / n)
        accel = (self.v - v_start) / self.dt  # mean over the frame: consistent with the speeds sent
        if rng.random() < min(1.0, self.dt):  # perception tracks change about once a second
            rates = perception_rates(self.distance_m / 1000, self.v)
            self.counts = tuple(int(x) for x in rng.poisson(rates))
        lat0, lon0 = self.centre
        gps_n, gps_e = self.north + rng.normal(0, 2.5), self.east + rng.normal(0, 2.5)
        if accel < -0.2:
            brake = min(1.0, 0.05 + -accel / -A_MIN * 0.95)
        else:
            brake = 0.3 if self.v == 0 else 0.0  # holding the car at a standstill
        frame = {
            "vin": self.vin,
            "driver_id": self.driver_id,
            "ts": t_ms,
            "lat": round(lat0 + gps_n / M_PER_DEG_LAT, 7),
            "lon": round(lon0 + gps_e / (M_PER_DEG_LAT * math.cos(math.radians(lat0))), 7),
            "speed_mps": round(self.v, 3),
            "accel_mps2": round(_clip(accel + rng.normal(0, 0.03), A_MIN, A_MAX), 3),
            "steering_deg": round(math.degrees(self.steer_rad) * STEERING_RATIO + rng.normal(0, 0.3), 2),
            "brake": round(brake, 3),
            "yaw_rate_dps": round(math.degrees(self.yaw) + rng.normal(0, 0.05), 3),
            "perception": dict(zip(("vehicles", "pedestrians", "cyclists"), self.counts, strict=True)),
            "intervention": self.takeover_left > 0,
            "driver_note": note(self.notes) if self.notes.random() < self.note_chance else None,
        }
        items = [Item(self.contract_id, self.vin, frame, t_ms, self.unit)]
        if self.camera_id and k % 2 == 0:
            items.append(Item(CAMERAS, self.camera_id, self._camera(t_ms), t_ms, self.unit))
        if k % 10 == 0:
            items.append(Item(TELEMETRY, self.vin, self._telemetry(t_ms, frame), t_ms, self.unit))
        return items

    def _camera(self, t_ms: int) -> dict[str, Any]:
        rng = self.rng
        self.frame_no += max(1, round(30 * 2 * self.dt))  # 30 fps sensor, metadata every 2nd vehicle frame
        night = not 6 <= _jst_hour(t_ms) < 18
        exposure = rng.uniform(16, 33) if night else rng.lognormal(math.log(3), 0.4)
        labels = [
            ("car", min(self.counts[0], 12)),
            ("pedestrian", min(self.counts[1], 12)),
            ("cyclist", min(self.counts[2], 6)),
            ("traffic_light", int(rng.random() < 0.3)),
        ]
        a, b = (5, 3) if night else (8, 2)  # detections are less confident at night
        names = [label for label, n in labels for _ in range(n)]
        scores = np.clip(rng.beta(a, b, size=len(names)), 0.3, 0.99).round(3)
        detections = [{"label": label, "score": float(score)} for label, score in zip(names, scores, strict=True)]
        return {
            "camera_id": self.camera_id,
            "vin": self.vin,
            "ts": t_ms,
            "frame_no": self.frame_no,
            "width": 1920,
            "height": 1080,
            "exposure_ms": round(float(min(exposure, 33.3)), 3),
            "detections": detections,
        }

    def _telemetry(self, t_ms: int, frame: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        night = not 6 <= _jst_hour(t_ms) < 18
        crowded = frame["perception"]["pedestrians"] / 10
        ood = (
            0.08
            + 0.2 * night
            + 0.15 * min(crowded, 1.5)
            + 0.35 * self.since_telemetry["emergency"]
            + 0.1 * (self.v > 20)
            + rng.normal(0, 0.03)
        )
        ood = _clip(ood, 0, 1)
        tenant = ".acme-mobility" if self.contract_id == VEHICLES_ACME else ""
        record = {
            "device_id": self.vin,
            "model_name": f"fieldloop.vehicle-longitudinal{tenant}",
            "model_version": self.model_version,
            "ts": t_ms,
            "latency_ms": _lognormal_ms(rng, 12.0, 0.2),
            "ood_score": round(ood, 4),
            "disagreement": round(abs(rng.normal(0, 0.05 + 0.8 * ood)), 4),  # m/s^2, model vs fallback
            "intervention": self.since_telemetry["intervention"],
        }
        self.since_telemetry = {"intervention": False, "emergency": False}
        return record


JOINT_LIMITS = np.array([(-2.97, 2.97), (-1.20, 2.00), (-2.60, 1.00), (-3.05, 3.05), (-2.09, 2.09), (-3.14, 3.14)])
_HOME = np.array([0.0, 0.9, -1.6, 0.0, 0.7, 0.0])
_PICK = np.array([-0.7, 0.25, -0.9, 0.25, 0.65, 0.4])
_PLACE = np.array([0.8, 0.3, -1.0, -0.35, 0.7, -0.5])
_ABOVE = np.array([0.0, 0.2, -0.25, 0.0, 0.05, 0.0])
_INERTIA = np.array([3.0, 4.5, 1.8, 0.15, 0.12, 0.05])  # kg m^2, seen by each joint
_VISCOUS = np.array([2.0, 2.0, 1.5, 0.3, 0.3, 0.2])  # N m s/rad
_COULOMB = np.array([3.0, 4.0, 2.0, 0.5, 0.5, 0.3])  # N m
_TORQUE_NOISE = np.array([0.4, 0.5, 0.3, 0.05, 0.05, 0.03])  # N m
_G = 9.81
GRIPPER_OPEN = 0.05


def _min_jerk(u: float) -> tuple[float, float, float]:
    """Position, velocity and acceleration of the minimum-jerk profile at phase ``u`` in [0, 1]."""
    return (10 * u**3 - 15 * u**4 + 6 * u**5, 30 * u**2 - 60 * u**3 + 30 * u**4, 60 * u - 180 * u**2 + 120 * u**3)


class RobotArm(Device):
    """A 6-joint arm doing pick-and-place cycles at a Kansai Robotics cell.

    Each cycle visits home, above the (slightly varying) pick pose, the pick pose, grasps,
    lifts, moves to the place pose, releases and returns, every segment a minimum-jerk
    profile. Torque = inertia * acceleration + gravity on shoulder and elbow (plus the
    part while held) + friction + noise. About 2% of grasps miss: the gripper closes fully
    and the operator may intervene.
    """

    kind = "robot"

    def __init__(self, unit: int, ordinal: int, rng: np.random.Generator, rate_hz: float) -> None:
        self.unit, self.rng, self.dt = unit, rng, 1.0 / rate_hz
        self.device_id = f"ksr-osaka-arm-{ordinal + 1:03d}"
        self.operators = [f"op-{int(x)}" for x in rng.integers(1000, 10_000, size=3)]  # one per shift
        self.notes = random.Random(int(rng.integers(2**62)))
        self.note_chance = 1.0 / (NOTE_EVERY_S * rate_hz)
        self.link_mass = rng.uniform(0.95, 1.05)  # units differ slightly
        self.t = 0.0
        self.cycle_end = 0.0
        self.segments: list[tuple[float, float, np.ndarray, np.ndarray, float, float]] = []
        self._new_cycle(start=0.0)
        self.t = float(rng.uniform(0, self.cycle_end))  # arms are not in lockstep

    @property
    def contract_ids(self) -> list[str]:
        return [ROBOTS, TELEMETRY]

    def count(self, ticks: int) -> int:
        return ticks + (ticks + 9) // 10

    def _new_cycle(self, start: float) -> None:
        rng = self.rng
        offset = np.array(
            [
                rng.uniform(-0.15, 0.15),
                rng.uniform(-0.05, 0.05),
                rng.uniform(-0.05, 0.05),
                0.0,
                0.0,
                rng.uniform(-0.3, 0.3),
            ]
        )
        pick = _PICK + offset
        self.miss = rng.random() < 0.02
        self.part_kg = 0.0 if self.miss else float(rng.uniform(0.5, 2.0))
        self.unusual = float(np.abs(offset[0]) / 0.15)  # far-off picks look unfamiliar to the model
        self.intervened = self.miss and rng.random() < 0.5
        held = 1.0 if self.miss else float(rng.uniform(0.7, 0.9))
        o, c = GRIPPER_OPEN, held
        plan = [  # (to pose, seconds, gripper from, gripper to)
            (pick + _ABOVE, 1.4, o, o),
            (pick, 0.6, o, o),
            (pick, 0.5, o, c),
            (pick + _ABOVE, 0.6, c, c),
            (_PLACE + _ABOVE, 1.6, c, c),
            (_PLACE, 0.6, c, c),
            (_PLACE, 0.4, c, o),
            (_PLACE + _ABOVE, 0.6, o, o),
            (_HOME, 1.3, o, o),
            (_HOME, float(rng.uniform(0.2, 1.5)), o, o),
        ]
        pace = rng.uniform(0.9, 1.1)
        pose, t, self.segments = _HOME, start, []
        for target, seconds, g0, g1 in plan:
            self.segments.append((t, t + seconds * pace, pose, target, g0, g1))
            pose, t = target, t + seconds * pace
        self.cycle_end = t

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        # the segment the arm is in (the last one once its cycle is over)
        t0, t1, qa, qb, g0, g1 = next((s for s in self.segments if self.t < s[1]), self.segments[-1])
        u = min(max((self.t - t0) / (t1 - t0), 0.0), 1.0)
        s, ds, dds = _min_jerk(u)
        span = t1 - t0
        return qa + (qb - qa) * s, (qb - qa) * ds / span, (qb - qa) * dds / span**2, g0 + (g1 - g0) * s

    def step(self, k: int, t_ms: int) -> list[Item]:
        rng = self.rng
        self.t += self.dt
        while self.t >= self.cycle_end:
            self._new_cycle(start=self.cycle_end)
        q, qd, qdd, grip = self._state()
        holding = grip > 0.5 and not self.miss
        m_tip = self.part_kg if holding else 0.0
        shoulder = (12 * 0.3 + 8 * 0.6) * self.link_mass * _G  # N m: upper arm to its middle, forearm at its root
        forearm = (8 * 0.25 * self.link_mass + m_tip * 0.5) * _G
        gravity = np.zeros(6)
        gravity[2] = forearm * math.cos(q[1] + q[2])
        gravity[1] = (shoulder + m_tip * 0.6 * _G) * math.cos(q[1]) + gravity[2]
        torque = _INERTIA * qdd + _VISCOUS * qd + _COULOMB * np.tanh(qd / 0.02) + gravity
        torque += rng.normal(0, _TORQUE_NOISE)
        pos = q + rng.normal(0, 1e-4, 6)  # encoder noise
        record = {
            "robot_id": self.device_id,
            "operator_id": self.operators[int(((_jst_hour(t_ms) - 6) % 24) // 8)],
            "ts": t_ms,
            "joint_pos_rad": [round(float(x), 5) for x in pos],
            "joint_torque_nm": [round(float(x), 3) for x in torque],
            "gripper_pos": round(_clip(grip + rng.normal(0, 0.003), 0, 1), 4),
            "gripper_closed": bool(grip > 0.5),
            "operator_note": note(self.notes) if self.notes.random() < self.note_chance else None,
        }
        items = [Item(ROBOTS, self.device_id, record, t_ms, self.unit)]
        if k % 10 == 0:
            ood = _clip(0.1 + 0.25 * self.unusual + 0.5 * self.miss + rng.normal(0, 0.03), 0, 1)
            items.append(
                Item(
                    TELEMETRY,
                    self.device_id,
                    {
                        "device_id": self.device_id,
                        "model_name": "fieldloop.grasp.kansai-robotics",
                        "model_version": "12",
                        "ts": t_ms,
                        "latency_ms": _lognormal_ms(rng, 22.0, 0.2),
                        "ood_score": round(ood, 4),
                        "disagreement": round(abs(rng.normal(0, 0.01 + 0.2 * ood)), 4),  # gripper width, 0..1
                        "intervention": bool(self.intervened),
                    },
                    t_ms,
                    self.unit,
                )
            )
        return items


@dataclass(frozen=True)
class Quantity:
    """What a plant sensor measures and how it behaves; all values in ``unit``."""

    name: str
    tag: str  # ISA-style tag letters
    unit: str
    base: tuple[float, float]  # operating point, drawn per sensor
    cycle_amp: float  # slow process cycle (hours)
    drift_sigma: float  # slow random drift, clipped to 3 sigma
    noise: float  # measurement noise, clipped to 4 sigma
    normal: tuple[float, float]  # never left without an anomaly
    spike: tuple[float, float]  # anomaly magnitudes
    step: tuple[float, float]


QUANTITIES = (
    Quantity("hot_blast_temperature", "TI", "Cel", (1190, 1210), 18, 2.7, 1.0, (1150, 1250), (45, 90), (25, 45)),
    Quantity("top_gas_pressure", "PI", "kPa", (225, 235), 8, 1.7, 0.8, (205, 255), (25, 50), (12, 25)),
    Quantity("cooling_water_flow", "FI", "m3/h", (790, 810), 20, 4.0, 3.0, (740, 860), (60, 120), (30, 60)),
)
SPIKE_EVERY_S = 240.0  # mean time between spikes per sensor
STEP_EVERY_S = 1500.0  # mean time between step drifts per sensor


class FurnaceSensor(Device):
    """One sensor on ACME Steel's blast furnaces (hot-blast temperature, top-gas pressure or
    cooling-water flow, by ordinal).

    Value = operating point + slow process cycle + clipped Ornstein-Uhlenbeck drift + noise,
    plus anomalies: spikes (1-3 samples) and step drifts (1-10 min). Anomalies are labelled in
    :attr:`Item.truth`, not in the record; quality turns UNCERTAIN or BAD around them.
    """

    kind = "furnace"
    site = "JP-CHB-01"

    def __init__(self, unit: int, ordinal: int, rng: np.random.Generator, rate_hz: float) -> None:
        self.unit, self.rng, self.dt = unit, rng, 1.0 / rate_hz
        self.quantity = QUANTITIES[ordinal % len(QUANTITIES)]
        self.line = f"BF{1 + (ordinal // len(QUANTITIES)) % 2}"
        self.device_id = f"{self.line}-{self.quantity.tag}-{101 + ordinal // len(QUANTITIES)}"
        q = self.quantity
        self.base = rng.uniform(*q.base)
        self.period_s = rng.uniform(2, 6) * 3600
        self.phase = rng.uniform(0, 2 * math.pi)
        self.drift = rng.normal(0, q.drift_sigma)
        self.t = 0.0
        self.spike_left, self.spike_size = 0, 0.0
        self.step_left, self.step_len, self.step_size = 0.0, 0.0, 0.0
        self.since_anomaly = math.inf

    @property
    def contract_ids(self) -> list[str]:
        return [PLANT]

    def count(self, ticks: int) -> int:
        return ticks

    def step(self, k: int, t_ms: int) -> list[Item]:
        rng, q, dt = self.rng, self.quantity, self.dt
        self.t += dt
        decay = math.exp(-dt / 600)  # drift forgets over ~10 minutes
        self.drift = self.drift * decay + q.drift_sigma * math.sqrt(1 - decay**2) * rng.normal()
        self.drift = _clip(self.drift, -3 * q.drift_sigma, 3 * q.drift_sigma)
        value = (
            self.base
            + q.cycle_amp * math.sin(2 * math.pi * self.t / self.period_s + self.phase)
            + self.drift
            + _clip(rng.normal(0, q.noise), -4 * q.noise, 4 * q.noise)
        )
        if self.spike_left == 0 and rng.random() < dt / SPIKE_EVERY_S:
            self.spike_left = int(rng.integers(1, 4))
            self.spike_size = rng.uniform(*q.spike) * float(rng.choice((-1, 1)))
        if self.step_left <= 0 and rng.random() < dt / STEP_EVERY_S:
            self.step_len = self.step_left = rng.uniform(60, 600)
            self.step_size = rng.uniform(*q.step) * float(rng.choice((-1, 1)))
        truth = None
        if self.step_left > 0:
            ramp = min(1.0, (self.step_len - self.step_left) / (0.1 * self.step_len) + 0.1)
            value += self.step_size * ramp
            self.step_left -= dt
            truth = "step-drift"
        if self.spike_left > 0:
            value += self.spike_size
            self.spike_left -= 1
            truth = "spike"
        self.since_anomaly = 0.0 if truth else self.since_anomaly + dt
        if truth == "spike":
            quality = "BAD" if rng.random() < 0.6 else "UNCERTAIN"
        elif truth == "step-drift":
            quality = "UNCERTAIN" if rng.random() < 0.3 else "GOOD"
        elif self.since_anomaly < 30:
            quality = "UNCERTAIN" if rng.random() < 0.1 else "GOOD"
        else:
            quality = "UNCERTAIN" if rng.random() < 0.001 else "GOOD"
        record = {
            "site": self.site,
            "line": self.line,
            "sensor_id": self.device_id,
            "ts": t_ms,
            "value": round(value, 2),
            "unit": q.unit,
            "quality": quality,
        }
        return [Item(PLANT, self.device_id, record, t_ms, self.unit, truth)]


_KINDS: dict[str, type[Device]] = {"vehicle": Vehicle, "robot": RobotArm, "furnace": FurnaceSensor}


# Fleet ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetSpec:
    """What to simulate.

    Attributes:
        devices: number of devices (units); kinds follow :data:`DEVICE_PATTERN`.
        seconds: simulated duration (s of device time, not wall time).
        rate_hz: records per second of each device's main stream.
        seed: makes the whole run, faults included, reproducible.
        start: simulated clock start; default an hour of 2025 picked by the seed.
    """

    devices: int = 10
    seconds: float = 60.0
    rate_hz: float = 10.0
    seed: int = 0
    start: datetime | None = None

    def validate(self) -> None:
        """Raises SimulationError naming the first bad value."""
        if self.devices < 1:
            raise SimulationError(f"devices must be at least 1, got {self.devices}")
        if not 0 < self.rate_hz <= 1000:
            raise SimulationError(f"rate must be in (0, 1000] records/s per device, got {self.rate_hz}")
        if self.seconds <= 0 or self.ticks < 1:
            raise SimulationError(f"{self.seconds} s at {self.rate_hz} records/s is less than one record per device")
        if self.seed < 0:
            raise SimulationError(f"seed must be >= 0, got {self.seed}")
        if self.start is not None and self.start.tzinfo is None:
            raise SimulationError("start needs a UTC offset (e.g. 2025-04-01T09:00:00+09:00)")

    @property
    def ticks(self) -> int:
        return int(self.seconds * self.rate_hz + 1e-9)

    @property
    def start_ms(self) -> int:
        if self.start is not None:
            return int(self.start.timestamp() * 1000)
        return EPOCH_MS + (self.seed % 8760) * 3_600_000


def device_kind(index: int) -> str:
    """The kind of device ``index``: fixed, whatever the fleet size."""
    return DEVICE_PATTERN[index % len(DEVICE_PATTERN)]


def _ordinal(index: int) -> int:
    """How many devices of the same kind come before ``index``."""
    kind = device_kind(index)
    per_round = DEVICE_PATTERN.count(kind)
    return (index // len(DEVICE_PATTERN)) * per_round + DEVICE_PATTERN[: index % len(DEVICE_PATTERN)].count(kind)


class Fleet:
    """The devices of one spec and the stream of their records."""

    def __init__(self, spec: FleetSpec) -> None:
        spec.validate()
        self.spec = spec
        self.devices: list[Device] = []
        self.phase_ms: list[int] = []
        period_ms = 1000 / spec.rate_hz
        for index in range(spec.devices):
            rng = _rng(spec.seed, index)
            self.phase_ms.append(int(rng.integers(max(1, int(period_ms)))))  # devices do not tick in unison
            self.devices.append(_KINDS[device_kind(index)](index, _ordinal(index), rng, spec.rate_hz))

    def mix(self) -> dict[str, int]:
        counts = dict.fromkeys(_KINDS, 0)
        for d in self.devices:
            counts[d.kind] += 1
        return counts

    def contract_ids(self) -> set[str]:
        return {c for d in self.devices for c in d.contract_ids}

    def expected_items(self) -> int:
        return sum(d.count(self.spec.ticks) for d in self.devices)

    def items(self) -> Iterator[Item]:
        """Every device's records, in event-time order (ties: device order)."""
        start, rate = self.spec.start_ms, self.spec.rate_hz
        for k in range(self.spec.ticks):
            tick_ms = start + round(k * 1000 / rate)
            batch: list[Item] = []
            for device, phase in zip(self.devices, self.phase_ms, strict=True):
                batch += device.step(k, tick_ms + phase)
            batch.sort(key=lambda item: item.event_ms)
            yield from batch


# Send layer ----------------------------------------------------------------------------
class Sink(Protocol):
    """Where devices hand their records: the edge SDK (``ingestion.producer.EdgeProducer``).

    ``send`` returns the device's sequence number, or raises a
    :class:`~fieldloop.errors.FieldloopError` (with a ``reason`` when it has one) to refuse
    the record at the device.
    """

    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int: ...

    def pause(self) -> None:
        """Stop sending (the uplink is down); keep accepting records into the spool."""

    def resume(self) -> None:
        """Send again, spool first."""

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything accepted is delivered; False on timeout."""

    def close(self) -> None: ...


class Broker(Protocol):
    """The broker the ``broker-restart`` fault stops and starts."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


@dataclass(frozen=True)
class SentRecord:
    contract_id: str
    device_id: str
    seq: int
    payload: bytes
    paused: bool


class MemorySink:
    """An in-memory :class:`Sink` that admits records by the edge SDK's own rule.

    What :class:`~ingestion.producer.EdgeProducer` refuses, it refuses with the same
    reason and message: both call :func:`ingestion._internal.admission.admit`.
    Sequence numbers count from 1 per device. ``keep=False`` only counts (dry runs).
    """

    def __init__(
        self,
        contracts: Mapping[str, DataContract],
        registry: SchemaRegistry,
        max_record_bytes: int = 1024 * 1024,
        keep: bool = True,
    ) -> None:
        self.contracts, self.registry = contracts, registry
        self.max_record_bytes, self.keep = max_record_bytes, keep
        self.sent: list[SentRecord] = []
        self.seqs: dict[str, int] = {}
        self.paused = False
        self.pauses = self.resumes = 0
        self.closed = False

    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int:
        payload = admit(self.contracts, self.registry, contract_id, device_id, record, self.max_record_bytes).payload
        seq = self.seqs.get(device_id, 0) + 1
        self.seqs[device_id] = seq
        if self.keep:
            self.sent.append(SentRecord(contract_id, device_id, seq, payload, self.paused))
        return seq

    def pause(self) -> None:
        self.paused, self.pauses = True, self.pauses + 1

    def resume(self) -> None:
        self.paused, self.resumes = False, self.resumes + 1

    def flush(self, timeout_s: float) -> bool:
        return not self.paused

    def close(self) -> None:
        self.closed = True


# Report --------------------------------------------------------------------------------
@dataclass
class Counts:
    """generated = accepted + refused + bypassed; raw_sent counts extra wire messages."""

    generated: int = 0
    accepted: int = 0  # taken by the SDK
    refused: int = 0  # refused by the SDK at the device
    bypassed: int = 0  # replaced by junk bytes, which only the raw path can send
    raw_sent: int = 0  # junk and duplicates sent around the SDK

    @property
    def balanced(self) -> bool:
        return self.generated == self.accepted + self.refused + self.bypassed


@dataclass
class SimulationReport:
    """What one run generated, what the SDK took and refused, and what went around it."""

    seed: int
    devices: int
    rate_hz: float
    seconds: float
    start: str
    device_mix: dict[str, int]
    topics: dict[str, str]  # contract id -> topic
    streams: dict[str, Counts] = field(default_factory=dict)  # by contract id
    per_device: dict[str, Counts] = field(default_factory=dict)
    refused_reasons: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> injected/accepted/refused/raw_sent
    duplicates_sent: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)  # ground truth windows, device-clock ts
    flushed: bool = False
    dry_run: bool = False
    wall_seconds: float = 0.0

    @property
    def total(self) -> Counts:
        out = Counts()
        for c in self.streams.values():
            for name in vars(out):
                setattr(out, name, getattr(out, name) + getattr(c, name))
        return out

    @property
    def raw_malformed(self) -> int:
        return sum(m["raw_sent"] for m in self.malformed.values())

    def reconciles(self) -> bool:
        """Every stream and device balances, and raw messages are exactly junk plus duplicates."""
        parts = list(self.streams.values()) + list(self.per_device.values())
        total = self.total
        return (
            all(c.balanced for c in parts)
            and total.generated == sum(c.generated for c in self.per_device.values())
            and total.raw_sent == self.raw_malformed + self.duplicates_sent
            and total.refused == sum(self.refused_reasons.values())
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reconciles": self.reconciles()}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> SimulationReport:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("reconciles", None)
        data["streams"] = {k: Counts(**v) for k, v in data["streams"].items()}
        data["per_device"] = {k: Counts(**v) for k, v in data["per_device"].items()}
        return cls(**data)


# Run -----------------------------------------------------------------------------------
class Simulation:
    """One fleet, one fault plan, sent through a sink.

    Raises:
        SimulationError: the spec is invalid or a stream the fleet writes has no contract.
        FaultSpecError: the faults are inconsistent.
    """

    def __init__(
        self,
        spec: FleetSpec,
        faults: Sequence[FaultSpec],
        contracts: Mapping[str, DataContract],
        registry: SchemaRegistry,
    ) -> None:
        self.spec = spec
        self.fleet = Fleet(spec)
        missing = sorted(self.fleet.contract_ids() - set(contracts))
        if missing:
            raise SimulationError(
                f"the fleet writes under contract(s) {', '.join(missing)}, which are not loaded: "
                "restore them in the contracts directory"
            )
        self.contracts, self.registry = contracts, registry
        self.plan = FaultPlan.build(faults, spec.seed, spec.start_ms, int(spec.seconds * 1000), spec.devices)

    def _schema(self, contract_id: str) -> RegisteredSchema:
        """What the SDK encodes with: the stream's latest schema (duplicates must be byte-identical)."""
        return self.registry.get(self.contracts[contract_id].stream)

    def run(
        self,
        sink: Sink,
        raw: RawSender,
        broker: Broker | None = None,
        on_progress: Callable[[int], None] | None = None,
        flush_timeout_s: float = 30.0,
    ) -> SimulationReport:
        """Generate every record, apply the faults and send; always leaves the sink resumed and the broker up.

        Args:
            sink: the edge SDK (or a fake).
            raw: the path around the SDK for junk and duplicates.
            broker: what ``broker-restart`` stops and starts; None: the fault is planned but not executed.
            on_progress: called with the number of items done, every few hundred items.
            flush_timeout_s: how long to wait for delivery at the end (s).
        """
        t0 = time.monotonic()
        spec, fleet, plan = self.spec, self.fleet, self.plan
        report = SimulationReport(
            seed=spec.seed,
            devices=spec.devices,
            rate_hz=spec.rate_hz,
            seconds=spec.seconds,
            start=datetime.fromtimestamp(spec.start_ms / 1000, UTC).isoformat(),
            device_mix=fleet.mix(),
            topics={c: self.contracts[c].topic for c in sorted(fleet.contract_ids())},
            streams={c: Counts() for c in sorted(fleet.contract_ids())},
            per_device={i: Counts() for d in fleet.devices for i in d.device_ids},
        )
        state = _RunState(sink, raw, broker)
        events = plan.timeline()
        try:
            for n, item in enumerate(fleet.items(), 1):
                while events and events[0].at_ms <= item.event_ms:
                    state.fire(events.pop(0))
                for w in state.active:
                    w.records_during += 1
                self._send(item, state, report)
                if on_progress and n % 500 == 0:
                    on_progress(n)
        finally:
            # close what is open (uplink back, broker up), even after an error; never start new faults
            for event in events:
                if event.window in state.active and event.action in ("resume", "broker-start"):
                    state.fire(event)
        if on_progress:
            on_progress(fleet.expected_items())
        report.flushed = sink.flush(flush_timeout_s) & raw.flush(flush_timeout_s)
        report.refused_reasons = dict(sorted(state.reasons.items()))
        report.malformed = {k: dict(v) for k, v in sorted(state.malformed.items())}
        report.duplicates_sent = state.duplicates
        report.faults = plan.describe({d.unit: d.device_ids for d in fleet.devices})
        report.anomalies = state.close_anomalies()
        report.wall_seconds = round(time.monotonic() - t0, 3)
        return report

    def _send(self, item: Item, state: _RunState, report: SimulationReport) -> None:
        plan = self.plan
        record = item.record
        ts = plan.device_ts(item.unit, record["ts"], item.event_ms)
        if ts != record["ts"]:
            record = {**record, "ts": ts}
        state.track_anomaly(item, ts)
        stream, device = report.streams[item.contract_id], report.per_device[item.device_id]
        for c in (stream, device):
            c.generated += 1
        junk = plan.malformed_kind(item.unit)
        if junk:
            state.malformed.setdefault(junk, {"injected": 0, "accepted": 0, "refused": 0, "raw_sent": 0})
            state.malformed[junk]["injected"] += 1
        if junk in BYTE_KINDS:
            for c in (stream, device):
                c.bypassed += 1
            payload = junk_bytes(junk, record, self._schema(item.contract_id), plan.junk_rng(item.unit))
            state.send_raw(item, state.junk_seq(item.device_id), payload, junk, stream, device)
            return
        if junk:
            record = junk_record(junk, record, self._schema(item.contract_id), item.device_id, plan.junk_rng(item.unit))
        try:
            seq = state.sink.send(item.contract_id, item.device_id, record)
        except FieldloopError as e:
            for c in (stream, device):
                c.refused += 1
            reason = getattr(e, "reason", None) or type(e).__name__
            state.reasons[reason] = state.reasons.get(reason, 0) + 1
            if junk:  # the cloud's quarantine must see what a broken device would push anyway
                state.malformed[junk]["refused"] += 1
                payload = encode(record, self._schema(item.contract_id))
                state.send_raw(item, state.junk_seq(item.device_id), payload, junk, stream, device)
            return
        for c in (stream, device):
            c.accepted += 1
        if junk:
            state.malformed[junk]["accepted"] += 1
        elif plan.duplicate(item.unit):
            state.duplicates += 1
            state.send_raw(item, seq, encode(record, self._schema(item.contract_id)), "duplicate", stream, device)


class _RunState:
    """Mutable state of one run: connections, fault state, tallies."""

    def __init__(self, sink: Sink, raw: RawSender, broker: Broker | None) -> None:
        self.sink, self.raw, self.broker = sink, raw, broker
        self.active: list[Window] = []  # fault windows in force
        self.paused = 0
        self.broker_down = False
        self.deferred: list[tuple[str, str, int, bytes, str]] = []  # raw sends waiting for the uplink
        self.junk_seqs: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.malformed: dict[str, dict[str, int]] = {}
        self.duplicates = 0
        self.open_anomalies: dict[str, dict[str, Any]] = {}
        self.anomalies: list[dict[str, Any]] = []

    def fire(self, event: Event) -> None:
        w = event.window
        if event.action == "pause":
            self.active.append(w)
            self.paused += 1
            if self.paused == 1:
                self.sink.pause()
            w.executed = True
        elif event.action == "resume":
            self.active.remove(w)
            self.paused -= 1
            if self.paused == 0:
                self.sink.resume()
                for args in self.deferred:
                    self.raw.send_raw(*args)
                self.deferred.clear()
        elif event.action == "broker-stop":
            self.active.append(w)
            if self.broker is not None and not self.broker_down:
                self.broker.stop()
                self.broker_down = True
                w.executed = True
        elif event.action == "broker-start":
            self.active.remove(w)
            if self.broker_down and not any(a.kind == "broker-restart" for a in self.active):
                self.broker_down = False
                self.broker.start()

    def junk_seq(self, device_id: str) -> int:
        self.junk_seqs[device_id] = self.junk_seqs.get(device_id, JUNK_SEQ_BASE) + 1
        return self.junk_seqs[device_id]

    def send_raw(self, item: Item, seq: int, payload: bytes, kind: str, *counts: Counts) -> None:
        for c in counts:
            c.raw_sent += 1
        if kind != "duplicate":
            self.malformed[kind]["raw_sent"] += 1
        args = (item.contract_id, item.device_id, seq, payload, kind)
        if self.paused:  # the device is offline: nothing leaves it, not even junk
            self.deferred.append(args)
        else:
            self.raw.send_raw(*args)

    def track_anomaly(self, item: Item, ts: int) -> None:
        current = self.open_anomalies.get(item.device_id)
        if current and current["kind"] != item.truth:
            self.anomalies.append(self.open_anomalies.pop(item.device_id))
            current = None
        if item.truth and current:
            current["end_ts"] = ts
            current["records"] += 1
        elif item.truth:
            self.open_anomalies[item.device_id] = {
                "device_id": item.device_id,
                "kind": item.truth,
                "start_ts": ts,
                "end_ts": ts,
                "records": 1,
            }

    def close_anomalies(self) -> list[dict[str, Any]]:
        out = self.anomalies + list(self.open_anomalies.values())
        return sorted(out, key=lambda a: (a["start_ts"], a["device_id"]))


def worker_audio(site: str, workers: int, start: datetime, seconds: float, seed: int = 0) -> list[dict[str, Any]]:
    """Raw worker-audio features of a plant site, one reading per worker and second.

    Secret data: what the site's edge keeps and releases only as DP aggregates
    (:mod:`refinement.edge`); the edge SDK refuses to send it.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_DEVICE_STREAM + 7,)))
    t0 = int(start.timestamp() * 1000)
    base = rng.normal(82, 6, workers)  # dB: loud shop floor, some near the furnace
    return [
        {
            "site": site,
            "worker_id": f"w-{site}-{w:03d}",
            "ts": t0 + s * 1000,
            "db_level": round(float(base[w] + rng.normal(0, 3)), 2),
            "mfcc": [round(float(x), 3) for x in rng.normal(0, 1, 13)],
        }
        for s in range(int(seconds))
        for w in range(workers)
    ]
