"""Errors of the shared kernel.

Every error says what was wrong and what to do next; none carries keys or personal
data. ``retriable`` marks errors a caller may retry as they are (a broker still
starting, a port being released), so retry loops key off it instead of the type.
"""

from __future__ import annotations


class FieldloopError(Exception):
    """Base of every error fieldloop raises on purpose."""

    retriable: bool = False


class ConfigError(FieldloopError):
    """The effective config (file or ``FIELDLOOP_*`` variables) is invalid."""


class ContractError(FieldloopError):
    """A data contract file is missing, malformed or breaks a governance rule."""


class ResidencyError(FieldloopError):
    """A storage location is outside the allowed regions, or its region is unknown."""


class KeyRingError(FieldloopError):
    """The site's HMAC keys could not be loaded from their secret source, or one is missing."""


class ContaminationError(FieldloopError):
    """A set of inputs may not train the requested model; nothing was registered."""


class JvmDependencyError(FieldloopError):
    """Java or the Maven-resolved jars are missing or could not be resolved."""


class StackError(FieldloopError):
    """A local stack component could not be started, checked or stopped."""
