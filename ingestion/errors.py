"""Errors of the ingestion stage: the edge producer SDK, its disk spool and the fleet simulator.

A device handles the SDK's three ways: a :class:`RefusedError` is final for that record
(fix the record or the contract; retrying the same record fails the same way), a
:class:`SpoolFullError` is transient (``retriable``: the device may wait for the spool
to drain, or shed load itself), and a :class:`SpoolCorruptError` means bytes on disk
no longer match what was written (bad storage) and needs an operator.

The simulator's (:class:`SimulationError`, :class:`FaultSpecError`, :class:`RawSendError`)
concern how a simulated run was asked for and where it sends, never a device.
"""

from __future__ import annotations

from fieldloop.errors import FieldloopError


class IngestionError(FieldloopError):
    """Base of every error the ingestion stage raises on purpose."""


class RefusedError(IngestionError):
    """A record was refused at the device, before it was spooled; nothing was sent.

    Attributes:
        reason: short code for dashboards and counters: ``no-contract``, ``raw-secret``,
            ``schema-mismatch``, ``non-finite``, ``oversized`` or ``bad-device``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SimulationError(IngestionError):
    """A fleet simulation cannot run as asked (bad spec, bad fleet file, missing contract, broker not ours)."""


class FaultSpecError(IngestionError):
    """A ``--fault`` spec is not ``KIND[:PARAM]`` with a known kind and a valid parameter."""


class RawSendError(IngestionError):
    """The simulator's raw fault path (junk and duplicates around the SDK) cannot reach Kafka."""

    retriable = True


class SpoolFullError(IngestionError):
    """The spool reached its byte budget (or the disk is full) and its policy is ``reject``.

    Nothing was written for the record. Waiting for the sender to drain the spool helps.
    """

    retriable = True


class SpoolCorruptError(IngestionError):
    """Spool files on disk fail their checksums or contradict each other.

    Attributes:
        path: the file at fault, when one is known.
        offset: byte offset of the first bad frame in ``path``, when known.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class SpoolBusyError(IngestionError):
    """Another live process (or another object in this one) already has the spool open.

    Two writers would interleave frames and reuse sequence numbers, so the second is refused.
    """
