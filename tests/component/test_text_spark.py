"""Note scrubber on Spark: the Arrow path gives what ``NoteScrubber.scrub`` gives, with counts."""

from __future__ import annotations

from refinement.text import PLACEHOLDER_TYPES, NoteScrubber, redaction_totals, scrub_column

NOTES = [
    "本日田中さんから連絡あり。折り返しは090-1234-5678まで。",
    "Driver Michael Brown reported a flat tyre near 221B Baker Street, London.",
    None,
    "",
    "車両品川 300 あ 12-34、VIN JTDKB20U093456789 の点検。",
    "Nothing to report today.",
]


def test_scrub_column_matches_scrub(spark) -> None:
    df = spark.createDataFrame([(i, n) for i, n in enumerate(NOTES)], "id INT, note STRING").repartition(2)
    out = scrub_column(df, "note", "note_clean")
    rows = sorted(out.collect(), key=lambda r: r["id"])

    expected = NoteScrubber().scrub_many(NOTES)
    assert [r["note"] for r in rows] == NOTES  # other columns pass through
    assert [r["note_clean"] for r in rows] == [e.text for e in expected]
    for row, e in zip(rows, expected, strict=True):
        assert row["note_clean_redactions"].asDict() == {t: e.counts.get(t, 0) for t in PLACEHOLDER_TYPES}

    totals = redaction_totals(out, "note_clean_redactions")
    assert totals == {t: sum(e.counts.get(t, 0) for e in expected) for t in PLACEHOLDER_TYPES}
    assert totals["PHONE"] == 1 and totals["PERSON"] == 2 and totals["PLATE"] == 1


def test_scrub_column_overwrites_by_default(spark) -> None:
    df = spark.createDataFrame([("Call me on 080-1111-2222",)], "note STRING")
    out = scrub_column(df, "note")
    assert out.columns == ["note", "note_redactions"]
    assert out.first()["note"] == "Call me on [PHONE]"
