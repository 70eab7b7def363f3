"""Errors of the actuation stage.

Every one is an :class:`ActuationError`; each says what was wrong and what to do next, and
none carries a key (a key's id, the public half, may be named).
"""

from __future__ import annotations

from fieldloop.errors import FieldloopError


class ActuationError(FieldloopError):
    """Base of every error the actuation stage raises on purpose."""


class SigningKeyError(ActuationError):
    """A signing key is missing, unreadable, too widely readable, or not the one expected."""


class AttestationError(ActuationError):
    """An attestation does not verify: signature, key, subjects or verdict."""


class GuardrailError(ActuationError):
    """The guardrails could not judge a model (a policy file, a missing artifact, no holdout)."""


class ReleaseError(ActuationError):
    """A release was refused or the repository could not be built, read or served."""


class AgentError(ActuationError):
    """The edge agent could not update, verify, activate or run a model."""


class CampaignError(ActuationError):
    """A collection campaign cannot be created or stopped as asked; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
