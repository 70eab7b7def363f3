"""The trip walk on one device's frames (numpy over Arrow, no Spark): which frames are trip ends."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

from refinement.anonymize import trip_ends

M_PER_DEG_LAT = 111_195.08  # metres per degree of latitude on the mean-radius sphere
SECOND = 1_000_000  # Spark hands timestamps to Arrow in microseconds


def frames(times_s: list[float | None], lats: list[float | None]) -> tuple[pa.Array, pa.Array, pa.Array]:
    ts = pa.array([None if t is None else int(t * SECOND) for t in times_s], pa.timestamp("us", tz="UTC"))
    return ts, pa.array(lats, pa.float64()), pa.array([139.0] * len(lats), pa.float64())


def test_a_trip_keeps_only_frames_at_least_the_distance_from_both_ends() -> None:
    # 11 frames 50 m apart, 1 s apart: 500 m long; 120 m trimmed at each end keeps 150..350 m
    ts, lat, lon = frames([float(i) for i in range(11)], [35.0 + i * 50 / M_PER_DEG_LAT for i in range(11)])
    ends = trip_ends(ts, lat, lon, trim_m=120.0, gap_s=300)
    assert ends.tolist() == [True, True, True, False, False, False, False, False, True, True, True]


def test_a_gap_longer_than_gap_s_starts_a_new_trip() -> None:
    # two 300 m trips 10 minutes apart; with one trip of 10 minutes' gap allowed, the middle frames would be kept
    times = [float(i) for i in range(7)] + [600.0 + i for i in range(7)]
    lats = [35.0 + i * 50 / M_PER_DEG_LAT for i in range(7)] + [35.0 + (6 + i) * 50 / M_PER_DEG_LAT for i in range(7)]
    ts, lat, lon = frames(times, lats)
    split = trip_ends(ts, lat, lon, trim_m=100.0, gap_s=300)
    assert split.tolist() == [True, True, False, False, False, True, True] * 2
    joined = trip_ends(ts, lat, lon, trim_m=100.0, gap_s=900)
    assert joined[5:9].tolist() == [False] * 4  # one 600 m trip: its middle is far from both ends


def test_frames_without_time_or_position_are_always_ends_and_add_no_distance() -> None:
    lats: list[float | None] = [35.0 + i * 50 / M_PER_DEG_LAT for i in range(11)]
    lats[5] = None
    times: list[float | None] = [float(i) for i in range(11)]
    times[7] = None
    ts, lat, lon = frames(times, lats)
    ends = trip_ends(ts, lat, lon, trim_m=60.0, gap_s=300)
    assert ends[5] and ends[7]
    # Frame 7 has no time: it is walked first, alone, and the trip runs 0..6, 8..10. Frame 5
    # has no position: 4 -> 5 -> 6 adds nothing, so 6 is 200 m from the start (not 300) and
    # 100 m from the end: a missing position can only make more frames ends, never fewer.
    assert ends.tolist() == [True, True, False, False, False, True, False, True, False, True, True]


def test_the_walk_follows_time_not_the_order_given() -> None:
    rng = random.Random(3)
    times = [float(i) for i in range(40)]
    lats = [35.0 + i * 30 / M_PER_DEG_LAT for i in range(40)]
    in_order = trip_ends(*frames(times, lats), trim_m=200.0, gap_s=300)
    shuffled = list(range(40))
    rng.shuffle(shuffled)
    got = trip_ends(*frames([times[i] for i in shuffled], [lats[i] for i in shuffled]), trim_m=200.0, gap_s=300)
    assert got.tolist() == in_order[np.array(shuffled)].tolist()
    assert not in_order.all() and in_order.any()


def test_no_frames_no_ends() -> None:
    assert trip_ends(*frames([], []), trim_m=200.0, gap_s=300).tolist() == []
