"""A simulated car: longitudinal and lateral dynamics, perception counts, camera and model telemetry."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from ingestion.simulator.device import NOTE_EVERY_S, Device, Item, clip, jst_hour, lognormal_ms
from ingestion.simulator.layout import FleetLayout
from ingestion.simulator.notes import note
from ingestion.simulator.vin import make_vin

_H = 0.1  # s, longest integration step of the vehicle model
M_PER_DEG_LAT = 111_320.0
A_MIN, A_MAX = -6.0, 3.0  # m/s^2: emergency braking .. brisk acceleration
WHEELBASE_M = 2.7
STEERING_RATIO = 15.0
MAX_STEER_RAD = math.radians(35)
A_LAT_MAX = 3.0  # m/s^2, what drivers accept in a turn
SPEED_LIMITS = (8.3, 11.1, 13.9, 16.7, 16.7, 22.2)  # m/s (30-80 km/h; expressway rarer)


def perception_rates(distance_km: float, speed_mps: float) -> tuple[float, float, float]:
    """Mean tracked vehicles, pedestrians and cyclists: denser downtown and in slow traffic."""
    slow = speed_mps < 5
    vehicles = 1.5 + 10 * math.exp(-distance_km / 6) * (1.4 if slow else 1.0)
    pedestrians = 0.3 + 9 * math.exp(-distance_km / 3) * (1.5 if slow else 0.6)
    cyclists = 0.2 + 2.5 * math.exp(-distance_km / 5)
    return vehicles, pedestrians, cyclists


class Vehicle(Device):
    """A car driving around its group's city, with its model's telemetry and (if its group has one) a camera.

    Longitudinal: speed follows a target (speed limits, traffic stops, rare emergency
    braking) with bounded acceleration and jerk. Lateral: yaw rate from lane wander,
    90-degree turns after stops and, far from the centre, a pull back towards it; heading
    integrates yaw rate, position integrates speed along heading, steering follows the
    bicycle model. Perception counts are Poisson, denser downtown.
    """

    kind = "vehicle"

    def __init__(self, unit: int, ordinal: int, rng: np.random.Generator, rate_hz: float, layout: FleetLayout) -> None:
        self.unit, self.rng, self.dt = unit, rng, 1.0 / rate_hz
        self.group = group = layout.vehicle.group(ordinal)
        self.city, self.contract_id = group.city, group.frames_contract
        self.centre = layout.vehicle.cities[self.city]
        # a group with one maker draws nothing: every later draw, and so the physics, stays put
        wmi = group.wmi[0] if len(group.wmi) == 1 else group.wmi[int(rng.integers(len(group.wmi)))]
        self.device_id = self.vin = make_vin(rng, wmi)
        self.driver_id = f"{group.driver_id_prefix}{int(rng.integers(10_000, 100_000))}"
        self.camera_id = f"cam-{self.vin}-front" if group.camera_contract else None
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
        group = self.group
        return [group.frames_contract, group.telemetry_contract] + ([group.camera_contract] if self.camera_id else [])

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
            a_des, jerk = clip(0.5 * (self.target - self.v), -2.5, 2.0), 4.0
        self.a = clip(self.a + clip(a_des - self.a, -jerk * h, jerk * h), A_MIN, A_MAX)
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
            pull = clip((self.distance_m - 8000) / 4000, 0, 1)
            r = self.wander - 0.03 * pull * clip(self._home_error(), -1, 1)
            r = clip(r, -r_max, r_max)
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
            "accel_mps2": round(clip(accel + rng.normal(0, 0.03), A_MIN, A_MAX), 3),
            "steering_deg": round(math.degrees(self.steer_rad) * STEERING_RATIO + rng.normal(0, 0.3), 2),
            "brake": round(brake, 3),
            "yaw_rate_dps": round(math.degrees(self.yaw) + rng.normal(0, 0.05), 3),
            "perception": dict(zip(("vehicles", "pedestrians", "cyclists"), self.counts, strict=True)),
            "intervention": self.takeover_left > 0,
            "driver_note": note(self.notes) if self.notes.random() < self.note_chance else None,
        }
        group = self.group
        items = [Item(group.frames_contract, self.vin, frame, t_ms, self.unit)]
        if self.camera_id and k % 2 == 0:
            items.append(Item(group.camera_contract, self.camera_id, self._camera(t_ms), t_ms, self.unit))
        if k % 10 == 0:
            items.append(Item(group.telemetry_contract, self.vin, self._telemetry(t_ms, frame), t_ms, self.unit))
        return items

    def _camera(self, t_ms: int) -> dict[str, Any]:
        rng = self.rng
        self.frame_no += max(1, round(30 * 2 * self.dt))  # 30 fps sensor, metadata every 2nd vehicle frame
        night = not 6 <= jst_hour(t_ms) < 18
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
        night = not 6 <= jst_hour(t_ms) < 18
        crowded = frame["perception"]["pedestrians"] / 10
        ood = (
            0.08
            + 0.2 * night
            + 0.15 * min(crowded, 1.5)
            + 0.35 * self.since_telemetry["emergency"]
            + 0.1 * (self.v > 20)
            + rng.normal(0, 0.03)
        )
        ood = clip(ood, 0, 1)
        record = {
            "device_id": self.vin,
            "model_name": self.group.model_name,
            "model_version": self.model_version,
            "ts": t_ms,
            "latency_ms": lognormal_ms(rng, 12.0, 0.2),
            "ood_score": round(ood, 4),
            "disagreement": round(abs(rng.normal(0, 0.05 + 0.8 * ood)), 4),  # m/s^2, model vs fallback
            "intervention": self.since_telemetry["intervention"],
            "update_state": None,  # a simulated car runs no edge agent: no fleet, no shadow (telemetry.v2, v3)
            "fleet": None,
            "shadow_version": None,
            "shadow_disagreement": None,
            "shadow_ood_score": None,
            "error": None,
        }
        self.since_telemetry = {"intervention": False, "emergency": False}
        return record
