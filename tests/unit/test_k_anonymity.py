"""k-anonymity decided on cells, without Spark: what suppression does to the classes."""

from __future__ import annotations

from refinement.anonymize import decide_k_anonymity


def cell(device: str, place: str | None, hour: int, rows: int = 1, flags: tuple = (False,)) -> dict:
    return {"dev": device, "place": place, "hour": hour, "_rows": rows, "_l_0": list(flags)}


def test_rare_values_suppressed_to_null_can_make_a_class_of_k() -> None:
    # six devices, each alone in its place at 08:00: every place is rare, and once suppressed
    # the six share one class (place unknown, 08:00), which is kept
    cells = [cell(f"d{i}", f"P{i}", 8, rows=10, flags=(bool(i % 2),)) for i in range(6)]
    rare, kept, stats = decide_k_anonymity(cells, "dev", ["place", "hour"], k=5, sensitive=["flag"])
    assert rare == {"place": {f"P{i}" for i in range(6)}, "hour": set()}
    assert kept == [(None, 8)]
    assert stats.suppressed_values == {"place": 60, "hour": 0} and stats.suppressed_rows == 0
    assert stats.k_achieved == 6 and stats.l_diversity == {"flag": 2}


def test_k_counts_devices_not_rows_or_cells() -> None:
    # one device with many rows and two cells of the same class is still one device
    cells = [cell("d0", "A", 8, rows=500), cell("d0", "A", 8, rows=5)] + [cell(f"d{i}", "A", 8) for i in range(1, 4)]
    rare, kept, stats = decide_k_anonymity(cells, "dev", ["place", "hour"], k=5)
    assert rare == {"place": {"A"}, "hour": {8}}  # four devices hold each: both values are rare
    assert kept == [] and stats.k_achieved is None
    assert stats.suppressed_rows == 508 and stats.suppressed_values == {"place": 508, "hour": 508}


def test_no_cells_keep_nothing() -> None:
    _rare, kept, stats = decide_k_anonymity([], "dev", ["place"], k=5, sensitive=["flag"])
    assert kept == [] and stats.suppressed_rows == 0 and stats.l_diversity == {"flag": None}
