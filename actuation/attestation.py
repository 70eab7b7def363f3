"""Guardrail attestations: an in-toto Statement v1 in a DSSE envelope, signed with Ed25519.

:func:`actuation.signing.attest` (cloud side) makes one: the statement's subjects are the
files a device will run, by sha256, its predicate the :class:`~actuation.contract.Verdict`.
:func:`verify` (cloud side at publish, and on the device before anything is loaded) checks, in this order, the
signature against the keys it is given, the statement's types, that the subjects are exactly
the files at hand, and returns the verdict; whether a failing verdict is acceptable is the
caller's decision (:func:`verify_pass` refuses it).

Verification needs securesystemslib and pydantic only, so this module runs on a device with
the edge extra; building the statement uses the ``in-toto-attestation`` package, cloud side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actuation.contract import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, Verdict
from actuation.errors import AttestationError


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_statement(envelope_bytes: bytes) -> tuple[Any, dict[str, Any]]:
    """The envelope and its parsed statement, unverified (for display and for :func:`verify`)."""
    from securesystemslib.dsse import Envelope

    try:
        envelope = Envelope.from_dict(json.loads(envelope_bytes))
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # binascii.Error is a ValueError
        raise AttestationError(f"the attestation is not a DSSE envelope: {e}") from e
    if envelope.payload_type != PAYLOAD_TYPE:
        raise AttestationError(f"the envelope's payload type is {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}")
    try:
        statement = json.loads(envelope.payload)
    except ValueError as e:
        raise AttestationError(f"the attestation's payload is not JSON: {e}") from e
    return envelope, statement


def verify(envelope_bytes: bytes, keys: Sequence[Any], subjects: Mapping[str, str]) -> Verdict:
    """The verdict of an attestation that verifies; :class:`AttestationError` naming why otherwise.

    Args:
        envelope_bytes: the DSSE envelope as JSON.
        keys: the trusted guardrail public keys (securesystemslib ``Key``); one valid signature
            by any of them is required.
        subjects: the files at hand, name -> sha256 hex; the statement must name exactly these.
    """
    from securesystemslib.exceptions import VerificationError

    envelope, statement = read_statement(envelope_bytes)
    if not keys:
        raise AttestationError("no trusted guardrail key to verify the attestation with")
    try:
        envelope.verify(list(keys), threshold=1)
    except VerificationError as e:
        signers = ", ".join(k[:12] for k in envelope.signatures) or "none"
        raise AttestationError(
            f"the attestation's signature does not verify with a trusted guardrail key "
            f"(signed by key id {signers}): {e}"
        ) from e
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise AttestationError(
            f"the attestation is a {statement.get('_type')!r} / {statement.get('predicateType')!r}, "
            f"not a fieldloop guardrail verdict ({PREDICATE_TYPE})"
        )
    named = {s.get("name"): (s.get("digest") or {}).get("sha256") for s in statement.get("subject", [])}
    if named != dict(subjects):
        raise AttestationError(
            f"the attestation is about other files: it names {named}, the files here are {dict(subjects)}"
        )
    try:
        return Verdict.model_validate(statement.get("predicate"))
    except ValueError as e:
        raise AttestationError(f"the attestation's predicate is not a valid verdict: {e}") from e


def verify_pass(envelope_bytes: bytes, keys: Sequence[Any], subjects: Mapping[str, str]) -> Verdict:
    """:func:`verify`, and refuse a verdict that is not ``pass``, naming the failed checks."""
    verdict = verify(envelope_bytes, keys, subjects)
    if verdict.verdict != "pass":
        failed = "; ".join(f"{c.name} = {c.value} (limit {c.op} {c.limit})" for c in verdict.failed) or "none named"
        raise AttestationError(
            f"the guardrails failed {verdict.model} version {verdict.version}: {failed}; it may not be released"
        )
    return verdict
