"""Rule-based finders for the note scrubber: identifier patterns, addresses, names by context.

Every finder works on a *folded view* of the note (:func:`fold`): the same length as the
original, with full-width digits and letters made ASCII and dash look-alikes made ``-``,
so one regex covers ``090-1234-5678`` and ``０９０−１２３４−５６７８`` and the spans it
returns index the original text unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import NamedTuple

from refinement._internal import gazetteer as gz

# Placeholder types, in the order reports list them.
PHONE, VIN, CHASSIS, LICENCE, MY_NUMBER, PLATE, EMAIL, PERSON, ADDRESS = (
    "PHONE",
    "VIN",
    "CHASSIS",
    "LICENCE",
    "MY_NUMBER",
    "PLATE",
    "EMAIL",
    "PERSON",
    "ADDRESS",
)
TYPES = (PHONE, VIN, CHASSIS, LICENCE, MY_NUMBER, PLATE, EMAIL, PERSON, ADDRESS)


class Span(NamedTuple):
    """A found identifier: ``text[start:end]`` is of ``type``; lower ``rank`` wins overlaps."""

    start: int
    end: int
    type: str
    rank: int = 5


# Folding ------------------------------------------------------------------------------
_DASHES = dict.fromkeys(map(ord, "‐‑‒–—―−﹣－"), "-")  # U+30FC (ー) is handled apart: it is also a kana


def _fold_char(c: str) -> str:
    if ord(c) < 0x80:
        return c
    if (mapped := _DASHES.get(ord(c))) is not None:
        return mapped
    folded = unicodedata.normalize("NFKC", c)
    # Only 1:1 foldings keep offsets aligned; "㈱" -> "(株)" stays as it is.
    return folded if len(folded) == 1 else c


_KANA_DASH_IN_NUMBER = re.compile(r"(?<=\d)[ーｰ](?=\d)")


def fold(text: str) -> str:
    """``text`` with full-width forms made ASCII and dashes unified, at the same offsets."""
    view = "".join(_fold_char(c) for c in text)
    # Japanese IMEs often type the long-vowel mark for the hyphen in "090ー1234ー5678".
    view = _KANA_DASH_IN_NUMBER.sub("-", view)
    if len(view) != len(text):  # pragma: no cover - guarded by construction
        raise AssertionError("fold changed the length of the text")
    return view


# Fixed-format identifiers -------------------------------------------------------------
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_S = r"[-\s.]"  # one separator in a phone number
_PHONE = re.compile(
    rf"""(?<![0-9A-Za-z+])(?:
      \+81{_S}?(?:\(0\){_S}?)?\d{{1,4}}{_S}?\d{{1,4}}{_S}?\d{{4}}   # +81-90-1234-5678, +81 3 1234 5678
    | \(0\d{{1,4}}\)\s?\d{{1,4}}{_S}\d{{4}}                          # (03) 3210-9876
    | 0\d{{1,4}}\(\d{{1,4}}\)\d{{4}}                                 # 06(6345)1234
    | 0\d{{1,4}}{_S}\d{{1,4}}{_S}\d{{3,4}}                           # 03-5555-1234, 0120-444-555
    | 0\d{{9,10}}                                                    # 09012345678
)(?![0-9])""",
    re.VERBOSE,
)
_VIN = re.compile(r"(?<![0-9A-Za-z])[A-HJ-NPR-Z0-9]{17}(?![0-9A-Za-z])", re.IGNORECASE)
# 車台番号: a model code (letters, then maybe digits and a letter or two), a hyphen, the serial.
_CHASSIS = re.compile(r"(?<![0-9A-Za-z-])[A-Z]{1,4}[0-9]{0,3}[A-Z]{0,2}-[0-9]{6,8}(?![0-9A-Za-z-])")
_TWELVE = re.compile(r"(?<![0-9])\d{4}([-\s]?)\d{4}\1\d{4}(?![0-9])")
_LICENCE_CUES = ("免許", "licen", "運転", "driver's", "dl no", "dl#")
_MY_NUMBER_CUES = ("マイナンバー", "個人番号", "my number", "mynumber", "individual number", "通知カード")
_KANA = "ぁ-ゖ"
_PLATE_REGION = "|".join(sorted(gz.PLATE_REGIONS, key=len, reverse=True))
_PLATE = re.compile(
    rf"""(?<![0-9])(?:(?:{_PLATE_REGION})\s?)?
    [0-9]{{2,3}}[A-Z]?\s?[{_KANA}]\s?            # class number and kana: "300 あ"
    (?:[0-9]{{1,2}}-[0-9]{{2}}|[・.]{{1,3}}\s?[0-9]{{1,3}}|[0-9]{{4}})(?![0-9])""",
    re.VERBOSE,
)


def _count_digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _phone_ok(s: str) -> bool:
    if s.startswith("+81"):
        rest = s[3:].replace("(0)", "")
        return 9 <= _count_digits(rest) <= 10
    return 10 <= _count_digits(s) <= 11


def my_number_valid(digits: str) -> bool:
    """Whether 12 digits carry a valid My Number check digit (the last one)."""
    body = [int(d) for d in digits[:11]]
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(reversed(body), start=1))
    check = 0 if total % 11 <= 1 else 11 - total % 11
    return check == int(digits[11])


def _twelve_type(view: str, start: int) -> str:
    before = view[max(0, start - 24) : start].lower()
    cue_at = {
        LICENCE: max(before.rfind(c) for c in _LICENCE_CUES),
        MY_NUMBER: max(before.rfind(c) for c in _MY_NUMBER_CUES),
    }
    if cue_at[LICENCE] >= 0 or cue_at[MY_NUMBER] >= 0:
        return max(cue_at, key=cue_at.__getitem__)
    digits = re.sub(r"\D", "", view[start : start + 14])
    return MY_NUMBER if my_number_valid(digits) else LICENCE


def find_fixed(view: str) -> Iterator[Span]:
    """Phones, e-mails, VINs, chassis numbers, 12-digit numbers and licence plates."""
    for m in _EMAIL.finditer(view):
        yield Span(m.start(), m.end(), EMAIL, 0)
    for m in _TWELVE.finditer(view):
        yield Span(m.start(), m.end(), _twelve_type(view, m.start()), 1)
    for m in _PHONE.finditer(view):
        if _phone_ok(m.group()):
            yield Span(m.start(), m.end(), PHONE, 1)
    for m in _VIN.finditer(view):
        s = m.group()
        if any(c.isdigit() for c in s) and sum(c.isalpha() for c in s) >= 2:
            yield Span(m.start(), m.end(), VIN, 1)
    for m in _CHASSIS.finditer(view):
        yield Span(m.start(), m.end(), CHASSIS, 1)
    for m in _PLATE.finditer(view):
        yield Span(m.start(), m.end(), PLATE, 1)


# Addresses ----------------------------------------------------------------------------
_CJK = "一-龥々〆ヶ"
_JA_WORD = f"{_CJK}ぁ-ゖァ-ヺー"
_PREF = "|".join(sorted(gz.JA_PREFECTURES, key=len, reverse=True))
_JA_PLACE = "|".join(sorted(gz.JA_PLACES, key=len, reverse=True))
_JA_ANCHOR = re.compile(rf"〒\s?[0-9]{{3}}-[0-9]{{4}}|(?:{_PREF})|(?:{_JA_PLACE})(?:市|区)")
# Pieces an address continues with: units (市区郡町村), a town name before its number, numbers.
_JA_UNIT = re.compile(rf"[{_CJK}ぁ-ゖァ-ヺー]{{1,6}}?(?:市|区|郡|町|村)(?![{_CJK}])|(?:{_JA_PLACE})(?:市|区)")
_JA_TOWN = re.compile(rf"[{_JA_WORD}]{{1,8}}?(?=[0-9]|[一二三四五六七八九十]+丁目)")
_JA_NUMBER = re.compile(r"(?:[東西南北]?[0-9一二三四五六七八九十]+(?:丁目|条|番地|番|号|-(?=[0-9]))|[0-9]+(?![0-9]))")
_JA_BARE_TOWN = re.compile(rf"[{_CJK}]{{1,4}}(?=で|に|の|へ|を|から|まで|付近|周辺|近く|駅|、|。|\s|$)")
_JA_STANDALONE = re.compile(rf"(?<![{_CJK}])(?:{_JA_PLACE})(?![{_CJK}])")


def extend_ja_address(view: str, end: int) -> int:
    """How far a Japanese address that reaches ``end`` goes on (units, town, block numbers)."""
    pos, units = end, 0
    while True:
        view_here = view[pos : pos + 1]
        if view_here == " " and _JA_ANCHOR.match(view, pos + 1):  # "〒530-0001 大阪府..."
            pos += 1
            continue
        for rx in (_JA_ANCHOR, _JA_UNIT, _JA_NUMBER, _JA_TOWN):
            m = rx.match(view, pos)
            if m and m.end() > pos:
                units += rx is _JA_UNIT
                pos = m.end()
                break
        else:
            break
    if pos > end or view[end - 1 : end] in ("市", "区"):  # a bare town right after its ward: 中区栄
        m = _JA_BARE_TOWN.match(view, pos)
        if m and view[pos - 1 : pos] in ("市", "区"):
            pos = m.end()
    return pos


_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Parkway|Pkwy|Court|Ct|"
    r"Place|Pl|Terrace|Crescent|Highway|Hwy|Square|Sq)\b\.?"
)
_CAPW = r"[A-Z][A-Za-z'’]*"
_EN_STREET = re.compile(rf"\b[0-9]{{1,5}}[A-Za-z]?\s+(?:{_CAPW}\s+){{1,3}}{_STREET_SUFFIX}")
_ROMAJI_BLOCK = re.compile(r"\b[0-9]{1,4}(?:-[0-9]{1,4}){1,3}\s+[A-Z][a-z]+(?:-[A-Z]?[a-z]+)?\b")
_ROMAJI_UNIT = re.compile(r"\b[A-Z][a-z]+-(?:ku|shi|cho|machi|gun|ken|mura)\b")
_EN_PLACE = re.compile(r"\b(?:" + "|".join(sorted(gz.EN_PLACES - gz.BROAD_REGIONS, key=len, reverse=True)) + r")\b")
_EN_CONT = re.compile(
    r"""(?:,\s*|\s+)(?:
      [A-Z]{2}\s+[0-9]{5}(?:-[0-9]{4})?                 # CA 94043
    | [A-Z]{1,2}[0-9][A-Z0-9]?\s?[0-9][A-Z]{2}\b           # BS1 4DJ
    | [0-9]{3}-[0-9]{4}(?![0-9])                          # 107-0061
    | [A-Z][a-z]+-(?:ku|shi|cho|machi|gun|ken)\b              # Minato-ku
    )""",
    re.VERBOSE,
)
_EN_CONT_WORDS = re.compile(rf",\s*{_CAPW}(?:\s+{_CAPW})?(?=[,.;:)\s]|$)")


def _extend_en_address(view: str, end: int, after_street: bool) -> int:
    while True:
        m = _EN_CONT.match(view, end)
        if m:
            end = m.end()
            continue
        m = _EN_CONT_WORDS.match(view, end)
        # After a street or a block number, ", Mountain View" is the city; after a bare
        # place name a following capitalised word is as likely a person, so only places go on.
        if m and (after_street or _EN_PLACE.fullmatch(m.group().lstrip(", ").split()[0])):
            end = m.end()
            continue
        return end


def find_addresses(view: str) -> Iterator[Span]:
    """Postal addresses and place names, Japanese and romanised/English."""
    for m in _JA_ANCHOR.finditer(view):
        yield Span(m.start(), extend_ja_address(view, m.end()), ADDRESS, 2)
    for m in _JA_STANDALONE.finditer(view):
        if m.group() not in gz.JA_FAMILY and len(m.group()) >= 2:
            yield Span(m.start(), extend_ja_address(view, m.end()), ADDRESS, 6)
    for rx, street in ((_EN_STREET, True), (_ROMAJI_BLOCK, True), (_ROMAJI_UNIT, False)):
        for m in rx.finditer(view):
            yield Span(m.start(), _extend_en_address(view, m.end(), street), ADDRESS, 2)
    for m in _EN_PLACE.finditer(view):
        yield Span(m.start(), _extend_en_address(view, m.end(), False), ADDRESS, 6)


# Names --------------------------------------------------------------------------------
_JA_FAMILY = "|".join(sorted(gz.JA_FAMILY, key=len, reverse=True))
_JA_GIVEN = "|".join(sorted(gz.JA_GIVEN, key=len, reverse=True))
_JA_SUFFIX = "|".join(gz.JA_NAME_SUFFIX)
_JA_PREFIX = "|".join(gz.JA_NAME_PREFIX)
_JA_NAME_CUED = re.compile(
    rf"""
      (?:{_JA_PREFIX})[:：\s]?((?:{_JA_FAMILY})(?:{_JA_GIVEN})?)     # ドライバー佐藤健一
    | (?<![{_CJK}])((?:{_JA_FAMILY})(?:{_JA_GIVEN})?)(?=\s?(?:{_JA_SUFFIX}))   # 田中さん, 伊藤班長
    | (?<![{_CJK}])((?:{_JA_FAMILY})(?:{_JA_GIVEN}))(?![{_CJK}])               # 小林誠 (both parts known)
""",
    re.VERBOSE,
)
# Any 2-4 kanji or katakana name before a personal honorific: 東海林さん, ミラーさん.
_JA_HONORIFIC = re.compile(
    rf"(?<![{_CJK}ァ-ヺー])([{_CJK}]{{2,4}}|[ァ-ヺ][ァ-ヺー・]{{1,11}})(?=(?:さん|様|さま|氏|くん|君)(?!方))"
)
_JA_NOT_NAMES = frozenset(
    [
        "お客",
        "運転手",
        "業者",
        "作業員",
        "担当",
        "担当者",
        "奥",
        "大家",
        "店長",
        "社長",
        "部長",
        "課長",
        "係長",
        "班長",
        "主任",
        "先生",
        "警察",
        "職人",
        "隣人",
        "管理人",
        "依頼主",
        "受取人",
        "荷受人",
        "皆",
        "皆様",
        "各位",
        "相手",
        "相手方",
        "お医者",
        "大工",
        "ドライバー",
        "オペレーター",
        "スタッフ",
        "メーカー",
        "お得意",
        "取引先",
        "お届け先",
        "お客様",
        "上司",
        "同僚",
        "新人",
        "派遣",
        "職員",
        "整備士",
        "運転士",
        "配達員",
        "家主",
        "本人",
        "ご本人",
        "ご家族",
        "家族",
    ]
)
_NAME_TOKEN = r"[A-Z](?:[a-z]+|['’][A-Z][a-z]+)(?:-[A-Z][a-z]+)?"
_TITLE = re.compile(rf"\b(?:{'|'.join(gz.EN_TITLES)})\.?\s+{_NAME_TOKEN}(?:\s+{_NAME_TOKEN})?")
_EN_TOKEN = re.compile(_NAME_TOKEN)
_ROLE = re.compile(rf"\b(?i:{'|'.join(gz.EN_ROLES)})\s*:?\s+({_NAME_TOKEN}(?:\s+{_NAME_TOKEN})?)")
# Verbs and prepositions that people follow in a note: "call Kowalski", "let Yusuf know", "for Gwen Stacy".
_VERB_CUED = re.compile(
    rf"\b(?i:call|called|calling|phone|phoned|ring|rang|text|texted|email|emailed|spoke with|"
    rf"spoke to|talked to|talk to|met|meet|let|tell|told|ask|asked|ask for|thank|thanks|with|for|by|"
    rf"from|to|and|cc|via|per|attn:?)\s+({_NAME_TOKEN}(?:\s+{_NAME_TOKEN})?)"
)
_NOT_NAMES = frozenset(
    [
        "I",
        "The",
        "A",
        "An",
        "At",
        "On",
        "In",
        "To",
        "For",
        "From",
        "By",
        "With",
        "Of",
        "And",
        "Or",
        "But",
        "If",
        "When",
        "Then",
        "Gate",
        "Arm",
        "Robot",
        "Unit",
        "Cell",
        "Line",
        "Lot",
        "Part",
        "Route",
        "Vehicle",
        "Van",
        "Truck",
        "Plate",
        "VIN",
        "Furnace",
        "Conveyor",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "Street",
        "Road",
        "Avenue",
        "Station",
        "Depot",
        "Office",
        "Plant",
        "Warehouse",
        "Dock",
        "Bay",
        "Shift",
        "Line",
        "Team",
        "Site",
        "Center",
        "Centre",
        "Building",
        "Floor",
        "Room",
        "Area",
        "Zone",
        "Port",
        "Airport",
        "Terminal",
        "Customer",
        "Driver",
        "Operator",
        "Security",
        "Reception",
        "Maintenance",
        "Quality",
        "Safety",
        "Japan",
        "Japanese",
        "English",
        "Monday",
        "Christmas",
        "Golden",
        "Week",
        "Obon",
        "New",
        "Year",
        "Year",
        "Day",
        "Night",
        "Morning",
        "Evening",
        "Emergency",
        "Please",
        "Thanks",
        "Note",
        "Mr",
        "Mrs",
        "Ms",
        "Dr",
        "Miss",
        "Hi",
        "Hello",
        "Dear",
        "Team",
        "OK",
        "No",
        "Yes",
        "It",
        "He",
        "She",
        "We",
        "They",
        "You",
        "My",
        "Our",
        "Your",
        "His",
        "Her",
        "Their",
        "This",
        "That",
        "These",
        "Those",
        "There",
        "Here",
        "Google",
        "Amazon",
        "Toyota",
        "Nissan",
        "Subaru",
        "Mazda",
        "Lexus",
        "Tesla",
        "Ford",
        "Hitachi",
        "Fanuc",
        "Yaskawa",
        "Denso",
        "Panasonic",
        "Sony",
        "Microsoft",
        "Apple",
        "JAF",
        "JR",
        "ETC",
        "GPS",
        "ABS",
        "EV",
    ]
)


def _plain(token: str) -> str:
    return token.replace("'", "").replace("’", "")


def find_names(view: str) -> Iterator[Span]:
    """Person names found by gazetteer and context, Japanese (kanji) and English."""
    for m in _JA_NAME_CUED.finditer(view):
        g = next(i for i in (1, 2, 3) if m.group(i))
        yield Span(m.start(g), m.end(g), PERSON, 3)
    for m in _JA_HONORIFIC.finditer(view):
        if m.group(1) not in _JA_NOT_NAMES:
            yield Span(m.start(1), m.end(1), PERSON, 5)
    for m in _VERB_CUED.finditer(view):
        words = m.group(1).split()
        words = words[
            : next(
                (
                    i
                    for i, w in enumerate(words)
                    if _plain(w) in _NOT_NAMES or _EN_PLACE.fullmatch(w) or _plain(w) in gz.EN_AMBIGUOUS_GIVEN
                ),
                len(words),
            )
        ]
        if words:
            yield Span(m.start(1), m.start(1) + len(" ".join(words)), PERSON, 5)
    for m in _TITLE.finditer(view):
        yield Span(m.start(), m.end(), PERSON, 3)
    for m in _ROLE.finditer(view):
        words = m.group(1).split()
        keep = list(
            words[: next((i for i, w in enumerate(words) if w in _NOT_NAMES or _EN_PLACE.fullmatch(w)), len(words))]
        )
        if keep:
            yield Span(m.start(1), m.start(1) + len(" ".join(keep)), PERSON, 4)
    tokens = list(_EN_TOKEN.finditer(view))
    for i, t in enumerate(tokens):
        word = _plain(t.group())
        nxt = tokens[i + 1] if i + 1 < len(tokens) and view[t.end() : tokens[i + 1].start()] == " " else None
        nxt_word = _plain(nxt.group()) if nxt else ""
        if word in gz.EN_GIVEN or word in gz.EN_AMBIGUOUS_GIVEN:
            has_family = nxt is not None and (
                nxt_word in gz.EN_FAMILY
                or (
                    word in gz.EN_GIVEN
                    and word not in gz.EN_AMBIGUOUS_GIVEN
                    and nxt_word not in _NOT_NAMES
                    and not _EN_PLACE.fullmatch(nxt_word)
                )
            )
            if has_family:
                yield Span(t.start(), nxt.end(), PERSON, 4)
            elif word not in gz.EN_AMBIGUOUS_GIVEN:
                yield Span(t.start(), t.end(), PERSON, 5)
        elif word in gz.EN_FAMILY and word not in gz.EN_AMBIGUOUS_FAMILY:
            yield Span(t.start(), t.end(), PERSON, 5)
