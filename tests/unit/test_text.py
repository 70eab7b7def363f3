"""Note scrubber: recall per type on a hand-labelled Japanese/English set, over-redaction, edge cases.

``data/notes_labelled.jsonl`` holds 236 notes (118 Japanese, 118 English; 70 without any
identifier), each ``{split, lang, text, spans: [{start, end, type}]}``. The ``dev`` split
(160) was written before the scrubber and then used to tune it; the ``holdout`` split (76)
was written afterwards and scored once before any further change: on it the first
scrubber caught every pattern identifier and address but only 19 of 26 names (0.73), the
misses being names outside the gazetteers without a cue. Two generic rules (any name
before an honorific; a capitalised name after "call/for/with…") were added after that,
so today's holdout figure is optimistic. The floors below are therefore set at what the
data supports, not at today's score: the fixed-format types are matched by pattern and
must stay ≥ 0.98; names ≥ 0.85 and addresses ≥ 0.90 leave room for the unseen-name gap.

Identifiers named by a cue rather than shaped like one came later, 26 notes in both splits
(dev 16, holdout 10): a VIN of letters only or copied in pieces, a 車台番号 without its
hyphen or in full width, phone numbers with slashes, dots or spaced dashes, a plate given
by its serial after ナンバー/plate no., and six notes where a cue word stands with no
identifier after it. The scrubber of the day caught none of their 20 identifiers; the
holdout ten were then left aside while the cue rules were written on the dev ones.

A gold span counts as caught when every non-space character of it is inside some
placeholder (privacy needs it gone; which placeholder is reported separately).

Every test runs for both recognizers of Japanese names and places: Sudachi's dictionary
(the default) and the GiNZA model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from refinement.text import PLACEHOLDER_TYPES, SUDACHI, NoteScrubber, ScrubberConfig, ScrubResult

DATA = Path(__file__).parent / "data" / "notes_labelled.jsonl"
PATTERN_TYPES = ("PHONE", "VIN", "CHASSIS", "LICENCE", "MY_NUMBER", "PLATE", "EMAIL")
FLOORS = {**dict.fromkeys(PATTERN_TYPES, 0.98), "PERSON": 0.85, "ADDRESS": 0.90}
OVERALL_FLOOR = 0.95
CLEAN_FP_CEILING = 0.05  # share of identifier-free notes with any redaction


@pytest.fixture(scope="module", params=[SUDACHI, "ja_ginza"])
def scrubber(request: pytest.FixtureRequest) -> NoteScrubber:
    return NoteScrubber(ScrubberConfig(model=request.param))


@pytest.fixture(scope="module")
def labelled() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scored(scrubber: NoteScrubber, labelled: list[dict]) -> dict:
    results = scrubber.scrub_many(row["text"] for row in labelled)
    caught, typed, total = Counter(), Counter(), Counter()
    split_caught, split_total = Counter(), Counter()
    fp_notes = over_chars = clean = 0
    for row, res in zip(labelled, results, strict=True):
        text = row["text"]
        covered = [False] * len(text)
        for s in res.spans:
            covered[s.start : s.end] = [True] * (s.end - s.start)
        gold = [False] * len(text)
        for g in row["spans"]:
            gold[g["start"] : g["end"]] = [True] * (g["end"] - g["start"])
            total[g["type"]] += 1
            split_total[row["split"]] += 1
            if all(covered[i] for i in range(g["start"], g["end"]) if not text[i].isspace()):
                caught[g["type"]] += 1
                split_caught[row["split"]] += 1
                typed[g["type"]] += any(
                    s.type == g["type"] and s.start < g["end"] and g["start"] < s.end for s in res.spans
                )
        over_chars += sum(c and not g and not ch.isspace() for c, g, ch in zip(covered, gold, text, strict=True))
        if not row["spans"]:
            clean += 1
            fp_notes += bool(res.spans)
    return {
        "caught": caught,
        "typed": typed,
        "total": total,
        "fp_notes": fp_notes,
        "clean": clean,
        "over_chars": over_chars,
        "chars": sum(len(r["text"]) for r in labelled),
        "split": {k: split_caught[k] / split_total[k] for k in split_total},
    }


def test_labelled_set_is_balanced_and_large_enough(labelled: list[dict]) -> None:
    langs = Counter(row["lang"] for row in labelled)
    assert len(labelled) >= 120 and abs(langs["ja"] - langs["en"]) <= 0.2 * len(labelled)
    assert sum(not row["spans"] for row in labelled) >= 30
    assert {s["type"] for row in labelled for s in row["spans"]} == set(PLACEHOLDER_TYPES)


def test_recall_per_type_and_overall(scored: dict) -> None:
    caught, typed, total = scored["caught"], scored["typed"], scored["total"]
    for t in PLACEHOLDER_TYPES:
        print(f"{t:10s} recall {caught[t] / total[t]:.3f} ({caught[t]}/{total[t]}), right type {typed[t]}/{total[t]}")
    overall = sum(caught.values()) / sum(total.values())
    print(f"overall    recall {overall:.3f}; by split {scored['split']}")
    low = {t: round(caught[t] / total[t], 3) for t in PLACEHOLDER_TYPES if caught[t] / total[t] < FLOORS[t]}
    assert not low, f"recall under its floor: {low}"
    assert overall >= OVERALL_FLOOR


def test_false_positives_on_clean_notes(scored: dict) -> None:
    rate = scored["fp_notes"] / scored["clean"]
    print(
        f"clean notes with a redaction: {scored['fp_notes']}/{scored['clean']} ({rate:.3f}); "
        f"over-redacted chars {scored['over_chars']}/{scored['chars']}"
    )
    assert rate <= CLEAN_FP_CEILING
    assert scored["over_chars"] / scored["chars"] <= 0.01


@pytest.mark.parametrize("text", [None, ""])
def test_missing_or_empty_note_comes_back_unchanged(scrubber: NoteScrubber, text: str | None) -> None:
    assert scrubber.scrub(text) == ScrubResult(text)


def test_full_width_digits_and_kana_dash(scrubber: NoteScrubber) -> None:
    res = scrubber.scrub("携帯は０９０ー１２３４ー５６７８、車台番号ＺＶＷ３０−１２３４５６７")
    assert res.text == "携帯は[PHONE]、車台番号[CHASSIS]"
    assert res.counts == {"PHONE": 1, "CHASSIS": 1}


def test_identifiers_glued_to_japanese_text(scrubber: NoteScrubber) -> None:
    res = scrubber.scrub("至急09012345678へ連絡し、品川300あ12-34を回収。メールはa.b@example.jpまで")
    assert res.text == "至急[PHONE]へ連絡し、[PLATE]を回収。メールは[EMAIL]まで"


def test_twelve_digits_typed_by_context(scrubber: NoteScrubber) -> None:
    assert scrubber.scrub("運転免許証 123456789012").counts == {"LICENCE": 1}
    assert scrubber.scrub("マイナンバー 123456789012").counts == {"MY_NUMBER": 1}
    assert scrubber.scrub("my number: 1234-5678-9012").text == "my number: [MY_NUMBER]"


@pytest.mark.parametrize(
    ("note", "scrubbed"),
    [
        # the silver note of the issue: a VIN drawn without a digit
        ("VIN WVPKFNLRTXZJTCDBX の点検記録を更新。", "VIN [VIN] の点検記録を更新。"),
        ("VINWVPKFNLRTXZJTCDBXの点検", "VIN[VIN]の点検"),  # glued on both sides: stops before の
        ("Updated service log for VIN WVPKFNLRTXZJTCDBX.", "Updated service log for VIN [VIN]."),
        ("VIN: ＪＨＭＺＷＸＫＰＢＲＳＴＵＶＷＸＹ、未登録。", "VIN: [VIN]、未登録。"),
        ("VIN 1HGCM826 33A004352 on the title", "VIN [VIN] on the title"),  # split, 17 together
        ("車台番号ZVW301234567の車両", "車台番号[CHASSIS]の車両"),  # hyphen left out
        ("車体番号：ＮＨＰ１０　６０１２３４５、リコール対象。", "車体番号：[CHASSIS]、リコール対象。"),
        ("シャシー番号 DA17V123456 を控えた。", "シャシー番号 [CHASSIS] を控えた。"),
        ("Chassis no. ZVW30 1234567 per the papers.", "Chassis no. [CHASSIS] per the papers."),
        ("電話：０９０／１２３４／５６７８まで", "電話：[PHONE]まで"),
        ("電話 090 - 1234 - 5678 に連絡済み。", "電話 [PHONE] に連絡済み。"),
        ("TEL 03・5555・0199（事務所）", "TEL [PHONE]（事務所）"),
        ("電話（070 1111 2222）、10時以降", "電話（[PHONE]）、10時以降"),
        ("Customer phone 5555-0199, no area code.", "Customer phone [PHONE], no area code."),
        ("ナンバー1234の白いバン", "ナンバー[PLATE]の白いバン"),
        ("ナンバー・・12の軽トラ", "ナンバー[PLATE]の軽トラ"),
        ("Plate no. 1234 reversed into bay 2.", "Plate no. [PLATE] reversed into bay 2."),
    ],
)
def test_cued_identifiers_are_masked_whatever_their_shape(scrubber: NoteScrubber, note: str, scrubbed: str) -> None:
    assert scrubber.scrub(note).text == scrubbed


@pytest.mark.parametrize(
    "note",
    [
        "VIN plate is scratched but readable.",
        "VIN verification pending, odometer 123,456 km.",
        "電話で報告済み。ナンバー灯が切れていたので交換。",
        "シリアルナンバー 123456 を控えた。",
        "Replaced plate 3 of the press die; phone call at 14:30.",
        "電話 3回かけたが不在、TEL 内線120へ。",
    ],
)
def test_cue_words_without_an_identifier_mask_nothing(scrubber: NoteScrubber, note: str) -> None:
    assert scrubber.scrub(note).text == note


def test_numbers_that_are_not_identifiers_survive(scrubber: NoteScrubber) -> None:
    text = "Odometer 123,456 km, lot 20250115-03, error E-4012, 14:05-14:20, part 88213-4."
    assert scrubber.scrub(text).text == text


def test_scrub_many_matches_scrub(scrubber: NoteScrubber, labelled: list[dict]) -> None:
    texts = [row["text"] for row in labelled[::15]] + [None]
    assert scrubber.scrub_many(texts) == [scrubber.scrub(t) for t in texts]


def test_default_recognizer_is_sudachi() -> None:
    assert NoteScrubber().config.model == SUDACHI


@pytest.mark.parametrize(
    ("note", "scrubbed"),
    [
        ("高橋健一が担当。", "[PERSON]が担当。"),  # family and given name: one placeholder
        ("ジョン・スミスが同乗。", "[PERSON]が同乗。"),  # katakana words joined by a middle dot
        ("帯広の倉庫へ配送。", "[ADDRESS]の倉庫へ配送。"),
    ],
)
def test_names_come_out_whole(scrubber: NoteScrubber, note: str, scrubbed: str) -> None:
    assert scrubber.scrub(note).text == scrubbed


@pytest.mark.parametrize(
    "note", ["勅使河原が荷物を受け取った。", "小鳥遊と一緒に点検した。", "グエンが右折時に急ブレーキ。"]
)
def test_rare_names_without_a_cue_are_found_by_the_dictionary(note: str) -> None:
    # Outside the gazetteers, with no honorific: only the recognizer can know them (GiNZA
    # misses 小鳥遊, a surname Sudachi's dictionary lists).
    assert NoteScrubber().scrub(note).text.startswith("[PERSON]")


def test_ginza_multiplies_through_numpy_blas() -> None:
    # The tok2vec is nearly all matrix products; thinc's bundled blis ran them at a third of
    # numpy's BLAS speed on this machine family.
    nlp = NoteScrubber(ScrubberConfig(model="ja_ginza"))._model()
    assert nlp.get_pipe("tok2vec").model.ops.use_blis is False


def test_generated_notes_are_deterministic_and_scrubbable(scrubber: NoteScrubber) -> None:
    import random

    from ingestion.simulator.notes import note

    assert [note(random.Random(i)) for i in range(300)] == [note(random.Random(i)) for i in range(300)]
    assert {note(random.Random(i), "en") for i in range(50)} != {note(random.Random(i), "ja") for i in range(50)}
    rng = random.Random(1)
    notes = [note(rng) for _ in range(300)]
    assert 0.2 < notes.count(None) / len(notes) < 0.5
    results = scrubber.scrub_many(notes)
    redacted = sum(bool(r.spans) for r in results)
    assert 0.1 < redacted / len(notes) < 0.4  # identifiers are planted in some notes, not most
    # nothing the simulator plants survives: no e-mail, no VIN after its cue, no run of digits
    assert not [r.text for r in results if r.text and re.search(r"@|VIN ?[A-Z0-9]|[0-9]{3}", r.text)]
