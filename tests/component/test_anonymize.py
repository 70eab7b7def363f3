"""Generalization, trip trimming and k-anonymity as Spark expressions, against references computed here."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from refinement import anonymize

EARTH = 6_371_008.8


def reference_mesh(lat: float, lon: float, level: int) -> str:
    """JIS X 0410 by its definition, step by step (exact fractions via integers of 1/3600 deg)."""
    p, a = divmod(lat * 60 / 40, 1)
    u, f = divmod(lon - 100, 1)
    q, b = divmod(a * 8, 1)
    v, g = divmod(f * 8, 1)
    r, c = divmod(b * 10, 1)
    w, h = divmod(g * 10, 1)
    code = (
        f"{int(p):02d}{int(u):02d}"
        + (f"{int(q)}{int(v)}" if level >= 2 else "")
        + (f"{int(r)}{int(w)}" if level >= 3 else "")
    )
    for _ in range(4, level + 1):
        s, c = divmod(c * 2, 1)
        t, h = divmod(h * 2, 1)
        code += str(int(s) * 2 + int(t) + 1)
    return code[: {1: 4, 2: 6}.get(level, len(code))]


def test_mesh_codes_match_the_standard(spark) -> None:
    from pyspark.sql import functions as F

    places = {
        "tokyo-station": (35.681236, 139.767125),
        "osaka-station": (34.702485, 135.495951),
        "sapporo": (43.068661, 141.350755),
        "naha": (26.212401, 127.680932),
    }
    df = spark.createDataFrame([(k, *v) for k, v in places.items()], "name STRING, lat DOUBLE, lon DOUBLE")
    for level in (1, 2, 3, 4, 5):
        got = {
            r["name"]: r["m"]
            for r in df.select("name", anonymize.mesh_code(F.col("lat"), F.col("lon"), level).alias("m")).collect()
        }
        assert got == {k: reference_mesh(*v, level) for k, v in places.items()}, level
    assert reference_mesh(*places["tokyo-station"], 3) == "53394611"  # worked by hand from the definition
    # and anywhere in Japan's extent, at every level
    rng = random.Random(7)
    points = [(rng.uniform(20.5, 45.5), rng.uniform(122.5, 153.5)) for _ in range(300)]
    df = spark.createDataFrame(points, "lat DOUBLE, lon DOUBLE")
    for level in (1, 2, 3, 4, 5):
        got = [r["m"] for r in df.select(anonymize.mesh_code(F.col("lat"), F.col("lon"), level).alias("m")).collect()]
        assert got == [reference_mesh(lat, lon, level) for lat, lon in points], level


def test_trip_ends_are_trimmed_by_at_least_the_distance(spark) -> None:
    t0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    rows = []
    # two trips of one car, 20 m apart per second, 10 minutes apart; and a short trip of another car
    for trip, start in enumerate((t0, t0 + timedelta(minutes=15))):
        for i in range(60):
            rows.append(("car-a", start + timedelta(seconds=i), 35.0 + trip * 0.1 + i * 20 / 111_195, 139.0))
    rows += [("car-b", t0 + timedelta(seconds=i), 34.0 + i * 20 / 111_195, 135.0) for i in range(15)]
    # a frame with no position mid-trip: no distance from anything, so never kept
    rows += [
        ("car-c", t0 + timedelta(seconds=i), None if i == 30 else 33.0 + i * 20 / 111_195, 134.0) for i in range(60)
    ]
    df = spark.createDataFrame(rows, "dev STRING, ts TIMESTAMP, lat DOUBLE, lon DOUBLE")
    kept = anonymize.trim_trips(df, "dev", "ts", "lat", "lon", trim_m=200.0, gap_s=300).collect()

    def metres(a: tuple, b: tuple) -> float:
        return math.radians(abs(a[0] - b[0])) * EARTH

    trips = {("car-a", 0): rows[:60], ("car-a", 1): rows[60:120]}
    for (dev, n), trip in trips.items():
        mine = [r for r in kept if r["dev"] == dev and abs(r["lat"] - (35.0 + n * 0.1)) < 0.05]
        assert mine, "a 1.2 km trip keeps its middle"
        first, last = (trip[0][2], 0), (trip[-1][2], 0)
        assert min(metres((r["lat"], 0), first) for r in mine) >= 200 - 1e-6
        assert min(metres((r["lat"], 0), last) for r in mine) >= 200 - 1e-6
    assert not [r for r in kept if r["dev"] == "car-b"]  # 280 m long: nothing is 200 m from both ends
    middle = [r for r in kept if r["dev"] == "car-c"]
    assert middle and all(r["lat"] is not None for r in middle)


def test_k_anonymity_keeps_only_classes_of_k_devices(spark) -> None:
    rows = []
    for d in range(7):  # seven devices share cell A at 08:00: a class of 7
        rows += [(f"d{d}", "A", 8, bool(d % 2))] * 3
    for d in range(4):  # four share cell B: below k = 5
        rows += [(f"e{d}", "B", 8, False)]
    rows += [("d0", "C", 9, True)] * 40  # one device, many rows: still one device
    df = spark.createDataFrame(rows, "dev STRING, cell STRING, hour INT, flag BOOLEAN")
    kept, stats = anonymize.enforce_k_anonymity(df, "dev", ["cell", "hour"], k=5, sensitive=["flag"])
    out = kept.collect()
    assert {(r["cell"], r["hour"]) for r in out} == {("A", 8)}
    assert len(out) == 21 and stats.k_achieved == 7
    assert stats.suppressed_rows == 4 + 40
    assert stats.suppressed_values == {"cell": 44, "hour": 40}  # B and C held by < 5 devices; hour 9 by one
    assert stats.l_diversity == {"flag": 2}  # the class kept holds both values; C's single one is not counted


@pytest.mark.parametrize(("minutes", "expected"), [(15, "08:15"), (60, "08:00")])
def test_time_buckets(spark, minutes: int, expected: str) -> None:
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(datetime(2026, 5, 1, 8, 29, 59, tzinfo=UTC),)], "ts TIMESTAMP")
    got = df.select(anonymize.time_bucket(F.col("ts"), minutes).alias("b")).first()["b"]
    assert got.astimezone(UTC).strftime("%H:%M") == expected
