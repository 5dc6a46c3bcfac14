"""Cataloging's rules, free of I/O: ISBNs, barcodes, call numbers, MARC field clean-up.

Books are catalogued once, centrally: every received copy becomes an item with a barcode
and a call number, attached to one bib record per title (one per normalised ISBN-13).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import isbnlib

# --- ISBN ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Isbn:
    """A title's ISBN as stored: the ISBN-13 when the given value is a valid ISBN.

    An invalid ISBN never stops a received copy from being catalogued: the book is on the
    desk. It is kept as its digits (and X), upper-cased, with `valid` False so a cataloger
    can find and correct it; two receipts carrying the same invalid value share one bib.
    """

    value: str
    valid: bool


@dataclass(frozen=True)
class BibData:
    """What a receipt or a MARC record says about a title (its ISBN as given)."""

    isbn: str | None
    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    language: str | None = None
    classification: str | None = None
    classification_scheme: str | None = None
    subjects: tuple[str, ...] = ()
    marc: bytes | None = None  # the record as received, when it came as MARC


# A MARC 020$a or a vendor's field often carries a qualifier after the number:
# "0306406152 (pbk.)", "978-7-02-000220-7 : CNY38.00", "9780306406157 ; v. 1".
_QUALIFIER = re.compile(r"[(:;]")
_NOT_ISBN_CHAR = re.compile(r"[^0-9X]")


def _valid_isbn13(candidate: str) -> str | None:
    code: str = isbnlib.canonical(candidate)  # isbnlib has no type information
    if isbnlib.is_isbn13(code):
        return code
    if isbnlib.is_isbn10(code):
        converted: str = isbnlib.to_isbn13(code)
        return converted or None
    return None


def normalize_isbn(raw: str | None) -> Isbn | None:
    """ISBN-10 or ISBN-13 in any punctuation → ISBN-13; None when no digit was given."""
    if not raw:
        return None
    text = raw.strip().upper()
    head = _QUALIFIER.split(text, maxsplit=1)[0]
    candidates = [*isbnlib.get_isbnlike(text), head, _NOT_ISBN_CHAR.sub("", head)]
    for candidate in candidates:
        found = _valid_isbn13(candidate)
        if found:
            return Isbn(found, True)
    kept = _NOT_ISBN_CHAR.sub("", head) or _NOT_ISBN_CHAR.sub("", text)
    if not any(ch.isdigit() for ch in kept):
        return None
    return Isbn(kept, False)


# --- barcodes -----------------------------------------------------------------------------

BARCODE_PREFIX = "JX"
BARCODE_SERIAL_DIGITS = 9  # then one Luhn check digit: JX + 10 digits
MAX_SERIAL = 10**BARCODE_SERIAL_DIGITS - 1
_BARCODE = re.compile(rf"^{BARCODE_PREFIX}(\d{{{BARCODE_SERIAL_DIGITS + 1}}})$")


def luhn_check_digit(digits: str) -> int:
    """The Luhn (mod 10) digit that makes `digits` + it pass the Luhn test.

    Luhn catches every single-digit mistake and most swaps of neighbours: the usual
    misreads of a hand-keyed barcode.
    """
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: these become the odd positions once the check is added
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def format_barcode(serial: int) -> str:
    """The item barcode for a serial number from the barcode sequence: JX + 9 digits + check."""
    if not 1 <= serial <= MAX_SERIAL:
        raise ValueError(f"barcode serial {serial} outside 1..{MAX_SERIAL}")
    body = f"{serial:0{BARCODE_SERIAL_DIGITS}d}"
    return f"{BARCODE_PREFIX}{body}{luhn_check_digit(body)}"


def is_valid_barcode(code: str) -> bool:
    """True for a well-formed barcode of this network whose check digit is right."""
    match = _BARCODE.match(code)
    if not match:
        return False
    digits = match.group(1)
    return luhn_check_digit(digits[:-1]) == int(digits[-1])


# --- call numbers -------------------------------------------------------------------------

#: Stands in for the classification number until catalogers classify the title (CLC).
PROVISIONAL_CLASS = "TBC"


def call_number(*, author: str | None, title: str, year: int | None,
                classification: str | None = None) -> str:
    """A provisional shelf mark: class / author's initial (else the title's) + year.

    e.g. "TBC/Q1947". Provisional: real classification and Cutter numbers replace it
    once a cataloger classifies the title; copies of one bib share the same mark.
    """
    initial = _initial(author) or _initial(title) or "X"
    return f"{classification or PROVISIONAL_CLASS}/{initial}{year or ''}"


def _initial(text: str | None) -> str:
    for char in text or "":
        if char.isalnum():
            return char.upper()
    return ""


# --- MARC field clean-up --------------------------------------------------------------------

_ISBD_TRAILER = re.compile(r"[\s/:;,=]+$")
_INITIAL_AT_END = re.compile(r"(^|\s)\w\.$")
_YEAR = re.compile(r"(?<!\d)(1[5-9]\d\d|2\d\d\d)(?!\d)")


def clean_marc_text(value: str | None) -> str | None:
    """A MARC subfield without its ISBD punctuation: "Fortress besieged /" → "Fortress besieged".

    A closing full stop goes too, unless it ends an initial ("Smith, John A.").
    """
    if value is None:
        return None
    text = _ISBD_TRAILER.sub("", value.strip())
    if text.endswith(".") and not _INITIAL_AT_END.search(text):
        text = _ISBD_TRAILER.sub("", text[:-1])
    return text or None


def year_of(value: str | None) -> int | None:
    """The publication year in a MARC date: "c2004." → 2004, "[1947?]" → 1947."""
    if not value:
        return None
    match = _YEAR.search(value)
    return int(match.group(1)) if match else None


# --- search tokens ----------------------------------------------------------------------------

# Postgres text search splits on spaces and punctuation, which Chinese does not have: a
# title is one long "word". So titles are indexed as tokens made here: each Chinese
# character and each pair of neighbours (bigrams), and every other word whole. A query of
# one character is that character; of two, its bigram; longer ones, all their bigrams.
# Any run of characters in a title is therefore found (full recall); a long query may also
# find a title holding its pairs apart.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_RUNS = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_IS_CJK = re.compile(rf"[{_CJK}]")


def search_tokens(*texts: str | None) -> list[str]:
    """The tokens a bib is found by, each once."""
    tokens: dict[str, None] = {}
    for text in texts:
        for run in _RUNS.findall((text or "").casefold()):
            if _IS_CJK.match(run):
                tokens.update(dict.fromkeys(run))
                tokens.update(dict.fromkeys(run[i:i + 2] for i in range(len(run) - 1)))
            else:
                tokens[run] = None
    return list(tokens)


def search_query(term: str) -> str | None:
    """The Postgres tsquery (config `simple`) for what a reader typed, or None when it has
    no word at all. Every token must match; the last word may be unfinished (a prefix)."""
    parts: list[str] = []
    runs = _RUNS.findall(term.casefold())
    for n, run in enumerate(runs):
        if _IS_CJK.match(run):
            pairs = [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
            parts += [f"'{p}'" for p in dict.fromkeys(pairs)]
        else:
            parts.append(f"'{run}'" + (":*" if n == len(runs) - 1 else ""))
    return " & ".join(parts) or None
