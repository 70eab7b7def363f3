"""Identifiers announced by a cue word: ``VIN …``, ``車台番号…``, ``電話…``, ``ナンバー…``.

:mod:`~refinement._internal.patterns` knows an identifier by its shape, but people do not
always write the shape: a VIN with no digit, a 車台番号 without its hyphen, a phone number
with slashes or spaced dashes, a plate given by its serial alone. When a cue names the
identifier, what follows the cue is masked whatever its shape, within bounds:

- between cue and identifier only linking words and marks may stand (``番号``, ``No.``,
  ``number``, ``#``, ``:``, ``は``, ``is``, an opening bracket);
- the identifier is one token of letters and digits with hyphens or dots inside; whitespace,
  other punctuation and Japanese script end it (``VINWVPK…の点検`` stops before の);
- pieces split by a space are joined only where the type says how long it is: a VIN's
  pieces when they make its 17 characters, a 車台番号's model code and all-digit serial, a
  phone number's digit groups until it has ten digits;
- a token without a digit counts only in capitals and only as long as a real one
  ("VIN plate", "VIN verification", "CHASSIS CRACKED" stay);
- a cue word that also means something else asks for more: ``plate`` alone (a machine part
  too) takes only a Japanese plate's forms (``12-34``, ``・・12``, class number and kana), and
  ``ナンバー`` after katakana is some other number (シリアルナンバー, マイナンバー).

Every function works on the folded view (:func:`~refinement._internal.patterns.fold`), so
full-width letters, digits, colons and brackets are ASCII here. A cued find has rank 0: the
cue names the type, so it wins over a pattern's guess for the same characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from refinement._internal import gazetteer as gz
from refinement._internal.patterns import CHASSIS, PHONE, PLATE, VIN, Span

_RANK = 0
VIN_LENGTH = 17
_MAX_CODE = 24  # alphanumerics: longer than any VIN or 車台番号 typed with a slip or two

# Latin cue words stand alone: "tel" is not the end of "hotel", "vin" not the end of "Kevin".
_VIN_CUE = re.compile(r"(?<![A-Za-z])(?:VIN|(?i:vin)(?![A-Za-z]))|車両識別番号")
_CHASSIS_CUE = re.compile(
    r"車[台体](?:番号|No\.?|NO\.?)|シャー?シー?(?:番号|ナンバー)|(?<![A-Za-z])(?i:chassis)(?![A-Za-z])"
)
_PHONE_CUE = re.compile(
    r"電話(?:番号)?|携帯(?:電話|番号)?|[☎℡]|(?<![A-Za-z])(?i:telephone|tel|phone|mobile|fax)(?![A-Za-z])"
)
# A bare "plate" may be a machine part; "ナンバー" after katakana is another number (マイナンバー).
_PLATE_CUE = re.compile(
    r"""(?P<strong>(?<![ァ-ヺー])ナンバー(?:プレート)?|車両番号
        |(?<![A-Za-z])(?i:licen[cs]e[ \t]+plate|number[ \t]+plate|plate[ \t]+(?:number|no\.?|\#)))
    |(?<![A-Za-z])(?i:plate)(?![A-Za-z])""",
    re.VERBOSE,
)
# What may stand between a cue and its identifier: "VIN番号：", "phone no. ", "電話は", "TEL (".
_LINK = re.compile(
    r"""\.?[ \t]*(?:(?:番号|No\.?|NO\.?|no\.?|[Nn]umber|NUMBER|\#)[ \t]*)?
    (?:[:=\#]|は|is[ \t])?[ \t]*(?:[(「『\[][ \t]*)?""",
    re.VERBOSE,
)

_PIECE = re.compile(r"[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*")
_SERIAL_PIECE = re.compile(r" ([0-9]{5,8})(?![0-9A-Za-z])")  # "ZVW30 1234567"
_DIGITS = re.compile(r"[0-9]+")
_PHONE_SEP = re.compile(r"[-. \t/・_()~]{1,3}")  # "090 - 1234", "090/1234", "03・5555", "(0)6"
_REGION = "|".join(sorted(gz.PLATE_REGIONS, key=len, reverse=True))
_PLATE = re.compile(
    rf"""(?:(?:{_REGION})[ \t]?)?
    (?P<kana>[0-9]{{2,3}}[A-Z]?[ \t]?[ぁ-ゖ][ \t]?)?              # class number and kana: "300 あ"
    (?:(?P<serial>[0-9]{{1,2}}-[0-9]{{2}}|[・.]{{1,3}}[ \t]?[0-9]{{1,3}})|(?P<bare>[0-9]{{1,4}}))
    (?![0-9A-Za-z])""",
    re.VERBOSE,
)


def _alnum(piece: str) -> int:
    return sum(c.isalnum() for c in piece)


def _no_lower(piece: str) -> bool:
    return not any(c.islower() for c in piece)


def _code_ok(piece: str, min_len: int, min_letters: int) -> bool:
    """A VIN or 車台番号 token: long enough with a digit, or in capitals as long as a real one."""
    n = _alnum(piece)
    if any(c.isdigit() for c in piece):
        return min_len <= n <= _MAX_CODE
    return min_letters <= n <= _MAX_CODE and _no_lower(piece)


def _vin_end(view: str, pos: int, _: re.Match[str]) -> int | None:
    first = _PIECE.match(view, pos)
    if not first:
        return None
    # Copied in pieces ("1HGCM826 33A004352"): joined when they make a VIN's 17 characters.
    end, total = first.end(), _alnum(first.group())
    while total < VIN_LENGTH and view[end : end + 1] == " " and (m := _PIECE.match(view, end + 1)):
        end, total = m.end(), total + _alnum(m.group())
    if total == VIN_LENGTH and end > first.end() and _no_lower(view[first.start() : end]):
        return end
    return first.end() if _code_ok(first.group(), min_len=6, min_letters=14) else None


def _chassis_end(view: str, pos: int, _: re.Match[str]) -> int | None:
    first = _PIECE.match(view, pos)
    if not first:
        return None
    serial = _SERIAL_PIECE.match(view, first.end())
    if serial and "-" not in first.group() and _no_lower(first.group()):  # model code, a space, serial
        return serial.end()
    return first.end() if _code_ok(first.group(), min_len=5, min_letters=8) else None


def _phone_end(view: str, pos: int, _: re.Match[str]) -> int | None:
    """Digit groups and short separators after a ``+`` or not, until the number has ten digits."""
    p = pos + (view[pos : pos + 1] == "+")
    digits, end = 0, None
    while group := _DIGITS.match(view, p):
        digits, end = digits + len(group.group()), group.end()
        sep = _PHONE_SEP.match(view, end)
        if digits >= 10 or not sep or not _DIGITS.match(view, sep.end()):
            break
        p = sep.end()
    return end if end is not None and 6 <= digits <= 15 else None


def _plate_end(view: str, pos: int, cue: re.Match[str]) -> int | None:
    m = _PLATE.match(view, pos)
    if m and (m["kana"] or m["serial"] or (cue["strong"] and len(m["bare"]) >= 2)):
        return m.end()
    # After an unambiguous cue, a plate from elsewhere: "plate number KA01AB1234".
    piece = _PIECE.match(view, pos)
    if cue["strong"] and piece and any(c.isdigit() for c in piece.group()) and _no_lower(piece.group()):
        return piece.end() if 2 <= _alnum(piece.group()) <= 10 else None
    return None


_CUES: tuple[tuple[str, re.Pattern[str], Callable[[str, int, re.Match[str]], int | None]], ...] = (
    (VIN, _VIN_CUE, _vin_end),
    (CHASSIS, _CHASSIS_CUE, _chassis_end),
    (PHONE, _PHONE_CUE, _phone_end),
    (PLATE, _PLATE_CUE, _plate_end),
)


def find_cued(view: str) -> Iterator[Span]:
    """VINs, 車台番号, phone numbers and plates named by the word before them, whatever their shape."""
    for kind, cue, end_of in _CUES:
        for m in cue.finditer(view):
            start = _LINK.match(view, m.end()).end()
            end = end_of(view, start, m)
            if end is None:
                continue
            # A bracket the link took belongs to the number when it closes inside it: "TEL (03) 3210-9876".
            if view[start - 1 : start] == "(" and view.count(")", start, end) > view.count("(", start, end):
                start -= 1
            yield Span(start, end, kind, _RANK)
