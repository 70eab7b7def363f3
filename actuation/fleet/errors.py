"""Errors of the fleet harness: every one is a :class:`~actuation.errors.ActuationError`."""

from __future__ import annotations

from actuation.errors import ActuationError


class FleetError(ActuationError):
    """A fleet run could not start: its settings, its devices' directories or the repository."""


class FaultSpecError(FleetError):
    """A ``--fault`` spec is not one of the faults the harness knows, or its numbers are out of range.

    Attributes:
        spec: the text as given.
    """

    def __init__(self, spec: str, problem: str) -> None:
        super().__init__(f"fault '{spec}': {problem}; {USAGE}")
        self.spec = spec


USAGE = "use offline:SHARE@START+DURATION, outage@START+DURATION or condition:SHARE@START+DURATION (seconds)"
