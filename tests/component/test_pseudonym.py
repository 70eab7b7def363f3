"""Keyed pseudonyms on Spark: every row gets its own values' pseudonyms through the one join."""

from __future__ import annotations

import pytest

from fieldloop.keys import PseudonymKey
from refinement.pseudonym import KEY_ID_COLUMN, pseudonym, pseudonymize

KEY = PseudonymKey("acme", "k-test", b"s" * 32)
FIELDS = {"vin": "vehicle", "driver_id": "driver", "unit": "device"}
ROWS = [
    (1, "V1", "d-1", 7),
    (2, "V1", "d-2", 7),
    (3, "V2", "d-1", 8),
    (4, "V2", None, 8),  # a combination with a null: matched null-safely, the null stays null
    (5, None, None, None),
    (6, "V1", "d-1", 7),
]


@pytest.fixture
def frames(spark):
    return spark.createDataFrame(ROWS, "n INT, vin STRING, driver_id STRING, unit INT")


def expected(row: tuple) -> dict:
    _, vin, driver, unit = row
    return {
        "vin": vin and pseudonym(KEY, "vehicle", vin),
        "driver_id": driver and pseudonym(KEY, "driver", driver),
        "unit": None if unit is None else pseudonym(KEY, "device", str(unit)),
        KEY_ID_COLUMN: "k-test",
    }


def by_n(df) -> dict[int, dict]:
    return {r["n"]: {c: r[c] for c in (*FIELDS, KEY_ID_COLUMN)} for r in df.collect()}


def test_each_row_gets_the_pseudonyms_of_its_own_values(frames) -> None:
    out = pseudonymize(frames, FIELDS, KEY)
    assert out.count() == len(ROWS)
    assert by_n(out) == {row[0]: expected(row) for row in ROWS}


def test_given_combinations_may_be_a_superset(frames) -> None:
    combos = {(vin, driver, None if unit is None else str(unit)) for _, vin, driver, unit in ROWS}
    out = pseudonymize(frames, FIELDS, KEY, values=[*combos, ("V9", "d-9", "9")])
    assert by_n(out) == {row[0]: expected(row) for row in ROWS}


def test_pseudonyms_depend_on_the_domain_not_only_the_value(spark) -> None:
    df = spark.createDataFrame([("X", "X")], "vin STRING, driver_id STRING")
    [row] = pseudonymize(df, {"vin": "vehicle", "driver_id": "driver"}, KEY).collect()
    assert row["vin"] != row["driver_id"] and row["vin"].startswith("p1")
