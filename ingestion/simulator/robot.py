"""A simulated 6-joint robot arm doing pick-and-place: minimum-jerk motion, rigid-body torques, grasps."""

from __future__ import annotations

import math
import random

import numpy as np

from ingestion.simulator.device import NOTE_EVERY_S, Device, Item, clip, jst_hour, lognormal_ms
from ingestion.simulator.layout import FleetLayout
from ingestion.simulator.notes import note

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
    """A 6-joint arm doing pick-and-place cycles in the robot cell the fleet file names.

    Each cycle visits home, above the (slightly varying) pick pose, the pick pose, grasps,
    lifts, moves to the place pose, releases and returns, every segment a minimum-jerk
    profile. Torque = inertia * acceleration + gravity on shoulder and elbow (plus the
    part while held) + friction + noise. About 2% of grasps miss: the gripper closes fully
    and the operator may intervene.
    """

    kind = "robot"

    def __init__(self, unit: int, ordinal: int, rng: np.random.Generator, rate_hz: float, layout: FleetLayout) -> None:
        self.unit, self.rng, self.dt = unit, rng, 1.0 / rate_hz
        self.cell = layout.robot
        self.device_id = f"{self.cell.device_id_prefix}{ordinal + 1:03d}"
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
        return [self.cell.joints_contract, self.cell.telemetry_contract]

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
            "operator_id": self.operators[int(((jst_hour(t_ms) - 6) % 24) // 8)],
            "ts": t_ms,
            "joint_pos_rad": [round(float(x), 5) for x in pos],
            "joint_torque_nm": [round(float(x), 3) for x in torque],
            "gripper_pos": round(clip(grip + rng.normal(0, 0.003), 0, 1), 4),
            "gripper_closed": bool(grip > 0.5),
            "operator_note": note(self.notes) if self.notes.random() < self.note_chance else None,
        }
        items = [Item(self.cell.joints_contract, self.device_id, record, t_ms, self.unit)]
        if k % 10 == 0:
            ood = clip(0.1 + 0.25 * self.unusual + 0.5 * self.miss + rng.normal(0, 0.03), 0, 1)
            items.append(
                Item(
                    self.cell.telemetry_contract,
                    self.device_id,
                    {
                        "device_id": self.device_id,
                        "model_name": self.cell.model_name,
                        "model_version": self.cell.model_version,
                        "ts": t_ms,
                        "latency_ms": lognormal_ms(rng, 22.0, 0.2),
                        "ood_score": round(ood, 4),
                        "disagreement": round(abs(rng.normal(0, 0.01 + 0.2 * ood)), 4),  # gripper width, 0..1
                        "intervention": bool(self.intervened),
                        "update_state": None,  # a simulated robot runs no edge agent (telemetry.v2, v3)
                        "fleet": None,
                        "shadow_version": None,
                        "shadow_disagreement": None,
                        "shadow_ood_score": None,
                        "error": None,
                    },
                    t_ms,
                    self.unit,
                )
            )
        return items
