"""The disk spool keeps every entry, in order, across restarts, crashes and full disks."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingestion._internal.spool import DiskSpool, SpoolConfig, SpoolEntry
from ingestion.errors import SpoolBusyError, SpoolCorruptError, SpoolFullError


def entry(i: int, device: str = "dev-1", seq: int | None = None, size: int = 100) -> SpoolEntry:
    return SpoolEntry(
        topic="fieldloop.public.vehicle_frames.v1",
        value=f"{i:08d}".encode().ljust(size, b"."),
        key=device.encode(),
        headers=(("fieldloop.device", device.encode()), ("n", str(i).encode())),
        seq=seq,
        timestamp_ms=1_700_000_000_000 + i,
    )


def spool(directory: Path, **kw: object) -> DiskSpool:
    return DiskSpool(SpoolConfig(directory=directory, **kw))


def values(items: list[tuple[int, SpoolEntry]]) -> list[int]:
    return [int(e.value[:8]) for _, e in items]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_entries_come_back_in_order_with_every_field(tmp_path: Path) -> None:
    with spool(tmp_path, segment_bytes=4096) as s:
        for i in range(200):
            s.append(entry(i, seq=i + 1))
        assert len(segments(tmp_path)) > 3  # the run crosses segment boundaries
        got = s.read(1000)
    assert [p for p, _ in got] == list(range(200))
    assert values(got) == list(range(200))
    assert got[7][1] == entry(7, seq=8)  # topic, key, headers, seq and timestamp round-trip


def test_read_repeats_until_commit_and_commit_deletes_consumed_segments(tmp_path: Path) -> None:
    with spool(tmp_path, segment_bytes=4096) as s:
        for i in range(200):
            s.append(entry(i))
        first = s.read(50)
        assert values(s.read(50)) == values(first)  # a failed delivery retries the same entries
        before = len(segments(tmp_path))
        s.commit(first[-1][0])
        assert values(s.read(1)) == [50]
        assert s.pending_count() == 150
        s.commit(149)
        assert len(segments(tmp_path)) < before
        assert (tmp_path / f"{0:020d}.seg").exists() is False
        assert values(s.read(100)) == list(range(150, 200))
        s.commit(199)
        assert s.pending_count() == 0 and s.pending_bytes() == 0 and s.read(10) == []
        s.commit(10)  # already committed: ignored
        with pytest.raises(ValueError):
            s.commit(200)  # never appended


def test_reopen_resumes_at_the_committed_cursor(tmp_path: Path) -> None:
    with spool(tmp_path, segment_bytes=4096) as s:
        for i in range(120):
            s.append(entry(i))
        s.commit(s.read(70)[-1][0])
        pending_bytes = s.pending_bytes()
    with spool(tmp_path, segment_bytes=4096) as s:
        assert s.pending_count() == 50
        assert s.pending_bytes() == pending_bytes
        assert values(s.read(100)) == list(range(70, 120))
        s.append(entry(120))
        assert s.read(100)[-1][0] == 120  # positions keep growing after a restart


def test_a_torn_last_frame_is_truncated_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with spool(tmp_path) as s:
        for i in range(10):
            s.append(entry(i))
    last = segments(tmp_path)[-1]
    intact = last.stat().st_size
    frame = last.read_bytes()[-(intact // 10) :]
    with open(last, "ab") as f:  # a crash in the middle of writing the 11th frame
        f.write(frame[:37])
    with caplog.at_level(logging.WARNING, logger="ingestion._internal.spool"):
        s = spool(tmp_path)
    try:
        assert "truncated 37 bytes" in caplog.text
        assert last.stat().st_size == intact
        assert values(s.read(100)) == list(range(10))
        s.append(entry(10))  # appends continue cleanly after the cut
    finally:
        s.close()
    with spool(tmp_path) as s:
        assert values(s.read(100)) == list(range(11))


def test_a_zero_filled_tail_is_not_taken_for_entries(tmp_path: Path) -> None:
    with spool(tmp_path) as s:
        s.append(entry(0))
    with open(segments(tmp_path)[-1], "ab") as f:  # what a power loss can leave behind
        f.write(bytes(4096))
    with spool(tmp_path) as s:
        assert s.pending_count() == 1
        assert values(s.read(10)) == [0]


def test_a_bit_flip_in_an_older_segment_is_reported_and_can_be_quarantined(tmp_path: Path) -> None:
    with spool(tmp_path, segment_bytes=4096) as s:
        for i in range(100):
            s.append(entry(i))
    oldest = segments(tmp_path)[0]
    data = bytearray(oldest.read_bytes())
    data[300] ^= 0xFF
    oldest.write_bytes(bytes(data))
    with spool(tmp_path, segment_bytes=4096) as s:
        good = s.read(100)  # entries before the bad frame still come out
        assert good and values(good) == list(range(len(good)))
        s.commit(good[-1][0])
        with pytest.raises(SpoolCorruptError) as err:
            s.read(100)
        assert err.value.path == str(oldest)
        lost = s.quarantine()
        assert lost > 0 and s.corrupt_count() == lost
        rest = s.read(1000)
        assert values(rest) == list(range(len(good) + lost, 100))
    assert oldest.with_name(oldest.name + ".corrupt").exists()
    with spool(tmp_path, segment_bytes=4096) as s:
        assert s.corrupt_count() == lost  # persisted


def test_full_spool_rejects_by_default_and_loses_nothing(tmp_path: Path) -> None:
    with spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8192) as s:
        accepted = 0
        with pytest.raises(SpoolFullError) as err:
            for i in range(10_000):
                s.append(entry(i, seq=i + 1))
                accepted += 1
        assert err.value.retriable
        assert s.disk_bytes() <= 64 * 1024
        assert s.pending_count() == accepted
        assert s.last_seq("dev-1") == accepted  # the refused entry did not take a sequence number
        # once the sender has delivered some, there is room again
        s.commit(s.read(accepted // 2)[-1][0])
        s.append(entry(accepted, seq=accepted + 1))
        assert s.dropped_count() == 0
        assert values(s.read(100_000)) == list(range(accepted // 2, accepted + 1))


def test_drop_oldest_drops_whole_segments_and_counts_them(tmp_path: Path) -> None:
    with spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8192, full_policy="drop_oldest") as s:
        for i in range(2000):
            s.append(entry(i))
        assert s.disk_bytes() <= 64 * 1024
        dropped = s.dropped_count()
        kept = values(s.read(100_000))
        assert dropped > 0
        assert dropped + len(kept) == 2000  # every entry is either still here or counted
        assert kept == list(range(dropped, 2000))  # the newest survive, in order
    with spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8192, full_policy="drop_oldest") as s:
        assert s.dropped_count() == dropped  # persisted, so it is reported after a restart


def test_drop_oldest_does_not_count_entries_already_delivered(tmp_path: Path) -> None:
    with spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8192, full_policy="drop_oldest") as s:
        for i in range(200):  # ~43 KiB
            s.append(entry(i))
        s.commit(199)
        for i in range(200, 450):  # ~54 KiB more: only fits because delivered segments go first
            s.append(entry(i))
        assert s.dropped_count() == 0
        assert values(s.read(1000)) == list(range(200, 450))


def test_an_entry_larger_than_the_budget_is_refused(tmp_path: Path) -> None:
    with spool(tmp_path, max_bytes=64 * 1024, full_policy="drop_oldest") as s:
        s.append(entry(0))
        with pytest.raises(SpoolFullError, match="larger than the whole spool"):
            s.append(entry(1, size=70 * 1024))
        assert s.dropped_count() == 0 and s.pending_count() == 1


def test_sequences_survive_restarts_after_their_segments_are_gone(tmp_path: Path) -> None:
    with spool(tmp_path, segment_bytes=4096) as s:
        for i in range(300):
            s.append(entry(i, device=f"dev-{i % 3}", seq=i // 3 + 1))
        s.commit(299)  # everything delivered: old segments deleted
    assert len(segments(tmp_path)) <= 2
    with spool(tmp_path, segment_bytes=4096) as s:
        assert [s.last_seq(f"dev-{d}") for d in range(3)] == [100, 100, 100]
        assert s.last_seq("dev-never-seen") == 0
        with pytest.raises(ValueError, match="never reused"):
            s.append(entry(300, device="dev-0", seq=100))


def test_sequences_survive_a_kill_without_close(tmp_path: Path) -> None:
    # a real SIGKILL, so nothing gets the chance to write a snapshot on the way out
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from ingestion._internal.spool import DiskSpool, SpoolConfig, SpoolEntry
        s = DiskSpool(SpoolConfig(directory=Path({str(tmp_path)!r}), segment_bytes=4096))
        for i in range(250):
            s.append(SpoolEntry("t", b"x" * 100, b"dev-%d" % (i % 2), seq=i // 2 + 1))
        s.commit(199)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with spool(tmp_path, segment_bytes=4096) as s:
        assert s.last_seq("dev-0") == 125 and s.last_seq("dev-1") == 125
        assert s.pending_count() == 50
        assert [e.seq for _, e in s.read(100)][:2] == [101, 101]


def test_missing_sequence_snapshot_is_refused_rather_than_reusing_numbers(tmp_path: Path) -> None:
    with spool(tmp_path, segment_bytes=4096) as s:
        for i in range(300):
            s.append(entry(i, seq=i + 1))
        s.commit(299)
    (tmp_path / "sequences.json").unlink()
    with pytest.raises(SpoolCorruptError, match="could be reused"):
        spool(tmp_path, segment_bytes=4096)


def test_one_spool_directory_has_one_owner(tmp_path: Path) -> None:
    with spool(tmp_path), pytest.raises(SpoolBusyError):
        spool(tmp_path)
    spool(tmp_path).close()  # released on close


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_every_fsync_policy_keeps_entries_across_reopen(tmp_path: Path, fsync: str) -> None:
    with spool(tmp_path, fsync=fsync, segment_bytes=4096) as s:
        for i in range(60):
            s.append(entry(i, seq=i + 1))
        s.commit(9)
    with spool(tmp_path, fsync=fsync, segment_bytes=4096) as s:
        assert values(s.read(100)) == list(range(10, 60))
        assert s.last_seq("dev-1") == 60


def test_cursor_file_is_replaced_atomically(tmp_path: Path) -> None:
    with spool(tmp_path) as s:
        for i in range(5):
            s.append(entry(i))
        s.commit(2)
        assert json.loads((tmp_path / "cursor.json").read_text())["index"] == 3
    assert not list(tmp_path.glob("*.tmp"))
    # a crash while writing the next cursor leaves a stray temp file; the old cursor stands
    (tmp_path / "cursor.json.tmp").write_text('{"index": 4')
    with spool(tmp_path) as s:
        assert values(s.read(10)) == [3, 4]
    assert not (tmp_path / "cursor.json.tmp").exists()


def test_config_rejects_segments_too_large_to_free_space(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most half"):
        SpoolConfig(directory=tmp_path, max_bytes=64 * 1024, segment_bytes=64 * 1024)
    with pytest.raises(ValueError):
        SpoolConfig(directory=tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []  # validation happens before anything touches the disk
