"""A simulated blast-furnace sensor: process cycle, drift, noise, and labelled anomalies."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ingestion.simulator.device import Device, Item, clip
from ingestion.simulator.layout import FleetLayout


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
    """One sensor on the blast furnaces of the site the fleet file names (hot-blast temperature,
    top-gas pressure or cooling-water flow, by ordinal).

    Value = operating point + slow process cycle + clipped Ornstein-Uhlenbeck drift + noise,
    plus anomalies: spikes (1-3 samples) and step drifts (1-10 min). Anomalies are labelled in
    :attr:`Item.truth`, not in the record; quality turns UNCERTAIN or BAD around them.
    """

    kind = "furnace"

    def __init__(self, unit: int, ordinal: int, rng: np.random.Generator, rate_hz: float, layout: FleetLayout) -> None:
        self.unit, self.rng, self.dt = unit, rng, 1.0 / rate_hz
        self.contract_id, self.site = layout.furnace.sensors_contract, layout.furnace.site
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
        return [self.contract_id]

    def count(self, ticks: int) -> int:
        return ticks

    def step(self, k: int, t_ms: int) -> list[Item]:
        rng, q, dt = self.rng, self.quantity, self.dt
        self.t += dt
        decay = math.exp(-dt / 600)  # drift forgets over ~10 minutes
        self.drift = self.drift * decay + q.drift_sigma * math.sqrt(1 - decay**2) * rng.normal()
        self.drift = clip(self.drift, -3 * q.drift_sigma, 3 * q.drift_sigma)
        value = (
            self.base
            + q.cycle_amp * math.sin(2 * math.pi * self.t / self.period_s + self.phase)
            + self.drift
            + clip(rng.normal(0, q.noise), -4 * q.noise, 4 * q.noise)
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
        return [Item(self.contract_id, self.device_id, record, t_ms, self.unit, truth)]
