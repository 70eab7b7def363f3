"""The safety-events watcher's filter: which telemetry records raise the asset, and what its event says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fieldloop.assets import safety_event
from fieldloop.wire import default_registry, encode
from tests.fleet_rows import telemetry_record

TS = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


class Message:
    """The one method of a confluent-kafka message the filter reads."""

    def __init__(self, payload: bytes | None) -> None:
        self.payload = payload

    def value(self) -> bytes | None:
        return self.payload


def telemetry(**changes: Any) -> bytes:
    return encode(telemetry_record("car-0007", TS, **changes), default_registry().get("telemetry", 3))


def test_an_intervention_is_a_safety_event_naming_fleet_version_and_reason_but_not_the_device() -> None:
    event = safety_event(Message(telemetry(intervention=True)))
    assert event == {
        "reason": "intervention",
        "error": None,
        "fleet": "public-cars",
        "model_name": "fieldloop.vehicle-longitudinal",
        "model_version": "3",
        "ts_ms": int(TS.timestamp() * 1000),
    }
    assert "car-0007" not in repr(event)  # asset events are shown to every Airflow user


def test_a_failed_inference_is_a_safety_event() -> None:
    assert safety_event(Message(telemetry(error="inference")))["reason"] == "error"


@pytest.mark.parametrize(
    "payload",
    [telemetry(), telemetry(ood_score=0.7, disagreement=0.4), b"", None, b"\xc3\x01garbage", b"not avro"],
    ids=["normal", "odd-but-not-overruled", "empty", "tombstone", "unknown-fingerprint", "bad-magic"],
)
def test_ordinary_records_and_undecodable_payloads_raise_nothing(payload: bytes | None) -> None:
    assert safety_event(Message(payload)) is None
