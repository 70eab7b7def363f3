"""Admission: the simulator's in-memory sink refuses exactly what the edge SDK refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldloop.contracts import DataContract, load_contracts
from fieldloop.wire import SchemaRegistry, default_registry
from ingestion import EdgeProducer, EdgeProducerConfig, RefusedError
from ingestion.simulator import Fleet, FleetSpec, Item, MemorySink

MAX_RECORD_BYTES = 4096


@pytest.fixture(scope="module")
def contracts() -> dict[str, DataContract]:
    return load_contracts()


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return default_registry()


@pytest.fixture(scope="module")
def frame() -> Item:
    """A vehicle frame from the simulator, as the SDK would get it."""
    return next(Fleet(FleetSpec(devices=1, seconds=1, rate_hz=1, seed=4)).items())


@pytest.fixture
def sdk(tmp_path: Path, contracts: dict[str, DataContract], registry: SchemaRegistry) -> Iterator[EdgeProducer]:
    """The real SDK, kept offline (paused: it spools, never dials)."""
    config = EdgeProducerConfig(
        bootstrap_servers="127.0.0.1:9",
        spool_dir=tmp_path / "spool",
        compression="gzip",
        max_record_bytes=MAX_RECORD_BYTES,
    )
    producer = EdgeProducer(config, contracts, registry)
    producer.pause()
    yield producer
    producer.close(timeout_s=0)


def refusals(sdk: EdgeProducer, sink: MemorySink, contract_id: str, device_id: str, record: Any) -> list[RefusedError]:
    out = []
    for target in (sdk, sink):
        with pytest.raises(RefusedError) as refused:
            target.send(contract_id, device_id, record)
        out.append(refused.value)
    return out


@pytest.mark.parametrize("device_id", ["", "JT 123", "cam\t1", "x" * 129, "arm-\x00"])
def test_the_memory_sink_refuses_a_bad_device_id_as_the_sdk_does(
    device_id: str, sdk: EdgeProducer, frame: Item, contracts: dict[str, DataContract], registry: SchemaRegistry
) -> None:
    sink = MemorySink(contracts, registry)
    by_sdk, by_sink = refusals(sdk, sink, frame.contract_id, device_id, frame.record)
    assert by_sdk.reason == by_sink.reason == "bad-device"
    assert str(by_sink) == str(by_sdk)
    assert sdk.stats.accepted == 0 and sdk.stats.refused == {"bad-device": 1}
    assert sink.sent == [] and sink.seqs == {}, "a refused record takes no sequence number"


@pytest.mark.parametrize(
    ("reason", "contract_id", "change"),
    [
        ("no-contract", "vehicle-frames-nowhere", {}),
        ("raw-secret", "worker-audio-acme-steel", {}),
        ("non-finite", None, {"speed_mps": float("nan")}),
        ("schema-mismatch", None, {"intervention": 1}),
        ("oversized", None, {"driver_note": "#" * MAX_RECORD_BYTES}),
    ],
)
def test_every_refusal_has_the_same_reason_and_message_in_both(
    reason: str,
    contract_id: str | None,
    change: dict[str, Any],
    sdk: EdgeProducer,
    frame: Item,
    contracts: dict[str, DataContract],
    registry: SchemaRegistry,
) -> None:
    sink = MemorySink(contracts, registry, max_record_bytes=MAX_RECORD_BYTES)
    by_sdk, by_sink = refusals(sdk, sink, contract_id or frame.contract_id, frame.device_id, {**frame.record, **change})
    assert by_sdk.reason == by_sink.reason == reason
    assert str(by_sink) == str(by_sdk)
    assert sink.send(frame.contract_id, frame.device_id, frame.record) == sdk.send(
        frame.contract_id, frame.device_id, frame.record
    ), "after a refusal both hand out the device's first sequence number"
