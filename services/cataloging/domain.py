"""Cataloging's rules, free of I/O: ISBNs, barcodes, call numbers, MARC field clean-up.

Books are catalogued once, centrally: every received copy becomes an item with a barcode
and a call number, attached to one bib record per title (one per normalised ISBN-13).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

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
class Holding:
    """A copy a library already holds, as a legacy record lists it (MARC 21 852/952, CNMARC
    905): its branch's code, and its barcode and call number when the record gives them."""

    branch: str
    barcode: str | None = None
    call_number: str | None = None


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
    holdings: tuple[Holding, ...] = ()  # copies the record says a library holds


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


_PLAIN_ISBN13 = re.compile(r"97[89]\d{10}")


def _isbn13_checks(digits: str) -> bool:
    return (sum(map(int, digits[0::2])) + 3 * sum(map(int, digits[1::2]))) % 10 == 0


@functools.lru_cache(maxsize=1024)
def normalize_isbn(raw: str | None) -> Isbn | None:
    """ISBN-10 or ISBN-13 in any punctuation → ISBN-13; None when no digit was given.

    Cached: an import reads each record's ISBN twice (choosing among 020s, then matching).
    """
    if not raw:
        return None
    text = raw.strip().upper()
    plain = text.replace("-", "")
    if _PLAIN_ISBN13.fullmatch(plain) and _isbn13_checks(plain):
        return Isbn(plain, True)  # most records: a clean ISBN-13, without isbnlib's cost
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


# --- matching an incoming record to a bib --------------------------------------------------

#: What an import does with a record that matches a bib (Evergreen's Vandelay offers the
#: same three): replace the bib's description, leave it, or fill only what it lacks.
OnMatch = Literal["overlay", "keep", "merge"]

# A statement of responsibility's role words after a Chinese name: "钱锺书著", "王力主编".
_ROLE = re.compile(r"(等|原|主|总|改|合|编|译|著|绘|撰|编著|主编|编译|译注|校注|整理|选编|文|图)+$")
_NOT_WORD = re.compile(r"[\W_]+")


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def match_key(title: str | None, author: str | None, year: int | None) -> str | None:
    """The second match point after the ISBN: normalised title + author + year.

    Case, width (全角/半角), punctuation and spacing are ignored; a Latin name's parts are
    sorted so "Qian, Zhongshu" meets "Zhongshu Qian", and a Chinese name loses the role
    word a CNMARC 200$f adds ("钱锺书著" → "钱锺书"). A title without author or year meets
    only bibs that have neither either ("诗经||"), so a file sent twice is still matched.
    """
    if not title:
        return None
    words = _NOT_WORD.sub("", _folded(title))
    if not words:
        return None
    name = ""
    if author:
        parts = [w for w in _NOT_WORD.split(_folded(author)) if w]
        parts = [_ROLE.sub("", w) if _IS_CJK.match(w) else w for w in parts]
        name = " ".join(sorted(w for w in parts if w))
    return f"{words}|{name}|{year if year is not None else ''}"


@dataclass(frozen=True)
class Description:
    """A bib's descriptive fields: what an overlay replaces and a merge fills in."""

    title: str
    author: str | None = None
    publisher: str | None = None
    year: int | None = None
    language: str | None = None
    classification: str | None = None
    classification_scheme: str | None = None
    subjects: tuple[str, ...] = ()
    marc: bytes | None = None

    @classmethod
    def of(cls, data: BibData) -> Description:
        return cls(title=data.title, author=data.author, publisher=data.publisher,
                   year=data.year, language=data.language,
                   classification=data.classification,
                   classification_scheme=data.classification_scheme,
                   subjects=data.subjects, marc=data.marc)


Outcome = Literal["created", "overlaid", "merged", "kept"]


def apply_match(bib: Description, record: Description, on_match: OnMatch,
                ) -> tuple[Outcome, Description]:
    """What a matched bib becomes: the outcome, and its description afterwards.

    A brief bib (made from an order: no MARC record) is always overlaid by a full record,
    whatever `on_match` says: a full record arriving is what the brief one waited for.
    `merge` keeps every field the bib has and takes the others from the record; subject
    headings are the union; the class number and its scheme go together.
    """
    if (bib.marc is None and record.marc is not None) or on_match == "overlay":
        return "overlaid", record
    if on_match == "keep":
        return "kept", bib
    has_class = bib.classification is not None
    merged = Description(
        title=bib.title,
        author=bib.author or record.author,
        publisher=bib.publisher or record.publisher,
        year=bib.year if bib.year is not None else record.year,
        language=bib.language or record.language,
        classification=bib.classification if has_class else record.classification,
        classification_scheme=(bib.classification_scheme if has_class
                               else record.classification_scheme),
        subjects=tuple(dict.fromkeys((*bib.subjects, *record.subjects))),
        marc=bib.marc if bib.marc is not None else record.marc,
    )
    return ("kept" if merged == bib else "merged"), merged


@dataclass(frozen=True)
class Prepared:
    """A record with what matching and the search index derive from it, worked out once
    (by an import's reader process, off the service's core)."""

    data: BibData
    isbn: Isbn | None
    key: str | None
    search_text: str


def search_text(title: str, author: str | None, subjects: tuple[str, ...] | list[str]) -> str:
    """What search finds a bib by: its tokens (`search_tokens`) as one string."""
    return " ".join(search_tokens(title, author, *subjects))


def prepare(data: BibData) -> Prepared:
    return Prepared(data, normalize_isbn(data.isbn), match_key(data.title, data.author,
                                                               data.year),
                    search_text(data.title, data.author, data.subjects))


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


def is_provisional(call_number: str) -> bool:
    """Whether a call number is still the provisional "TBC/…" mark: such a copy waits for
    its title to be classified before it gets a spine label."""
    return call_number.startswith(f"{PROVISIONAL_CLASS}/")


def shelf_mark(*, classification: str | None, scheme: str | None, author: str | None,
               title: str, year: int | None, serial: int | None = None) -> str:
    """The call number (索书号) of a title: its class number, then what orders it in the class.

    - `clc` (中图法) with a `serial`: "I247.5/12", the 种次号 of Chinese public libraries,
      which number a class's titles in the order the library first catalogues them: short
      on the spine label, and the library hands the serial out (ClassSerial), not a table.
    - `ddc`, `lcc`: "823.914 C37 1984": class, the main entry's LC Cutter (see `cutter`),
      and the year when known, as Western libraries shelve.
    - otherwise (CLC before a serial is taken, an unknown scheme) "I247.5/Q1947", and with
      no class number at all the provisional "TBC/Q1947" of `call_number`: a copy never
      waits at the desk for its classification.
    """
    class_number = (classification or "").strip()
    if not class_number:
        return call_number(author=author, title=title, year=year)
    kind = (scheme or "").strip().lower()
    if kind == "clc" and serial is not None:
        if serial < 1:
            raise ValueError(f"a 种次号 starts at 1, got {serial}")
        return f"{class_number}/{serial}"
    if kind in ("ddc", "lcc"):
        if kind == "lcc" and _HAS_CUTTER.search(class_number):
            mark = class_number  # an LC call number (050 $a $b) carries its own Cutter
        else:
            entry = author if author and author.strip() else title
            mark = f"{class_number} {cutter(entry)}"
        return f"{mark} {year}" if year else mark
    return call_number(author=author, title=title, year=year, classification=class_number)


# "QA47 .S6", "PL2747.C5": a class number followed by a Cutter (a letter and digits).
_HAS_CUTTER = re.compile(r"[\s.][A-Z]\d+")

# The Library of Congress Cutter table: Classification and Shelflisting Manual, instruction
# sheet G 63. Each row gives the digit for the letter(s) after the initial; a letter the row
# skips files after the entry before it and takes that entry's digit ("l-m" → 4).
_AFTER_VOWEL = (("b", 2), ("d", 3), ("l", 4), ("n", 5), ("p", 6), ("r", 7), ("s", 8), ("u", 9))
_AFTER_S = (("a", 2), ("ch", 3), ("e", 4), ("h", 5), ("m", 6), ("t", 7), ("u", 8), ("w", 9))
_AFTER_QU = (("a", 3), ("e", 4), ("i", 5), ("o", 6), ("r", 7), ("t", 8), ("y", 9))
_AFTER_CONSONANT = (("a", 3), ("e", 4), ("i", 5), ("o", 6), ("r", 7), ("u", 8), ("y", 9))
_EXPANSION = (("a", 3), ("e", 4), ("i", 5), ("m", 6), ("p", 7), ("t", 8), ("w", 9))

# A title's leading English article ("The Hobbit" files under Hobbit), but not a name that
# merely starts like one ("An, Min", "A. A. Milne").
_LEADING_ARTICLE = re.compile(r"^\W*(?:the|an?)\s+(?=\w)", re.IGNORECASE)
_NAME_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")  # O'Brien (or a typographic '), Saint-Exupéry
_IN_WORD_PUNCTUATION = re.compile(r"['\u2019-]")


def cutter(name: str) -> str:
    """The LC Cutter number of a main entry, e.g. "Carter" → "C37", "The Hobbit" → "H63".

    Uses the Library of Congress Cutter table (CSM G 63: initial vowels, initial S,
    initial Qu, other initial consonants, then the expansion table) on the entry's first
    word: a surname ("Qian, Zhongshu" → Q25) or a title's first word after "The", "A",
    "An". Two digits (one for a word too short): the first from the second letter, the
    second from the expansion table on the next letter. A cataloger may still adjust it
    against the shelflist, as G 63's own examples do. Accents are stripped ("Čapek" →
    C37); a name not in Latin letters (钱锺书, 1984) has no Cutter and gets its first
    character upper-cased.
    """
    folded = "".join(c for c in unicodedata.normalize("NFKD", name)
                     if not unicodedata.combining(c))
    match = _NAME_WORD.search(_LEADING_ARTICLE.sub("", folded, count=1))
    word = _IN_WORD_PUNCTUATION.sub("", match.group()).lower() if match else ""
    if not (word.isascii() and word.isalpha()):
        return _initial(folded) or "X"
    initial, rest = word[0], word[1:]
    if initial == "q" and rest.startswith("u"):
        first, after = _cutter_digit(_AFTER_QU, rest[1:]), rest[2:]
    elif initial == "q":
        # Qa-Qt take 2-29 (the second letter spreads them over the expansion digits);
        # Qv-Qz file after Quy.
        first, after = (2 if rest < "u" else 9), rest
    elif initial == "s":
        first, after = _cutter_digit(_AFTER_S, rest), rest[2 if rest.startswith("ch") else 1:]
    elif initial in "aeiou":
        first, after = _cutter_digit(_AFTER_VOWEL, rest), rest[1:]
    else:
        first, after = _cutter_digit(_AFTER_CONSONANT, rest), rest[1:]
    mark = f"{initial.upper()}{first}"
    return f"{mark}{_cutter_digit(_EXPANSION, after)}" if after else mark


def _cutter_digit(row: tuple[tuple[str, int], ...], letters: str) -> int:
    """The digit a row of the Cutter table gives `letters` (the rest of the word).

    Rows are in alphabetical order: the last entry at or before the letters wins, and a
    word that ends here (or sorts before the row's first entry) takes the first digit.
    """
    digit = row[0][1]
    for key, value in row:
        if letters >= key:
            digit = value
    return digit


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


# --- the cataloging queue ---------------------------------------------------------------

Lack = Literal["full_record", "call_number", "label"]
#: What keeps an item in the queue. A brief record does not: many small presses' books
#: never get a national record, and the book is shelf-ready without one.
BLOCKING: frozenset[Lack] = frozenset({"call_number", "label"})


def lacks(*, full_record: bool, call_number: str, label_printed: bool) -> list[Lack]:
    """What an item in processing still lacks, in the order a cataloger sees to it."""
    out: list[Lack] = []
    if not full_record:
        out.append("full_record")
    if is_provisional(call_number):
        out.append("call_number")
    if not label_printed:
        out.append("label")
    return out


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
