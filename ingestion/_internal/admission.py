"""Admission: whether a record may leave the device, and its bytes on the wire if so.

:func:`admit` is the one rule both the edge SDK (:class:`~ingestion.producer.EdgeProducer`)
and the simulator's in-memory stand-in (:class:`~ingestion.simulator.sink.MemorySink`)
apply, so a dry run refuses exactly what a device would. In order: the stream needs a
data contract, secret data never leaves raw, the device id must be usable as a Kafka
key, the stream needs a registered schema, no value may be NaN or infinite, the record
must match the schema strictly, and its encoding must fit the size limit. Each refusal
is a :class:`~ingestion.errors.RefusedError` whose ``reason`` names the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from fastavro._validate_common import ValidationError as AvroValidationError
from fastavro.validation import validate as avro_validate

from fieldloop.classes import DataClass
from fieldloop.contracts import DataContract
from fieldloop.wire import SchemaRegistry, WireError, encode
from ingestion.errors import RefusedError

REFUSAL_REASONS = ("no-contract", "raw-secret", "schema-mismatch", "non-finite", "oversized", "bad-device")


class Admitted(NamedTuple):
    """A record that may leave the device.

    Attributes:
        contract: the data contract governing its stream.
        payload: the record encoded with the stream's latest schema (Avro single-object).
    """

    contract: DataContract
    payload: bytes


def admit(
    contracts: Mapping[str, DataContract],
    registry: SchemaRegistry,
    contract_id: str,
    device_id: str,
    record: Mapping[str, Any],
    max_record_bytes: int,
) -> Admitted:
    """Check one record against its stream's contract and schema, and encode it.

    Args:
        contracts: the data contracts the device knows, by id.
        registry: the Avro schemas records are encoded with.
        contract_id: id of the stream's data contract.
        device_id: the sending device (the record's Kafka key).
        record: the record, as the stream's latest Avro schema expects it.
        max_record_bytes: the largest encoding accepted (bytes).

    Returns:
        The contract and the encoded record.

    Raises:
        RefusedError: the record may not or cannot leave the device; ``reason`` is one of
            :data:`REFUSAL_REASONS`. Messages never echo record values (personal data).
    """
    contract = contracts.get(contract_id)
    if contract is None:
        raise RefusedError(
            "no-contract",
            f"no data contract '{contract_id}' on this device: ingestion refuses "
            "streams without one (known: " + ", ".join(sorted(contracts)) + ")",
        )
    if contract.data_class is DataClass.SECRET:
        raise RefusedError(
            "raw-secret",
            f"contract '{contract_id}' is secret: raw secret data never leaves the site; "
            "send its DP aggregate or synthetic derivative under a derived contract",
        )
    if (
        not isinstance(device_id, str)
        or not 0 < len(device_id) <= 128
        or not device_id.isprintable()
        or any(c.isspace() for c in device_id)
    ):
        raise RefusedError("bad-device", "device_id must be 1-128 printable characters without spaces")
    try:
        schema = registry.get(contract.stream)
    except WireError as e:
        raise RefusedError("no-contract", f"contract '{contract_id}': {e}") from e
    bad = _non_finite_path(record)
    if bad:
        raise RefusedError(
            "non-finite",
            f"{contract.stream}: field {bad} is NaN or infinite; "
            "refused because it poisons aggregates downstream: fix or omit the reading",
        )
    try:
        # fastavro's writer silently coerces (1.5 -> int 1, 1 -> boolean true); validate strictly first
        avro_validate(record, schema.compiled, raise_errors=True, strict=True)
        payload = encode(record, schema)
    except AvroValidationError as e:
        raise RefusedError(
            "schema-mismatch", f"record does not match {schema.stream}.v{schema.version}: {_describe_invalid(e)}"
        ) from e
    except WireError as e:
        raise RefusedError("schema-mismatch", str(e)) from e
    if len(payload) > max_record_bytes:
        raise RefusedError(
            "oversized",
            f"{contract.stream} record is {len(payload)} bytes encoded, over the "
            f"{max_record_bytes}-byte limit (max_record_bytes): split it",
        )
    return Admitted(contract, payload)


def _non_finite_path(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinite float inside ``value``, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "record")
    if isinstance(value, Mapping):
        items: Any = value.items()
        name = (lambda k: f"{path}.{k}") if path else str
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
        name = lambda i: f"{path}[{i}]"  # noqa: E731
    else:
        return None
    for k, v in items:
        kind = type(v)
        # this runs for every record: look at scalars inline, recurse only into containers
        if kind is float:
            if not math.isfinite(v):
                return name(k)
        elif kind is not str and kind is not int and kind is not bool:
            found = _non_finite_path(v, name(k))
            if found:
                return found
    return None


def _describe_invalid(error: AvroValidationError) -> str:
    """Which fields are wrong and what they should be, without echoing values (personal data)."""
    parts = []
    for item in error.errors:
        expected = item.schema
        if isinstance(expected, dict):
            expected = expected.get("name") or expected.get("type")
        parts.append(f"{item.field or 'record'}: expected {expected}, got {type(item.datum).__name__}")
    return "; ".join(parts)
