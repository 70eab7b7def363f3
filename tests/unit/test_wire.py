"""Avro single-object encoding: byte-compatible with Java Avro, and every bad payload has a reason."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fieldloop.wire import HEADER_LEN, SchemaRegistry, WireError, decode, default_registry, encode, writer_of

TELEMETRY = {
    "device_id": "d1",
    "model_name": "m",
    "model_version": "3",
    "ts": 1700000000000,
    "latency_ms": 1.5,
    "ood_score": 0.25,
    "disagreement": 0.0,
    "intervention": True,
}
# Java Avro 1.12.1 BinaryMessageEncoder output for TELEMETRY with telemetry.v1.avsc
JAVA_BYTES = bytes.fromhex(
    "c301f50d78fdfe228f78046431026d023380a0abfef962000000000000f83f000000000000d03f000000000000000001"
)
FRAME = {
    "vin": "JT123456789012345",
    "driver_id": "drv-7",
    "ts": 1700000000100,
    "lat": 35.68,
    "lon": 139.76,
    "speed_mps": 12.5,
    "accel_mps2": -0.4,
    "steering_deg": 3.0,
    "brake": 0.1,
    "yaw_rate_dps": 0.5,
    "perception": {"vehicles": 3, "pedestrians": 1, "cyclists": 0},
    "intervention": False,
}


def as_read(record: dict[str, Any]) -> dict[str, Any]:
    """Readers return timestamp-millis as aware UTC datetimes."""
    return {**record, "ts": datetime.fromtimestamp(record["ts"] / 1000, UTC)}


@pytest.fixture(scope="module")
def evolving(tmp_path_factory: pytest.TempPathFactory) -> SchemaRegistry:
    """The shipped schemas plus a test-only v3 of vehicle_frames (gear, odometer)."""
    folder = tmp_path_factory.mktemp("avro")
    for schema in (Path(__file__).parents[2] / "fieldloop" / "schemas" / "avro").glob("*.avsc"):
        shutil.copy(schema, folder)
    shutil.copy(Path(__file__).parent / "data" / "avro" / "vehicle_frames.v3.avsc", folder)
    return SchemaRegistry.from_dir(folder)


def test_every_stream_has_a_schema() -> None:
    assert default_registry().streams == [
        "camera_meta",
        "hard_cases",
        "plant_sensors",
        "robot_joints",
        "telemetry",
        "vehicle_frames",
        "worker_audio",
        "worker_audio_dp",
    ]


def test_bytes_match_java_avro() -> None:
    schema = default_registry().get("telemetry", 1)
    assert encode(TELEMETRY, schema) == JAVA_BYTES
    assert decode(JAVA_BYTES, default_registry()) == as_read(TELEMETRY)


def test_v2_writer_read_by_v1_reader_and_back(evolving: SchemaRegistry) -> None:
    v1, v2 = evolving.get("vehicle_frames", 1), evolving.get("vehicle_frames", 3)
    assert v1.fingerprint != v2.fingerprint
    new = encode({**FRAME, "gear": 4, "odometer_km": 12034.5}, v2)
    assert writer_of(new, evolving) == v2
    assert decode(new, evolving, reader=v1) == as_read(FRAME)  # new fields skipped
    old = encode(FRAME, v1)
    assert decode(old, evolving, reader=v2) == {**as_read(FRAME), "gear": 0, "odometer_km": None}  # defaults filled


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc3\x01\x00", "truncated"),
        (b'{"vin": "JT1"}', "bad-magic"),
        (b"\xc3\x01" + bytes(8) + b"\x02", "unknown-fingerprint"),
    ],
)
def test_bad_headers_have_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as excinfo:
        decode(payload, default_registry())
    assert excinfo.value.reason == reason


def test_truncated_body_and_trailing_bytes() -> None:
    good = encode(FRAME, default_registry().get("vehicle_frames"))
    with pytest.raises(WireError) as excinfo:
        decode(good[: HEADER_LEN + 10], default_registry())
    assert excinfo.value.reason == "undecodable"
    with pytest.raises(WireError) as excinfo:
        decode(good + b"\x00\x00", default_registry())
    assert excinfo.value.reason == "trailing-bytes"


def test_wrong_types_are_refused_at_encode() -> None:
    with pytest.raises(WireError) as excinfo:
        encode({**FRAME, "speed_mps": "fast"}, default_registry().get("vehicle_frames"))
    assert excinfo.value.reason == "schema-mismatch"
    with pytest.raises(WireError):
        encode({k: v for k, v in FRAME.items() if k != "vin"}, default_registry().get("vehicle_frames"))
