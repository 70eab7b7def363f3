"""Generalization, trip trimming and k-anonymity: Spark expressions, and numpy where a walk is sequential.

* :func:`mesh_code` - lat/lon to the Japanese standard grid square code (JIS X 0410,
  地域メッシュ): level 1 = 80 km, 2 = 10 km, 3 = 1 km, 4 = 500 m, 5 = 250 m. Computed
  on integer cell indices (lat x 120, lon x 80 for the 1 km mesh) so no float rounding
  moves a point across a border.
* :func:`trim_trips` - a trip is a device's run of frames without a gap longer than
  ``gap_s``; frames within ``trim_m`` of its start or its end are removed, so home and
  work addresses do not survive as trip endpoints. :func:`mark_trip_ends` marks them
  instead, among the rows a job chooses; :func:`trip_ends` is the walk itself, over one
  device's frames in Arrow.
* :func:`enforce_k_anonymity` - rare quasi-identifier values (held by fewer than k
  devices) are suppressed to null, then rows whose quasi-identifier combination is held
  by fewer than k distinct devices are removed. k counts devices, not rows: a hundred
  frames of one car in a cell identify that car. Each run enforces k on what it writes;
  equivalence classes only grow when runs add rows, so k holds for the whole table.
* ℓ-diversity - for each sensitive attribute, the fewest distinct values any equivalence
  class written has (reported, not enforced), found by :func:`enforce_k_anonymity` in its
  cells.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

EARTH_RADIUS_M = 6_371_008.8


def mesh_code(lat: Column, lon: Column, level: int) -> Column:
    """The JIS X 0410 grid square code of each point, as a string (null for a null point).

    The digits are put together as one integer and turned to text once, not formatted
    pair by pair: the code is built twice per anonymized table (its cells and its write),
    so its per-row cost counts twice. The code's domain is Japan's: first pair of digits
    = lat x 1.5 (30-69), second = lon - 100 (22-54), so every pair has two digits.
    """
    from pyspark.sql import functions as F

    i3 = F.floor(lat * 120).cast("long")  # 1 km mesh rows since the equator (30")
    j3 = F.floor((lon - 100) * 80).cast("long")  # 1 km mesh columns since 100°E (45")
    code = F.floor(i3 / 80) * 100 + F.floor(j3 / 80)
    if level >= 2:
        code = code * 100 + F.floor(F.pmod(i3, 80) / 10) * 10 + F.floor(F.pmod(j3, 80) / 10)
    if level >= 3:
        code = code * 100 + F.pmod(i3, 10) * 10 + F.pmod(j3, 10)
    for sub in range(4, level + 1):  # halves, quarters: 1 SW, 2 SE, 3 NW, 4 NE
        scale = 2 ** (sub - 3)
        s = F.pmod(F.floor(lat * 120 * scale).cast("long"), 2)
        t = F.pmod(F.floor((lon - 100) * 80 * scale).cast("long"), 2)
        code = code * 10 + s * 2 + t + 1
    digits = {1: 4, 2: 6}.get(level, 8 + max(0, level - 3))
    return F.when(lat.isNull() | lon.isNull(), F.lit(None)).otherwise(F.lpad(code.cast("string"), digits, "0"))


def time_bucket(ts: Column, minutes: int) -> Column:
    """Start of the ``minutes``-wide bucket holding each timestamp."""
    from pyspark.sql import functions as F

    seconds = minutes * 60
    return F.timestamp_seconds(F.floor(F.unix_seconds(ts) / seconds) * seconds)


def band(value: Column, width: float) -> Column:
    """Lower edge of the ``width``-wide band holding each value."""
    from pyspark.sql import functions as F

    return F.floor(value / width) * F.lit(width)


TRIP_END = "_trip_end"


def trip_ends(ts: Any, lat: Any, lon: Any, trim_m: float, gap_s: int) -> np.ndarray:
    """Of one device's frames: whether each is within ``trim_m`` metres of its trip's start or end.

    ``ts`` (Arrow timestamps), ``lat`` and ``lon`` (Arrow doubles) hold the frames in any
    order; ties in time are walked in the order given. A trip is a run of frames without a
    gap over ``gap_s``; each frame's distance from its trip's start and to its end is the
    sum of the great-circle steps between them. A frame with no position or time adds no
    step and is always an end, never kept by accident.

    Vectorized over the device (a sort and running sums, no Python per row): as Spark
    windows, the walk took two sorts of the rows, one by device and time, one by trip.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    has_t = pc.is_valid(ts).to_numpy(zero_copy_only=False)
    millis = pc.fill_null(pc.cast(ts, pa.int64()), 0).to_numpy(zero_copy_only=False) // 1000  # Spark's microseconds
    order = np.argsort(np.where(has_t, millis, np.iinfo(np.int64).min), kind="stable")  # no time first, as Spark sorts
    t, has_t = millis[order], has_t[order]
    la = np.asarray(lat.to_numpy(zero_copy_only=False), dtype=float)[order]  # null -> NaN
    lo = np.asarray(lon.to_numpy(zero_copy_only=False), dtype=float)[order]
    new_trip = np.ones(n, dtype=bool)
    step = np.zeros(n)
    if n > 1:
        new_trip[1:] = ~has_t[1:] | ~has_t[:-1] | (np.diff(t) > gap_s * 1000)
        p1, p2 = np.radians(la[:-1]), np.radians(la[1:])
        h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lo[1:] - lo[:-1]) / 2) ** 2
        step[1:] = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    step[new_trip | np.isnan(step)] = 0.0
    walked = np.cumsum(step)  # since the device's first frame; a trip's first step is 0
    trip = np.cumsum(new_trip) - 1
    starts = np.flatnonzero(new_trip)
    lasts = np.append(starts[1:] - 1, n - 1)
    from_start, to_end = walked - walked[starts][trip], walked[lasts][trip] - walked
    kept = has_t & ~np.isnan(la) & ~np.isnan(lo) & (from_start >= trim_m) & (to_end >= trim_m)
    ends = np.empty(n, dtype=bool)
    ends[order] = ~kept
    return ends


def trip_ends_among(rows: Any, among: np.ndarray, ts: str, lat: str, lon: str, trim_m: float, gap_s: int) -> np.ndarray:
    """:func:`trip_ends` of the rows of Arrow table ``rows`` where ``among`` holds; False elsewhere."""
    import pyarrow as pa

    ends = np.zeros(len(rows), dtype=bool)
    walked = pa.array(np.flatnonzero(among))
    ends[among] = trip_ends(rows[ts].take(walked), rows[lat].take(walked), rows[lon].take(walked), trim_m, gap_s)
    return ends


def mark_trip_ends(
    df: DataFrame, device: str, ts: str, lat: str, lon: str, trim_m: float, gap_s: int, among: Column | None = None
) -> DataFrame:
    """``df`` with ``_trip_end``: whether each frame is within ``trim_m`` of its trip's start or end.

    Only the frames where ``among`` holds (default: all) make up trips; the others are
    marked null. Each device's frames are walked by :func:`trip_ends` in one Arrow batch.
    """
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, StructField, StructType

    part = F.coalesce(among, F.lit(False)) if among is not None else F.lit(True)
    schema = StructType([*df.schema.fields, StructField(TRIP_END, BooleanType())])

    def walk(table: pa.Table) -> pa.Table:
        inside = table["_part"].to_numpy(zero_copy_only=False)
        ends = trip_ends_among(table, inside, ts, lat, lon, trim_m, gap_s)
        return table.drop_columns(["_part"]).append_column(TRIP_END, pa.array(ends, mask=~inside))

    return df.withColumn("_part", part).groupBy(device).applyInArrow(walk, schema)


def trim_trips(df: DataFrame, device: str, ts: str, lat: str, lon: str, trim_m: float, gap_s: int) -> DataFrame:
    """``df`` without the frames within ``trim_m`` metres of a trip's start or end."""
    return mark_trip_ends(df, device, ts, lat, lon, trim_m, gap_s).where(f"NOT {TRIP_END}").drop(TRIP_END)


@dataclass
class KAnonymity:
    """What enforcing k did to one batch."""

    k: int
    suppressed_values: dict[str, int] = field(default_factory=dict)
    suppressed_rows: int = 0
    k_achieved: int | None = None  # fewest devices in any class written; None when nothing was written
    l_diversity: dict[str, int | None] = field(
        default_factory=dict
    )  # sensitive attribute -> fewest distinct values in a class written


def cells_of(df: DataFrame, device: str, quasi: Sequence[str], sensitive: Sequence[str] = ()) -> DataFrame:
    """``df`` by device and quasi-identifiers: ``device``, ``quasi``, ``_rows`` and, per sensitive
    attribute ``i``, ``_l_i``: its distinct values. What :func:`enforce_k_anonymity` decides on."""
    from pyspark.sql import functions as F

    return df.groupBy(device, *quasi).agg(
        F.count(F.lit(1)).alias("_rows"), *[F.collect_set(s).alias(f"_l_{i}") for i, s in enumerate(sensitive)]
    )


def decide_k_anonymity(
    cells: Iterable[Mapping[str, Any]], device: str, quasi: Sequence[str], k: int, sensitive: Sequence[str] = ()
) -> tuple[dict[str, set], list[tuple], KAnonymity]:
    """What :func:`enforce_k_anonymity` does to the rows, decided on their cells alone.

    ``cells`` are rows as :func:`cells_of` makes them. Returns the rare values per
    quasi-identifier (held by fewer than ``k`` devices: suppressed to null), the
    quasi-identifier combinations kept after that (classes of at least ``k`` devices),
    and the counts. Plain Python: a run's cells are devices x places x hours, thousands,
    and deciding on the driver takes one Spark job (collecting them) where grouping them
    in Spark takes one per quasi-identifier and one for the classes.
    """
    stats = KAnonymity(k)
    cells = list(cells)
    rare: dict[str, set] = {}
    for q in quasi:
        holders: dict[Any, set] = defaultdict(set)
        rows: dict[Any, int] = defaultdict(int)
        for c in cells:
            if c[q] is not None:
                holders[c[q]].add(c[device])
                rows[c[q]] += c["_rows"]
        rare[q] = {v for v, held in holders.items() if len(held) < k}
        stats.suppressed_values[q] = sum(rows[v] for v in rare[q])
    devices: dict[tuple, set] = defaultdict(set)
    rows_in: dict[tuple, int] = defaultdict(int)
    values: dict[tuple, list[set]] = defaultdict(lambda: [set() for _ in sensitive])
    for c in cells:
        key = tuple(None if c[q] in rare[q] else c[q] for q in quasi)
        devices[key].add(c[device])
        rows_in[key] += c["_rows"]
        for i in range(len(sensitive)):
            values[key][i].update(c[f"_l_{i}"])
    kept = [key for key, held in devices.items() if len(held) >= k]
    stats.suppressed_rows = sum(n for key, n in rows_in.items() if len(devices[key]) < k)
    stats.k_achieved = min((len(devices[key]) for key in kept), default=None)
    stats.l_diversity = (
        {s: min((len(values[key][i]) for key in kept), default=None) for i, s in enumerate(sensitive)} if quasi else {}
    )
    return rare, kept, stats


def enforce_k_anonymity(
    df: DataFrame,
    device: str,
    quasi: Sequence[str],
    k: int,
    sensitive: Sequence[str] = (),
    cells: DataFrame | None = None,
) -> tuple[DataFrame, KAnonymity]:
    """Suppress rare quasi-identifier values, then drop rows in classes of fewer than ``k`` devices.

    Everything is decided on ``cells`` (:func:`cells_of`): rows aggregated by device and
    quasi-identifiers (thousands of rows where the input has millions), by
    :func:`decide_k_anonymity`; then one broadcast join applies the decision to ``df``.
    The cells also carry each ``sensitive`` attribute's distinct values, so the ℓ-diversity
    of the classes kept comes from them, with no pass over the rows. A job that has the
    cells already (from a pass it makes anyway) passes them, and ``df`` then needs no
    ``device`` column. Returns the kept rows and the counts.
    """
    from pyspark.sql import functions as F

    if cells is None:
        cells = cells_of(df, device, quasi, sensitive)
    rare, kept, stats = decide_k_anonymity(cells.collect(), device, quasi, k, sensitive)
    out = df
    for q in quasi:
        if rare[q]:
            out = out.withColumn(q, F.when(F.col(q).isin(list(rare[q])), F.lit(None)).otherwise(F.col(q)))
    allowed = df.sparkSession.createDataFrame(kept, out.select(*quasi).schema)  # suppressed columns are nullable
    joined = out.join(F.broadcast(allowed), [out[q].eqNullSafe(allowed[q]) for q in quasi], "left_semi")
    return joined, stats
