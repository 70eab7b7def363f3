"""The first pass's per-device step (Arrow in, side rows out), without Spark."""

from __future__ import annotations

import pyarrow as pa

from refinement.anonymize import TRIP_END
from refinement.silver import DeviceWalk

M_PER_DEG_LAT = 111_195.08
SECOND = 1_000_000


def device_rows(
    rules: list[str | None],
    notes: dict[int, str] | None = None,
    mesh: list[str | None] | None = None,
    flags: list[bool | None] | None = None,
    jump: dict[int, float] | None = None,
) -> pa.Table:
    """One device's frames, 1 s and 50 m apart, in one trip (``jump``: metres north added to some)."""
    n = len(rules)
    notes, jump = notes or {}, jump or {}
    return pa.table(
        {
            "_device_id": pa.array(["car-1"] * n),
            "_seq": pa.array(range(1, n + 1), pa.int64()),
            "_rule": pa.array(rules, pa.string()),
            "driver_note": pa.array([notes.get(i) for i in range(n)], pa.string()),
            "ts": pa.array([i * SECOND for i in range(n)], pa.timestamp("us", tz="UTC")),
            "lat": pa.array([35.0 + (i * 50 + jump.get(i, 0)) / M_PER_DEG_LAT for i in range(n)]),
            "lon": pa.array([139.0] * n),
            "_c0_q0": pa.array(mesh if mesh is not None else ["5339"] * n, pa.string()),
            "_c0_s0": pa.array(flags if flags is not None else [False] * n, pa.bool_()),
        }
    )


WALK = DeviceWalk(("driver_note",), (120.0, 300), ((1, 1, True),))


def test_side_rows_are_failing_noted_trip_ends_and_cell_heads() -> None:
    rules: list[str | None] = [None] * 11
    rules[1] = "speed-plausible"  # a GPS glitch 2 km off the road, at the start of the trip
    out = WALK(device_rows(rules, notes={4: "渋滞"}, jump={1: 2000.0})).to_pylist()
    by_seq = {r["_seq"]: r for r in out}
    assert by_seq[2]["_rule"] == "speed-plausible" and by_seq[2][TRIP_END] is None
    # The failing frame is not walked, or seq 3 would be 4 km from the start: the trip is seq
    # 1, 3..11, 500 m long; 120 m from both ends keeps seq 4..8 (150..350 m).
    ends = sorted(s for s, r in by_seq.items() if r[TRIP_END])
    assert ends == [1, 3, 9, 10, 11]
    assert by_seq[5]["driver_note"] == "渋滞" and not by_seq[5][TRIP_END]
    # one cell: the 5 kept frames, headed by the lowest seq
    heads = [r for r in out if r["_c0_rows"] is not None]
    assert [(r["_seq"], r["_c0_q0"], r["_c0_rows"], r["_c0_l0"]) for r in heads] == [(4, "5339", 5, [False])]
    assert set(by_seq) == {1, 2, 3, 4, 5, 9, 10, 11}  # seq 6..8: kept, noteless, heading no cell


def test_cells_split_by_quasi_identifier_and_gather_sensitive_values_without_nulls() -> None:
    mesh = ["A"] * 6 + ["B"] * 5
    flags: list[bool | None] = [False, False, False, True, None, False, False, True, True, None, False]
    out = DeviceWalk((), None, ((1, 1, False),))(device_rows([None] * 11, mesh=mesh, flags=flags)).to_pylist()
    cells = {r["_c0_q0"]: (r["_seq"], r["_c0_rows"], sorted(r["_c0_l0"])) for r in out if r["_c0_rows"] is not None}
    assert cells == {"A": (1, 6, [False, True]), "B": (7, 5, [False, True])}
    assert len(out) == 2  # no trips trimmed, no notes, no failures: only the heads


def test_a_device_whose_rows_all_fail_has_no_trips_and_no_cells() -> None:
    out = WALK(device_rows(["time-monotonic"] * 4)).to_pylist()
    assert [r["_rule"] for r in out] == ["time-monotonic"] * 4
    assert all(r[TRIP_END] is None and r["_c0_rows"] is None for r in out)
