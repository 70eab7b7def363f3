"""A crash-safe, bounded store-and-forward queue on the device's own disk.

The edge producer writes every accepted record here *before* it returns, and a sender
drains the spool to Kafka: :meth:`DiskSpool.append` writes one checksummed frame at the
end of the active segment file; :meth:`DiskSpool.read` returns entries from the
committed cursor (so a failed delivery is retried from the same place);
:meth:`DiskSpool.commit` persists the cursor past the delivered entries and deletes the
segments it has passed. Reopening a spool after a crash cuts off the torn frame a crash
may leave at the end of the last segment, and restores the cursor, the counters and the
highest sequence number per key (so a device never reuses one).

Layout of a spool directory::

    00000000000000000000.seg   segments of frames, each named by the index of its first entry
    cursor.json                committed position: {"index", "segment", "offset"}
    sequences.json             highest sequence per key, covering entries below "as_of"
    counters.json              records the spool gave up on: {"dropped", "corrupt"}
    .lock                      held (flock) by the one process that has the spool open

A frame is ``u32 length | u32 crc32(payload) | payload`` (little-endian); the payload
holds the entry (see :func:`_encode`). Entries are numbered by a global index that only
grows; it is what :meth:`~DiskSpool.read` returns as an entry's position.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingestion.errors import IngestionError, SpoolBusyError, SpoolCorruptError, SpoolFullError

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "batch", "never"]
FullPolicy = Literal["reject", "drop_oldest"]

MIB = 1024 * 1024

_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_HEAD = struct.Struct("<BqqH")  # format version, timestamp ms, sequence (-1: none), topic length
_KEY_LEN = struct.Struct("<i")  # -1: no key
_COUNT = struct.Struct("<H")
_HEADER = struct.Struct("<HI")  # header name length, header value length
_FORMAT = 1
# A length above this can only be garbage (records are capped far below it); treating it as
# a bad frame keeps recovery from allocating whatever a torn length field claims.
_MAX_FRAME = 256 * MIB
_SUFFIX = ".seg"
_CURSOR = "cursor.json"
_SEQUENCES = "sequences.json"
_COUNTERS = "counters.json"


class SpoolConfig(BaseModel):
    """Where a spool lives and how it behaves when full or asked to be durable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path = Field(description="spool directory; created if missing (one process at a time)")
    max_bytes: int = Field(256 * MIB, ge=64 * 1024, description="budget for all segment files together (bytes)")
    segment_bytes: int | None = Field(
        None,
        ge=4096,
        description="a segment is closed once it would grow past this (bytes); default min(16 MiB, max_bytes/8)",
    )
    full_policy: FullPolicy = Field(
        "reject",
        description="when full: 'reject' raises SpoolFullError; 'drop_oldest' drops whole oldest segments, counted",
    )
    fsync: FsyncPolicy = Field(
        "batch", description="'always': fsync every append; 'batch': on sync()/commit(); 'never': leave it to the OS"
    )

    @model_validator(mode="after")
    def _segments_fit(self) -> SpoolConfig:
        if self.segment_bytes is not None and self.segment_bytes > self.max_bytes // 2:
            raise ValueError(
                f"segment_bytes ({self.segment_bytes}) must be at most half of max_bytes ({self.max_bytes}): "
                "space is freed by whole segments"
            )
        return self

    @property
    def effective_segment_bytes(self) -> int:
        """The segment size actually used (bytes)."""
        return self.segment_bytes or max(4096, min(16 * MIB, self.max_bytes // 8))


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One record waiting to be sent.

    Attributes:
        topic: Kafka topic.
        value: the record's bytes.
        key: Kafka key (bytes) or None.
        headers: Kafka headers as (name, value) pairs.
        seq: sequence number of this entry within its key (must grow per key), or None.
        timestamp_ms: creation time (epoch milliseconds), sent as the Kafka record timestamp.
    """

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    seq: int | None = None
    timestamp_ms: int = field(default_factory=_now_ms)


def _encode(entry: SpoolEntry) -> bytes:
    """Payload: head (version, timestamp, seq, topic length), topic, key, headers, value."""
    topic = entry.topic.encode("utf-8")
    seq = -1 if entry.seq is None else entry.seq
    parts = [_HEAD.pack(_FORMAT, entry.timestamp_ms, seq, len(topic)), topic]
    if entry.key is None:
        parts.append(_KEY_LEN.pack(-1))
    else:
        parts += [_KEY_LEN.pack(len(entry.key)), entry.key]
    parts.append(_COUNT.pack(len(entry.headers)))
    for name, value in entry.headers:
        raw = name.encode("utf-8")
        parts += [_HEADER.pack(len(raw), len(value)), raw, value]
    parts.append(entry.value)
    return b"".join(parts)


def _decode(payload: bytes) -> SpoolEntry:
    """Inverse of :func:`_encode`; raises ValueError/struct.error on malformed bytes."""
    view = memoryview(payload)
    version, ts, seq, topic_len = _HEAD.unpack_from(view, 0)
    if version != _FORMAT:
        raise ValueError(f"unknown spool entry format {version}")
    pos = _HEAD.size
    topic = bytes(view[pos : pos + topic_len]).decode("utf-8")
    pos += topic_len
    (key_len,) = _KEY_LEN.unpack_from(view, pos)
    pos += _KEY_LEN.size
    key = None
    if key_len >= 0:
        key = bytes(view[pos : pos + key_len])
        pos += key_len
    (count,) = _COUNT.unpack_from(view, pos)
    pos += _COUNT.size
    headers = []
    for _ in range(count):
        name_len, value_len = _HEADER.unpack_from(view, pos)
        pos += _HEADER.size
        name = bytes(view[pos : pos + name_len]).decode("utf-8")
        pos += name_len
        headers.append((name, bytes(view[pos : pos + value_len])))
        pos += value_len
    if pos > len(view):
        raise ValueError("entry is shorter than its fields claim")
    return SpoolEntry(topic, bytes(view[pos:]), key, tuple(headers), None if seq < 0 else seq, ts)


class _Cursor(NamedTuple):
    index: int  # first entry not yet committed
    segment: int  # first index of the segment holding it
    offset: int  # byte offset of its frame in that segment


class DiskSpool:
    """An append-only, crash-safe queue of :class:`SpoolEntry` in a directory.

    Thread-safe: one thread may append while another reads and commits. Only one
    ``DiskSpool`` may have a directory open at a time (an exclusive ``flock``).

    Args:
        config: where and how; see :class:`SpoolConfig`.

    Raises:
        SpoolBusyError: another process or object has the directory open.
        SpoolCorruptError: the files contradict each other in a way that could reuse
            sequence numbers or lose entries silently.
    """

    def __init__(self, config: SpoolConfig) -> None:
        self._cfg = config
        self._dir = config.directory
        self._segment_bytes = config.effective_segment_bytes
        self._lock = threading.RLock()
        self._closed = False
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock_directory()
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- public API ------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def next_position(self) -> int:
        """The position the next appended entry will get."""
        return self._next

    @property
    def committed_position(self) -> int:
        """Every entry below this position has been committed (or dropped)."""
        return self._cursor.index

    def append(self, entry: SpoolEntry) -> int:
        """Write ``entry`` at the end of the spool; when this returns, a process crash cannot lose it.

        With ``fsync="always"`` it also survives a power loss; with ``"batch"`` only once
        :meth:`sync` or :meth:`commit` has run since.

        Returns:
            The entry's position.

        Raises:
            SpoolFullError: the spool is at its byte budget and the policy is ``reject``,
                the entry alone exceeds the budget, or the disk is full.
            ValueError: ``entry.seq`` does not exceed the last sequence of its key, or a
                sequenced entry has no UTF-8 key.
        """
        payload = _encode(entry)
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        seq_key = None
        if entry.seq is not None:
            if entry.key is None:
                raise ValueError("an entry with a sequence number needs the key the sequence belongs to")
            seq_key = entry.key.decode("utf-8")
        with self._lock:
            self._check_open()
            last = self._seqs.get(seq_key, 0) if seq_key is not None else 0
            if seq_key is not None and entry.seq <= last:
                raise ValueError(
                    f"sequence {entry.seq} for key {seq_key!r} does not exceed the last one, "
                    f"{last}; sequence numbers are never reused"
                )
            size = len(frame)
            if size > self._cfg.max_bytes:
                raise SpoolFullError(
                    f"an entry of {size} bytes is larger than the whole spool "
                    f"({self._cfg.max_bytes} bytes): raise the spool's max_bytes"
                )
            self._make_room(size)
            if self._sizes[self._active] and self._sizes[self._active] + size > self._segment_bytes:
                self._roll()
            self._write(frame)
            position = self._next
            self._next += 1
            if seq_key is not None:
                self._seqs[seq_key] = entry.seq
            return position

    def read(self, max_entries: int) -> list[tuple[int, SpoolEntry]]:
        """Up to ``max_entries`` entries from the committed cursor, oldest first.

        Reading does not move the cursor: reading again without a commit returns the same
        entries, which is how a failed delivery is retried.

        Raises:
            SpoolCorruptError: the first entry at the cursor fails its checksum (entries
                before a bad frame are returned first; see :meth:`quarantine`).
        """
        out: list[tuple[int, SpoolEntry]] = []
        with self._lock:
            self._check_open()
            self._ends = {}
            index, segment, offset = self._cursor
            while len(out) < max_entries:
                size = self._sizes[segment]
                if offset >= size:
                    following = self._following(segment)
                    if following is None:
                        break
                    segment, offset = following, 0
                    continue
                frames, stop, bad = self._read_frames(segment, offset, size, max_entries - len(out))
                for _, end, payload in frames:
                    try:
                        entry = _decode(payload)
                    except (ValueError, struct.error, UnicodeDecodeError) as e:
                        if out:
                            return out
                        raise SpoolCorruptError(
                            f"spool entry {index} in {self._path(segment)} passes its checksum but "
                            f"does not decode ({e}); quarantine it",
                            str(self._path(segment)),
                        ) from e
                    out.append((index, entry))
                    self._ends[index] = (segment, end)
                    index += 1
                if bad:
                    if out:
                        break
                    raise SpoolCorruptError(
                        f"spool segment {self._path(segment)} has a bad frame at byte {stop} (checksum or length "
                        "mismatch): the storage corrupted it; quarantine() skips the rest of that segment",
                        str(self._path(segment)),
                        stop,
                    )
                offset = stop
        return out

    def commit(self, position: int) -> None:
        """Mark every entry up to and including ``position`` as delivered.

        Persists the cursor and deletes segments that hold only delivered entries. A
        position below the cursor (already committed, or dropped meanwhile) is ignored.

        Raises:
            ValueError: ``position`` was never appended.
        """
        with self._lock:
            self._check_open()
            if position < self._cursor.index:
                return
            if position >= self._next:
                raise ValueError(f"position {position} was never appended (next position is {self._next})")
            segment, end = self._ends.get(position) or self._locate_end(position)
            if self._cfg.fsync == "batch":
                # "batch" durability: whatever was appended is on disk at least once per delivery round
                _fdatasync(self._fd)
            self._set_cursor(self._normalize(_Cursor(position + 1, segment, end)))
            self._delete_consumed()

    def sync(self) -> None:
        """Make everything appended so far durable (unless ``fsync="never"``) and snapshot the sequences."""
        with self._lock:
            self._check_open()
            if self._cfg.fsync != "never":
                _fdatasync(self._fd)
            self._write_sequences(self._next)

    def quarantine(self) -> int:
        """Give up on the segment holding the cursor after :meth:`read` raised SpoolCorruptError.

        The segment file is renamed to ``*.seg.corrupt`` (kept for inspection), the cursor
        moves to the next segment, and the entries skipped are added to :meth:`corrupt_count`.

        Returns:
            How many entries were skipped.
        """
        with self._lock:
            self._check_open()
            segment = self._cursor.segment
            if segment == self._active:
                self._roll()  # never rename the file appends are going to
            following = self._following(segment)
            assert following is not None  # the roll above guarantees a later segment
            lost = following - self._cursor.index
            self._corrupt += lost
            self._write_counters()
            self._set_cursor(_Cursor(following, following, 0))
            path = self._path(segment)
            os.replace(path, path.with_name(path.name + ".corrupt"))
            self._forget(segment)
            logger.error(
                "spool %s: skipped %d entries of corrupt segment %s (kept as %s.corrupt); check the device's storage",
                self._dir,
                lost,
                path.name,
                path.name,
            )
            return lost

    def pending_count(self) -> int:
        """Entries appended and not yet committed."""
        with self._lock:
            return self._next - self._cursor.index

    def pending_bytes(self) -> int:
        """Bytes of the frames not yet committed (framing included)."""
        with self._lock:
            _index, segment, offset = self._cursor
            total = self._sizes.get(segment, 0) - offset
            total += sum(size for first, size in self._sizes.items() if first > segment)
            return max(total, 0)

    def disk_bytes(self) -> int:
        """Bytes of all segment files, the figure ``max_bytes`` bounds."""
        with self._lock:
            return sum(self._sizes.values())

    def dropped_count(self) -> int:
        """Entries dropped by the ``drop_oldest`` policy before delivery, over the spool's life."""
        return self._dropped

    def corrupt_count(self) -> int:
        """Entries skipped by :meth:`quarantine`, over the spool's life."""
        return self._corrupt

    def last_seq(self, key: bytes | str) -> int:
        """Highest sequence number ever appended for ``key`` (0 if none); survives restarts."""
        name = key.decode("utf-8") if isinstance(key, bytes) else key
        with self._lock:
            return self._seqs.get(name, 0)

    def close(self) -> None:
        """Sync, snapshot the sequences and release the directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self.sync()
            finally:
                self._closed = True
                os.close(self._fd)
                os.close(self._lock_fd)

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening and recovery ----------------------------------------------------------
    def _lock_directory(self) -> int:
        fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise SpoolBusyError(
                f"spool {self._dir} is open in another process or object; "
                "close it there first (one producer per spool directory)"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _recover(self) -> None:
        for tmp in self._dir.glob("*.tmp"):  # half-written metadata from a crash; the old file is intact
            tmp.unlink()
        counters = self._read_json(_COUNTERS) or {}
        self._dropped = int(counters.get("dropped", 0))
        self._corrupt = int(counters.get("corrupt", 0))
        cursor = self._read_json(_CURSOR)
        snapshot = self._read_json(_SEQUENCES) or {}
        firsts = sorted(
            int(p.name[: -len(_SUFFIX)]) for p in self._dir.glob("*" + _SUFFIX) if p.name[: -len(_SUFFIX)].isdigit()
        )
        if not firsts:
            start = max(int(cursor["index"]) if cursor else 0, int(snapshot.get("as_of", 0)))
            self._path(start).touch()
            firsts = [start]
        self._sizes: dict[int, int] = {first: self._path(first).stat().st_size for first in firsts}
        self._active = firsts[-1]
        self._ends: dict[int, tuple[int, int]] = {}

        # The last segment is the only one a crash can leave torn: keep its valid prefix.
        frames, valid_end, _ = self._read_frames(self._active, 0, self._sizes[self._active], None)
        torn = self._sizes[self._active] - valid_end
        if torn:
            with open(self._path(self._active), "r+b") as f:
                f.truncate(valid_end)
            self._sizes[self._active] = valid_end
            logger.warning(
                "spool %s: truncated %d bytes of a torn frame at the end of %s (a crash interrupted a "
                "write; the record it held was never acknowledged to the caller)",
                self._dir,
                torn,
                self._path(self._active).name,
            )
        self._next = self._active + len(frames)
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_APPEND)

        self._cursor = self._recover_cursor(cursor)
        self._seqs: dict[str, int] = self._recover_sequences(snapshot, frames)
        self._delete_consumed()
        logger.info(
            "spool %s opened: %d entries pending (%d bytes), %d segments",
            self._dir,
            self.pending_count(),
            self.pending_bytes(),
            len(self._sizes),
        )

    def _recover_cursor(self, stored: dict[str, Any] | None) -> _Cursor:
        first = min(self._sizes)
        if stored is None:
            return _Cursor(first, first, 0)
        cursor = _Cursor(int(stored["index"]), int(stored["segment"]), int(stored["offset"]))
        if cursor.index > self._next:
            # Only possible when a power loss ate appended data the cursor had passed (fsync
            # "never"/"batch"); those entries had been delivered, so nothing is lost.
            logger.warning(
                "spool %s: cursor %d is past the recovered end %d; resuming at the end",
                self._dir,
                cursor.index,
                self._next,
            )
            return _Cursor(self._next, self._active, self._sizes[self._active])
        if cursor.index < first:
            logger.warning(
                "spool %s: cursor %d points before the oldest segment %d; resuming there",
                self._dir,
                cursor.index,
                first,
            )
            return _Cursor(first, first, 0)
        if cursor.segment not in self._sizes or cursor.offset > self._sizes[cursor.segment]:
            segment, offset = self._locate_start(cursor.index)
            cursor = _Cursor(cursor.index, segment, offset)
        return self._normalize(cursor)

    def _recover_sequences(self, snapshot: dict[str, Any], last_frames: list[tuple[int, int, bytes]]) -> dict[str, int]:
        seqs = {str(k): int(v) for k, v in snapshot.get("last", {}).items()}
        as_of = int(snapshot.get("as_of", 0))
        firsts = sorted(self._sizes)
        if as_of < firsts[0]:
            # Entries in [as_of, oldest segment) are gone and the snapshot does not cover them.
            raise SpoolCorruptError(
                f"spool {self._dir}: {_SEQUENCES} covers entries below {as_of} but the oldest segment starts at "
                f"{firsts[0]}; the sequence numbers of the entries in between are unknown and could be reused. "
                "Restore the file, or move the spool directory aside to start a new device identity",
                str(self._dir / _SEQUENCES),
            )
        # Replay what the snapshot does not cover: normally just the last segment.
        for first in firsts:
            following = self._following(first)
            if following is not None and following <= as_of:
                continue
            frames = last_frames if first == self._active else self._read_frames(first, 0, self._sizes[first], None)[0]
            for index, (_, _, payload) in enumerate(frames, start=first):
                if index < as_of:
                    continue
                entry = _decode(payload)
                if entry.seq is not None and entry.key is not None:
                    name = entry.key.decode("utf-8")
                    seqs[name] = max(seqs.get(name, 0), entry.seq)
        return seqs

    # -- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise IngestionError(f"spool {self._dir} is closed")

    def _path(self, first: int) -> Path:
        return self._dir / f"{first:020d}{_SUFFIX}"

    def _following(self, first: int) -> int | None:
        later = [f for f in self._sizes if f > first]
        return min(later) if later else None

    def _read_frames(
        self, first: int, offset: int, end: int, limit: int | None
    ) -> tuple[list[tuple[int, int, bytes]], int, bool]:
        """Consecutive valid frames of a segment from ``offset`` up to ``end``.

        Returns:
            ``(frames, stop, bad)``: frames as (start, end, payload), the offset reading
            stopped at, and whether it stopped at an invalid frame rather than at ``end``
            or ``limit``.
        """
        frames: list[tuple[int, int, bytes]] = []
        pos = offset
        with open(self._path(first), "rb") as f:
            f.seek(offset)
            while pos < end and (limit is None or len(frames) < limit):
                head = f.read(_FRAME.size)
                if len(head) < _FRAME.size or pos + _FRAME.size > end:
                    return frames, pos, True
                length, crc = _FRAME.unpack(head)
                # length 0 is never written: it is what a zero-filled tail after a power loss looks like
                if length == 0 or length > _MAX_FRAME or pos + _FRAME.size + length > end:
                    return frames, pos, True
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    return frames, pos, True
                frames.append((pos, pos + _FRAME.size + length, payload))
                pos += _FRAME.size + length
        return frames, pos, False

    def _locate_start(self, index: int) -> tuple[int, int]:
        """(segment, offset) of the frame of entry ``index``."""
        segment = max(f for f in self._sizes if f <= index)
        if index == segment:
            return segment, 0
        frames, _, _ = self._read_frames(segment, 0, self._sizes[segment], index - segment)
        if len(frames) < index - segment:
            raise SpoolCorruptError(
                f"spool {self._dir}: entry {index} is missing from {self._path(segment)}", str(self._path(segment))
            )
        return segment, frames[-1][1]

    def _locate_end(self, index: int) -> tuple[int, int]:
        """(segment, end offset) of the frame of entry ``index``."""
        segment, offset = self._locate_start(index)
        frames, _, _ = self._read_frames(segment, offset, self._sizes[segment], 1)
        if not frames:
            raise SpoolCorruptError(
                f"spool {self._dir}: entry {index} cannot be read from {self._path(segment)}",
                str(self._path(segment)),
                offset,
            )
        return segment, frames[0][1]

    def _normalize(self, cursor: _Cursor) -> _Cursor:
        """A cursor at the end of a closed segment points to the start of the next one."""
        while cursor.offset >= self._sizes.get(cursor.segment, 0) and cursor.segment != self._active:
            following = self._following(cursor.segment)
            if following is None:
                break
            cursor = _Cursor(cursor.index, following, 0)
        return cursor

    def _set_cursor(self, cursor: _Cursor) -> None:
        # Not fsynced outside "always": a cursor that rolls back on power loss only re-sends
        # delivered entries, which the cloud drops as duplicates.
        self._write_json(_CURSOR, cursor._asdict(), durable=self._cfg.fsync == "always")
        self._cursor = cursor

    def _write_sequences(self, as_of: int) -> None:
        self._write_json(_SEQUENCES, {"as_of": as_of, "last": self._seqs}, durable=self._cfg.fsync != "never")

    def _write_counters(self) -> None:
        self._write_json(
            _COUNTERS, {"dropped": self._dropped, "corrupt": self._corrupt}, durable=self._cfg.fsync != "never"
        )

    def _write_json(self, name: str, data: dict[str, Any], durable: bool) -> None:
        tmp = self._dir / (name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self._dir / name)
        if durable:
            _fsync_dir(self._dir)

    def _read_json(self, name: str) -> dict[str, Any] | None:
        path = self._dir / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as e:
            # written by os.replace of a complete file, so a bad one means the storage failed
            raise SpoolCorruptError(
                f"spool file {path} is not valid JSON ({e}); restore it or move the spool aside", str(path)
            ) from e

    def _write(self, frame: bytes) -> None:
        before = self._sizes[self._active]
        try:
            view = memoryview(frame)
            while view:  # regular files write fully except on errors, but never assume it
                written = os.write(self._fd, view)
                view = view[written:]
            if self._cfg.fsync == "always":
                _fdatasync(self._fd)
        except OSError as e:
            os.ftruncate(self._fd, before)  # no half frame may follow a good one
            if e.errno == errno.ENOSPC:
                raise SpoolFullError(f"the disk holding spool {self._dir} is full; free space on it") from e
            raise IngestionError(f"cannot write spool segment {self._path(self._active)}: {e}") from e
        self._sizes[self._active] = before + len(frame)

    def _roll(self) -> None:
        """Close the active segment and start a new one at the next position."""
        if self._sizes[self._active] == 0:
            return
        new = self._next
        # The snapshot must cover everything before the new segment *before* it exists, so a
        # reopen never has to read segments that may already be deleted.
        self._write_sequences(new)
        if self._cfg.fsync != "never":
            _fdatasync(self._fd)
        fd = os.open(self._path(new), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self._cfg.fsync != "never":
            _fsync_dir(self._dir)
        os.close(self._fd)
        self._fd = fd
        self._sizes[new] = 0
        self._active = new
        self._cursor = self._normalize(self._cursor)
        self._delete_consumed()

    def _delete_consumed(self) -> None:
        for first in sorted(self._sizes):
            following = self._following(first)
            if first == self._active or following is None or following > self._cursor.index:
                break
            self._path(first).unlink(missing_ok=True)
            self._forget(first)

    def _forget(self, first: int) -> None:
        del self._sizes[first]
        self._ends = {i: loc for i, loc in self._ends.items() if loc[0] != first}

    def _make_room(self, size: int) -> None:
        if sum(self._sizes.values()) + size <= self._cfg.max_bytes:
            return
        self._delete_consumed()
        if self._cursor.index == self._next and self._sizes[self._active]:
            self._roll()  # the active segment is fully delivered: start afresh so it can go
        if sum(self._sizes.values()) + size <= self._cfg.max_bytes:
            return
        if self._cfg.full_policy == "reject":
            raise SpoolFullError(
                f"spool {self._dir} is full: {self.pending_count()} records ({self.pending_bytes()} bytes) wait for "
                f"Kafka within its {self._cfg.max_bytes}-byte budget; nothing was written. Retry once the sender has "
                "drained it, or raise the spool's max_bytes"
            )
        while sum(self._sizes.values()) + size > self._cfg.max_bytes:
            if len(self._sizes) == 1:
                self._roll()
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        oldest = min(self._sizes)
        following = self._following(oldest)
        assert following is not None  # callers roll first, so the active segment is never the oldest
        lost = max(0, following - max(self._cursor.index, oldest))
        if lost:
            # counters and cursor first: a crash before the unlink leaves a consumed segment that
            # the next open deletes, and the drop is already counted exactly once
            self._dropped += lost
            self._write_counters()
            self._set_cursor(_Cursor(following, following, 0))
        self._path(oldest).unlink(missing_ok=True)
        self._forget(oldest)
        logger.warning(
            "spool %s full: dropped %d undelivered records (segment %d) to make room; %d dropped in total",
            self._dir,
            lost,
            oldest,
            self._dropped,
        )


def _fdatasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _fsync_dir(directory: Path) -> None:
    """Make renames and new files in ``directory`` durable (POSIX needs the directory synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
