"""Errors of the edge agent: every one is an :class:`~actuation.errors.AgentError`.

A refused update names the step that refused it (``reason``: a short code a device reports
in its telemetry and status) and says what to do; an unreachable repository or expired metadata
(:class:`OfflineError`) is retriable: the device keeps serving what it runs.
"""

from __future__ import annotations

from actuation.errors import AgentError

# Refusal codes, in the order the update steps check them.
REFUSAL_REASONS = (
    "metadata",  # TUF: a signature, version, expiry or length check failed
    "target",  # TUF: a downloaded file's length or hash is not the signed one
    "pointer",  # the release pointer is unreadable or names another fleet
    "attestation",  # the attestation does not verify, is about other files, or failed
    "verdict",  # a verified verdict that does not cover this model, version or fleet
    "tenant",  # a tenant's model for a device of another tenant
    "manifest",  # the manifest is unreadable or describes another file
    "self-test",  # the model loaded but gave other outputs than its manifest's
    "campaigns",  # the fleet's signed campaigns list is not a valid one
)


class DeviceError(AgentError):
    """The device directory is missing, incomplete or was provisioned for something else."""


class UpdateRefusedError(AgentError):
    """An update was refused; the active model stays. ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REFUSAL_REASONS, reason
        super().__init__(message)
        self.reason = reason


class OfflineError(AgentError):
    """No verified view of the repository this cycle: it could not be reached, or its newest
    metadata has expired (a freeze); the device keeps serving its active model."""

    retriable = True
