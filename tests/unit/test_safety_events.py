"""The field watchers' filters: which records raise the safety-events and hard-cases assets, and their events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fieldloop.assets import hard_case, safety_event
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


def hard_case_record(**changes: Any) -> dict[str, Any]:
    return {
        "device_id": "car-0007",
        "fleet": "public-cars",
        "campaign_id": "public-cars-release-v1",
        "trigger_kind": "ood",
        "trigger": "ood_score>0.5",
        "model_name": "fieldloop.vehicle-longitudinal",
        "model_version": "1",
        "ts": TS,
        "signals": ["speed_mps", "lead_gap_m"],
        "frames": [[20.0, 31.5], [20.5, None]],
        "trigger_index": 1,
        "output_names": ["accel_mps2"],
        "outputs": [0.4],
        "ood_score": 0.8,
        "disagreement": None,
        "intervention": False,
        "reason": None,
    } | changes


def test_a_hard_case_raises_the_asset_naming_fleet_campaign_trigger_and_version_but_not_device_or_window() -> None:
    event = hard_case(Message(encode(hard_case_record(), default_registry().get("hard_cases", 1))))
    assert event == {
        "fleet": "public-cars",
        "campaign_id": "public-cars-release-v1",
        "trigger_kind": "ood",
        "model_name": "fieldloop.vehicle-longitudinal",
        "model_version": "1",
        "ts_ms": int(TS.timestamp() * 1000),
    }
    assert "car-0007" not in repr(event) and "31.5" not in repr(event)  # restricted windows stay in the lake


@pytest.mark.parametrize(
    "payload", [telemetry(intervention=True), b"", None, b"not avro"], ids=["telemetry", "empty", "tombstone", "bad"]
)
def test_what_is_no_hard_case_raises_nothing(payload: bytes | None) -> None:
    assert hard_case(Message(payload)) is None
