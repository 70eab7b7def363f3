"""What a device reports: one telemetry record per inference, and a window's summary.

Each inference becomes a ``fleet-telemetry`` record (``telemetry.v3``): device and fleet, the
actuated model and version, time, latency, OOD score, disagreement between the model and what
was commanded, whether the monitor took over, the agent's update state (``up-to-date``,
``updated``, ``no-release``, ``offline``, ``refused:<reason>``, ``error``), what failed in this
inference (``error``: ``bad-frame``, ``inference``, ``shadow``, else null) and, while the device
runs a rollout's candidate in shadow, the shadow's version, its disagreement with the actuated
model (|shadow - actuated| on the first actuated output, raw outputs before the monitor) and
its OOD score (null without a shadow). Records go through the edge SDK's spool
(:class:`ingestion.EdgeProducer`), so an outage loses nothing. With no model the record names
the model ``fallback`` (version ``none``): the fleet sees devices running blind.

Per-inference records, not window summaries, go to Kafka: gold's hourly table aggregates them
(latency percentiles, OOD and intervention rates) as it does every device's, and a summary
record would be counted there as an inference. :class:`TelemetryWindow` keeps the window's
figures on the device (inferences, latency p50/p99, OOD rate, interventions by reason,
errors, and the shadow's disagreement p95 and rate) for ``status.json`` and ``fieldloop agent run``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

CONTRACT = "fleet-telemetry"
NO_MODEL = ("fallback", "none")  # model_name, model_version of a device without a model


class TelemetrySink(Protocol):
    """Where telemetry records go: the edge SDK, or a list in tests."""

    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int: ...

    def flush(self, timeout_s: float = 30.0) -> bool: ...

    def close(self, timeout_s: float = 10.0) -> None: ...


@dataclass
class TelemetryWindow:
    """Figures since the window started (see the module docstring)."""

    latencies_ms: list[float] = field(default_factory=list)
    ood_scores: list[float] = field(default_factory=list)
    interventions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    ood_threshold: float = 1.0
    shadow_disagreements: list[float] = field(default_factory=list)
    shadow_ood_scores: list[float] = field(default_factory=list)
    shadow_ood_threshold: float = 1.0
    disagreement_threshold: float | None = None  # |shadow - actuated| above which an inference disagrees

    def fresh(self) -> TelemetryWindow:
        """An empty window with the same thresholds (the next one)."""
        return TelemetryWindow(
            ood_threshold=self.ood_threshold,
            shadow_ood_threshold=self.shadow_ood_threshold,
            disagreement_threshold=self.disagreement_threshold,
        )

    def record(self, latency_ms: float, ood_score: float, reason: str | None) -> None:
        self.latencies_ms.append(latency_ms)
        self.ood_scores.append(ood_score)
        if reason:
            self.interventions[reason] += 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def shadow(self, disagreement: float, ood_score: float | None) -> None:
        """One inference the shadow ran on, beside the actuated model."""
        self.shadow_disagreements.append(disagreement)
        if ood_score is not None:
            self.shadow_ood_scores.append(ood_score)

    def summary(self) -> dict[str, Any]:
        n = len(self.latencies_ms)
        lat = np.asarray(self.latencies_ms) if n else None
        return {
            "inferences": n,
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat is not None else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat is not None else None,
            "ood_rate": (sum(s >= self.ood_threshold for s in self.ood_scores) / n) if n else None,
            "interventions": sum(self.interventions.values()),
            "interventions_by_reason": dict(self.interventions),
            "errors": dict(self.errors),
            "shadow": self._shadow_summary(),
        }

    def _shadow_summary(self) -> dict[str, Any] | None:
        """The shadow's figures (None: it ran on no inference of this window)."""
        n = len(self.shadow_disagreements)
        if not n:
            return None
        d = np.asarray(self.shadow_disagreements)
        threshold = self.disagreement_threshold
        oods = self.shadow_ood_scores
        return {
            "inferences": n,
            "disagreement_p95": float(np.percentile(d, 95)),
            "disagreement_max": float(d.max()),
            "disagreement_threshold": threshold,
            "disagreement_rate": float((d > threshold).mean()) if threshold is not None else None,
            "ood_rate": (sum(s >= self.shadow_ood_threshold for s in oods) / len(oods)) if oods else None,
        }


def device_contracts(tenant: str | None) -> dict[str, Any]:
    """The data contracts a device of ``tenant`` may send on: telemetry and its own tenant's hard
    cases (the public ones without a tenant), so the SDK refuses any other tenant's stream."""
    from actuation.agent.campaigns import hard_case_contract
    from fieldloop.contracts import load_contracts

    allowed = {CONTRACT, hard_case_contract(tenant)}
    return {k: v for k, v in load_contracts().items() if k in allowed}


def producer(bootstrap: str, spool: Path, tenant: str | None = None, **kafka: Any) -> TelemetrySink:
    """The edge SDK's producer for a device of ``tenant``, spooling under ``spool``: its
    telemetry and its tenant's hard cases (:func:`device_contracts`)."""
    from ingestion import EdgeProducer, EdgeProducerConfig

    config = EdgeProducerConfig(bootstrap_servers=bootstrap, spool_dir=spool, client_id="fieldloop-agent", **kafka)
    return EdgeProducer(config, device_contracts(tenant))


class MemorySink:
    """Telemetry kept in a list (tests, and ``--no-telemetry`` runs)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int:
        self.records.append((contract_id, device_id, dict(record)))
        return len(self.records)

    def flush(self, timeout_s: float = 30.0) -> bool:
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        pass
