"""Driver and operator notes for the fleet simulator: mostly routine, sometimes with identifiers.

Field devices carry an optional free-text note that people type on a tablet or a
teach pendant. :func:`note` draws one from a :class:`random.Random`, so the simulator's
output stays deterministic for a seed. About a third of the draws are ``None`` (no note),
most notes are routine, and some plant identifiers (names, phones, plates, VINs,
車台番号, addresses, e-mails) that the refinement stage must scrub
(:mod:`refinement.text`) before silver. The identifiers are shaped as in the field: a VIN
from the generator the vehicles use (numeric serial, check digit), a 車台番号 as model code
and serial, phone numbers and plates as Japan writes them.
"""

from __future__ import annotations

import random

import numpy as np

from ingestion.simulator.vin import make_vin

NO_NOTE_SHARE = 0.35
IDENTIFIER_SHARE = 0.3  # of the notes that exist

_JA_ROUTINE = (
    "タイヤ空気圧を調整。",
    "荷台の固定具を再確認した。",
    "休憩後に運転再開。",
    "エンジン始動時に異音なし。",
    "ハンドリング中にワークを一度落下、再把持で完了。",
    "出銑温度に異常なし。",
    "グリスアップ実施。",
    "ウォッシャー液を補充。",
    "センサーのキャリブレーション完了。",
    "渋滞のため到着が遅れる見込み。",
)
_EN_ROUTINE = (
    "Topped up washer fluid.",
    "Re-checked the load straps.",
    "Resumed after break.",
    "No issues on cold start.",
    "Dropped a part once during pick, re-gripped fine.",
    "Tap temperature normal.",
    "Greased joint 4.",
    "Sensor calibration done.",
    "Traffic is heavy, expect a delay.",
    "Cab heater stuck on high.",
)
_JA_FAMILY = ("佐藤", "高橋", "中島", "藤原", "村上", "青木", "松田", "菅原")
_JA_GIVEN = ("大輔", "直子", "拓海", "恵", "浩二", "さくら")
_EN_FIRST = ("Alice", "Brian", "Grace", "Kevin", "Hannah", "Raj", "Mei", "Tomasz")
_EN_LAST = ("Carter", "Nguyen", "Fischer", "Okafor", "Hughes", "Sato", "Kowalczyk", "Moreno")
_PLATE_REGIONS = ("品川", "多摩", "所沢", "名古屋", "神戸", "福岡", "札幌", "つくば")
_PLATE_KANA = "あいうえかきくけこさすせそたちつてとなにぬねのはひふほまみむめもやゆよらりるれろわ"
_JA_PLACES = (
    "東京都江東区有明3-5-7",
    "大阪府堺市北区新金岡町2-1",
    "愛知県名古屋市港区金城ふ頭1丁目",
    "福岡県北九州市小倉北区浅野1-1",
    "埼玉県川口市本町4丁目",
)
_EN_PLACES = (
    "88 Harbor Road, Kobe",
    "5-3-1 Toyosu, Koto-ku, Tokyo",
    "17 Queen Street, Auckland",
    "2-1 Nishi-Shinjuku, Shinjuku-ku",
)
_WMIS = ("JTD", "JN1", "JHM", "JM1", "JF1", "WVW", "1HG")  # VIN maker codes: Toyota .. VW, Honda US
# 車台番号: a model code and the serial length its maker uses (Toyota and Honda 7, Nissan and Suzuki 6).
_MODEL_CODES = (
    ("ZVW30", 7),
    ("NHP10", 7),
    ("NZE161", 7),
    ("MXPA10", 7),
    ("ZRR80W", 7),
    ("GP5", 7),
    ("LA650S", 7),
    ("E12", 6),
    ("DA17V", 6),
)


def _phone(rng: random.Random) -> str:
    kind = rng.random()
    # A subscriber number never starts with 0, nor a landline exchange with 1 (110, 119, ...).
    if kind < 0.6:
        return f"0{rng.choice('789')}0-{rng.randrange(1000, 10_000)}-{rng.randrange(10_000):04d}"
    if kind < 0.85:  # landline: area code and exchange together make six digits
        area = rng.choice(("3", "6", "45", "52"))
        exchange = rng.randrange(2 * 10 ** (4 - len(area)), 10 ** (5 - len(area)))
        return f"0{area}-{exchange}-{rng.randrange(10_000):04d}"
    return f"+81-{rng.choice('789')}0-{rng.randrange(1000, 10_000)}-{rng.randrange(10_000):04d}"


def _plate(rng: random.Random) -> str:
    serial = rng.randrange(1, 10_000)
    shown = f"{serial // 100}-{serial % 100:02d}" if serial >= 1000 else f"{serial:・>4}"
    return f"{rng.choice(_PLATE_REGIONS)} {rng.randrange(100, 600)} {rng.choice(_PLATE_KANA)} {shown}"


def _vin(rng: random.Random) -> str:
    """A VIN as the vehicles have them (:func:`make_vin`), drawn from the note's own stream."""
    return make_vin(np.random.default_rng(rng.getrandbits(64)), rng.choice(_WMIS))


def _chassis(rng: random.Random) -> str:
    """A 車台番号 (Japan's frame number): model code, hyphen, serial (``ZVW30-1234567``)."""
    code, digits = rng.choice(_MODEL_CODES)
    return f"{code}-{rng.randrange(10**digits):0{digits}d}"


def _ja_person(rng: random.Random) -> str:
    return rng.choice(_JA_FAMILY) + (rng.choice(_JA_GIVEN) if rng.random() < 0.4 else "")


def _en_person(rng: random.Random) -> str:
    return f"{rng.choice(_EN_FIRST)} {rng.choice(_EN_LAST)}" if rng.random() < 0.7 else rng.choice(_EN_FIRST)


def _ja_identifying(rng: random.Random) -> str:
    who = _ja_person(rng)
    return rng.choice(
        (
            lambda: f"{who}さんに電話（{_phone(rng)}）。折り返し待ち。",
            lambda: f"車両{_plate(rng)}、オイル漏れの疑い。",
            lambda: f"{_JA_PLACES[rng.randrange(len(_JA_PLACES))]}で{who}様へ引き渡し。",
            lambda: f"VIN {_vin(rng)} の点検記録を更新。",
            lambda: f"車台番号{_chassis(rng)}の車検証を事務所に提出。",
            lambda: f"{who}主任が非常停止を解除。",
            lambda: f"報告書は{who}さんのアドレス d{rng.randrange(1000)}@example.jp へ送付。",
        )
    )()


def _en_identifying(rng: random.Random) -> str:
    who = _en_person(rng)
    return rng.choice(
        (
            lambda: f"Rang {who} on {_phone(rng)}, no answer.",
            lambda: f"Vehicle {_plate(rng)} leaking oil.",
            lambda: f"Handed over to {who} at {_EN_PLACES[rng.randrange(len(_EN_PLACES))]}.",
            lambda: f"Updated service log for VIN {_vin(rng)}.",
            lambda: f"Chassis no. {_chassis(rng)} is on the recall list.",
            lambda: f"Operator {who} reset the e-stop.",
            lambda: f"Sent the report to {who.split()[0].lower()}@example.com.",
        )
    )()


def note(rng: random.Random, lang: str | None = None) -> str | None:
    """A driver or operator note, or ``None`` when the device sent none.

    Args:
        rng: the caller's random source; the same state gives the same note.
        lang: ``"ja"`` or ``"en"``; ``None`` picks one (Japanese twice as often).

    Returns:
        The note text, or ``None``.

    Raises:
        ValueError: if ``lang`` is neither ``"ja"``, ``"en"`` nor ``None``.
    """
    if lang not in (None, "ja", "en"):
        raise ValueError(f"lang must be 'ja', 'en' or None, not {lang!r}")
    if rng.random() < NO_NOTE_SHARE:
        return None
    lang = lang or ("ja" if rng.random() < 2 / 3 else "en")
    if rng.random() < IDENTIFIER_SHARE:
        return _ja_identifying(rng) if lang == "ja" else _en_identifying(rng)
    return rng.choice(_JA_ROUTINE if lang == "ja" else _EN_ROUTINE)
