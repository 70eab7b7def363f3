"""Errors of the refinement stage (bronze -> silver -> gold, privacy and DP).

Each says what was wrong and what to do next, and none carries a key or personal data:
a policy names the file and field, a key error names the key id and the source, never
the key.
"""

from __future__ import annotations

from fieldloop.errors import FieldloopError
from fieldloop.errors import KeyRingError as KeyRingError  # the kernel loads the keys; refinement raises it too


class RefinementError(FieldloopError):
    """Base of every error the refinement stage raises on purpose."""


class PolicyError(RefinementError):
    """A privacy policy file is missing, malformed or does not match its stream's schema."""


class QualityError(RefinementError):
    """A run's share of rows failing quality expectations passed its threshold."""


class BudgetExceededError(RefinementError):
    """A differentially private release would spend more than the ledger allows; nothing was released."""


class PrivacyCheckError(RefinementError):
    """An output table would break its privacy level (k-anonymity, a surviving identifier)."""


class LedgerConflictError(RefinementError):
    """The DP ledger stayed busy (lost commits, a held lock); nothing was recorded, retrying may succeed."""

    retriable = True
