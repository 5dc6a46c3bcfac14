"""A vendor's quote list (CSV) read into the rows of a draft order.

Pure: bytes in, rows and errors out. Nothing here raises for any input: every problem is a
`RowError` naming the file line (the header is line 1) and the column, so staff can fix a
whole file in one pass. Rows that read are returned even when others do not; the caller
decides whether half a file is worth anything (the order API refuses it).

What is accepted, and why:

* UTF-8 (with or without BOM), else GB18030: Chinese vendors' spreadsheets save in the
  latter. Anything else is refused for the whole file rather than read as mojibake.
* Comma, semicolon or tab, chosen by which one makes the header name the most known
  columns: spreadsheets in locales with a decimal comma write semicolons or tabs.
* Column names in any case, with English and Chinese aliases (`ALIASES`); columns with
  other names are ignored, so a vendor's extra columns (discount, notes) do no harm.
* Prices as "12.50", "¥12.50" or "12.50 CNY", and "12,50" where the comma is not the
  delimiter. A currency mark is dropped, but one file may not mix currencies.
* Text as given, stripped; the ISBN is not checked here (the order keeps a number that
  does not check out and flags it), except for one a spreadsheet has already destroyed.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

__all__ = ["ALIASES", "MAX_QUANTITY", "QuoteRow", "RowError", "parse_quote_csv"]

T = TypeVar("T")

MAX_QUANTITY = 10_000
FIRST_YEAR, LAST_YEAR = 1000, 2100
#: Longest texts an order line takes (the order API's own caps).
MAX_LENGTH = {"isbn": 32, "formula": 64, "title": 1000, "author": 500, "publisher": 500}
#: Digits before the point: money is stored as NUMERIC(14, 2).
MAX_PRICE_DIGITS = 12
CENT = Decimal("0.01")
#: Candidates in order of preference when the header does not tell them apart.
DELIMITERS = (",", ";", "\t")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}

#: Header names per column, matched ignoring case, spaces, "_" and "-".
ALIASES: dict[str, tuple[str, ...]] = {
    "isbn": ("isbn", "isbn13", "isbn-13", "ean", "ISBN号"),
    "quantity": ("quantity", "qty", "copies", "数量"),
    "price": ("price", "unit_price", "unit price", "单价"),
    "formula": ("formula", "distribution", "distribution_formula", "分配方案"),
    "title": ("title", "题名", "书名"),
    "author": ("author", "责任者", "作者"),
    "publisher": ("publisher", "出版社"),
    "year": ("year", "出版年"),
}
REQUIRED = ("isbn", "quantity", "price")

#: Currency marks a price may carry, by the currency they name (after NFKC, so "￥" is "¥").
SYMBOLS = {"¥": "CNY", "元": "CNY", "€": "EUR", "£": "GBP"}
CODE_ALIASES = {"RMB": "CNY"}

_SEPARATORS = re.compile(r"[\s_\-]+")
_CODE_BEFORE = re.compile(r"([A-Za-z]{3})\s*(?=[-+0-9.,])")
_CODE_AFTER = re.compile(r"(?<=[0-9.,])\s*([A-Za-z]{3})")
_AMOUNT = re.compile(r"(-?)([0-9]*)(?:([.,])([0-9]*))?")
_COUNT = re.compile(r"([-+]?)([0-9]+)(?:\.0*)?")
#: A year, possibly with a month after it as Chinese catalogues write it ("2019.5",
#: "2019年5月"), or as a spreadsheet writes a number ("2019.0").
_YEAR = re.compile(r"([0-9]{4})(?:年|[-./年][0-9]{1,2}月?|\.0+)?")
#: What Excel makes of a 13-digit number in a General cell: the digits are gone.
_SCIENTIFIC = re.compile(r"[0-9](?:[.,][0-9]+)?[eE][+]?[0-9]+")
#: Excel's way to keep a number as text: ="9787020024759".
_EXCEL_TEXT = re.compile(r'="(.*)"', re.DOTALL)
#: A line with no cell text, such as the ",,," a spreadsheet writes for an empty row.
_EMPTY = re.compile(r'[\s,;"]*')


@dataclass(frozen=True)
class QuoteRow:
    """One title of the quote: what becomes one order line."""

    row: int
    isbn: str
    quantity: int
    unit_price: Decimal
    formula: str | None
    title: str | None = None
    author: str | None = None
    publisher: str | None = None
    year: int | None = None


@dataclass(frozen=True)
class RowError:
    """A problem at a file line (0: the file as a whole) in a column, or "row" / "file"."""

    row: int
    field: str
    message: str


class _Bad(Exception):
    """A cell that does not read; caught per cell, never leaves the module."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _key(name: str) -> str:
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", name).replace("\ufeff", "")
                           ).casefold()


_COLUMNS = {_key(alias): field for field, aliases in ALIASES.items() for alias in aliases}


def _show(value: str, limit: int = 40) -> str:
    """The cell as quoted in a message, cut short: a message must stay readable."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def parse_quote_csv(data: bytes, *,
                    max_rows: int = 10_000) -> tuple[list[QuoteRow], list[RowError]]:
    """Rows that read and a RowError for every bad cell, row, header or file.

    A header or file problem stops the reading (nothing after it can be placed); a bad
    row does not, so one upload lists every row to fix.
    """
    text = _decode(data)
    if isinstance(text, RowError):
        return [], [text]
    delimiter = _sniff(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"',
                        doublequote=True, strict=False)
    rows: list[QuoteRow] = []
    errors: list[RowError] = []
    header: _Header | None = None
    currencies: dict[str, int] = {}
    count = 0
    line = 1  # where the next record starts
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            errors.append(RowError(line, "row", f"row: the CSV cannot be read from here on "
                                                f"({exc}); is a quote (\") left open?"))
            break
        if cells is None:
            break
        start, line = line, reader.line_num + 1
        if _EMPTY.fullmatch("".join(cells)):
            continue  # a blank line, or an empty spreadsheet row
        if header is None:
            header = _header(start, cells, errors)
            if header is None:
                return [], errors
            continue
        count += 1
        if count > max_rows:
            errors.append(RowError(start, "file", f"file: more than {max_rows} rows; split "
                                                  f"the list into files of at most "
                                                  f"{max_rows} rows"))
            break
        row = _row(start, cells, header, delimiter, currencies, errors)
        if row is not None:
            rows.append(row)
    if header is None and not errors:
        errors.append(RowError(0, "file", "file: no header line; expected one naming the "
                                          "columns isbn, quantity and price (and formula, "
                                          "title, author, publisher, year if given)"))
    return rows, errors


def _decode(data: bytes) -> str | RowError:
    """The text of the file, or why there is none (with what to save it as instead)."""
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        return RowError(0, "file", "file: this is a spreadsheet workbook (.xlsx or .xls), "
                                   "not CSV; save it as 'CSV UTF-8'")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return RowError(0, "file", "file: this is UTF-16 text (Excel's 'Unicode text'); "
                                   "save it as 'CSV UTF-8'")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:
            return RowError(0, "file", "file: it holds NUL bytes, so it is not CSV text; "
                                       "save it as 'CSV UTF-8'")
        return text.removeprefix("\ufeff")  # GB18030 has a BOM of its own
    return RowError(0, "file", "file: it is neither UTF-8 nor GB18030 text; "
                               "save it as 'CSV UTF-8'")


def _sniff(text: str) -> str:
    """The delimiter with which the first line names the most known columns (ties: the
    one it holds most of, then comma first): a header is better evidence than counts."""
    first = next((ln for ln in io.StringIO(text, newline="") if not _EMPTY.fullmatch(ln)), "")

    def score(delimiter: str) -> tuple[int, int]:
        try:
            cells = next(csv.reader([first], delimiter=delimiter, strict=False), [])
        except csv.Error:
            cells = []
        return sum(_key(cell) in _COLUMNS for cell in cells), first.count(delimiter)

    return max(DELIMITERS, key=score)


@dataclass(frozen=True)
class _Header:
    #: The cell index of each known column.
    index: dict[str, int]
    #: How many cells the header has, and how many a row needs (to its last named one).
    width: int
    needed: int


def _header(line: int, cells: list[str], errors: list[RowError]) -> _Header | None:
    """The known columns, or None after reporting a missing or repeated one."""
    seen: dict[str, int] = {}
    problems: list[RowError] = []
    for index, cell in enumerate(cells):
        field = _COLUMNS.get(_key(cell))
        if field is None:
            continue
        if field in seen:
            problems.append(RowError(line, field, f"{field}: two columns for it, "
                                                  f"{_show(cells[seen[field]])} and "
                                                  f"{_show(cell)}; keep one"))
            continue
        seen[field] = index
    found = ", ".join(_show(cell) for cell in cells[:20]) + (", …" if len(cells) > 20 else "")
    for field in REQUIRED:
        if field not in seen:
            problems.append(RowError(line, field, (
                f"{field}: no {field} column (named any of "
                f"{', '.join(ALIASES[field])}); the header has {found}")))
    if problems:
        errors.extend(problems)
        return None
    needed = max(i for i, cell in enumerate(cells) if cell.strip()) + 1
    return _Header(seen, len(cells), needed)


def _row(line: int, cells: list[str], header: _Header, delimiter: str,
         currencies: dict[str, int], errors: list[RowError]) -> QuoteRow | None:
    """The row, or None after one error per bad cell (or one for a misshapen row)."""
    if len(cells) < header.needed or any(c.strip() for c in cells[header.width:]):
        hint = " or a decimal comma (write 12.50)" if delimiter == "," else ""
        errors.append(RowError(line, "row", (
            f"row: {len(cells)} cells where the header has {header.needed} columns; check "
            f"for a stray or missing {DELIMITER_NAMES[delimiter]}{hint}, and quote a cell "
            f"that contains one")))
        return None
    problems: list[tuple[int, RowError]] = []

    def read(field: str, reader: Callable[[str], T]) -> T | None:
        index = header.index.get(field)
        if index is None:
            return None
        try:
            return reader(cells[index])
        except _Bad as exc:
            problems.append((index, RowError(line, field, exc.message)))
            return None

    def price(raw: str) -> Decimal:
        return _price(raw, decimal_comma=delimiter != ",", line=line, currencies=currencies)

    isbn, quantity, unit_price = read("isbn", _isbn), read("quantity", _quantity), \
        read("price", price)
    formula, title, author, publisher = (read(field, _text(field)) for field in (
        "formula", "title", "author", "publisher"))
    year = read("year", _year)
    errors.extend(error for _, error in sorted(problems, key=lambda p: p[0]))
    if problems or isbn is None or quantity is None or unit_price is None:
        return None
    return QuoteRow(row=line, isbn=isbn, quantity=quantity, unit_price=unit_price,
                    formula=formula, title=title, author=author, publisher=publisher,
                    year=year)


def _number_text(raw: str) -> str:
    """Fullwidth digits, points and the fullwidth yen sign, as Chinese spreadsheets may
    write them, read as their ASCII forms."""
    return unicodedata.normalize("NFKC", raw).strip()


def _isbn(raw: str) -> str:
    value = raw.strip()
    if (wrapped := _EXCEL_TEXT.fullmatch(value)) is not None:
        value = wrapped[1].strip()
    if not value:
        raise _Bad("isbn: missing; every row needs the title's ISBN")
    if _SCIENTIFIC.fullmatch(value):
        raise _Bad(f"isbn: {_show(value)} is a number a spreadsheet rounded, its digits are "
                   f"lost; format the ISBN column as text and export again")
    if len(value) > MAX_LENGTH["isbn"]:
        raise _Bad(f"isbn: {_show(value)} is {len(value)} characters long; expected an "
                   f"ISBN of at most {MAX_LENGTH['isbn']}")
    return value


def _quantity(raw: str) -> int:
    expected = f"a whole number of copies (1-{MAX_QUANTITY})"
    value = _number_text(raw)
    if not value:
        raise _Bad(f"quantity: missing; expected {expected}")
    match = _COUNT.fullmatch(value)
    if match is None:
        raise _Bad(f"quantity: {_show(value)} is not {expected}")
    digits = match[2].lstrip("0")
    if match[1] == "-" or len(digits) > len(str(MAX_QUANTITY)) \
            or not 1 <= int(digits or "0") <= MAX_QUANTITY:
        raise _Bad(f"quantity: {_show(value)} is out of range; expected {expected}")
    return int(digits)


def _price(raw: str, *, decimal_comma: bool, line: int, currencies: dict[str, int]) -> Decimal:
    """The amount to the cent. A currency mark is noted in `currencies` (with the first line
    that used it) so that a second currency in the same file is refused."""
    expected = "expected an amount of 0 or more with at most 2 decimals, e.g. 12.50"
    value = _number_text(raw)
    if not value:
        raise _Bad(f"price: missing; {expected}")
    body, marks = value, set()
    if body[:1] in SYMBOLS:
        marks.add(SYMBOLS[body[0]])
        body = body[1:].lstrip()
    elif (before := _CODE_BEFORE.match(body)) is not None:
        marks.add(before[1].upper())
        body = body[before.end():]
    if body[-1:] in SYMBOLS:
        marks.add(SYMBOLS[body[-1]])
        body = body[:-1].rstrip()
    elif (after := _CODE_AFTER.search(body)) is not None and after.end() == len(body):
        marks.add(after[1].upper())
        body = body[:after.start()]
    named = {CODE_ALIASES.get(mark, mark) for mark in marks}
    if len(named) > 1:
        raise _Bad(f"price: {_show(value)} names two currencies; {expected}")
    match = _AMOUNT.fullmatch(body)
    if match is None or not (match[2] or match[4]):
        raise _Bad(f"price: {_show(value)} is not a price; {expected}")
    sign, whole, point, cents = match.groups(default="")
    if sign:
        raise _Bad(f"price: {_show(value)} is negative; {expected}")
    if point == "," and not decimal_comma:
        raise _Bad(f"price: {_show(value)} has a decimal comma in a comma-separated file; "
                   f"write 12.50, or separate the columns with semicolons")
    cents, whole = cents.rstrip("0"), whole.lstrip("0")
    if len(cents) > 2:
        raise _Bad(f"price: {_show(value)} has more than 2 decimal places; {expected}")
    if len(whole) > MAX_PRICE_DIGITS:
        raise _Bad(f"price: {_show(value)} is too large; at most {'9' * MAX_PRICE_DIGITS}.99")
    for currency in named:
        other = next((c for c in currencies if c != currency), None)
        if other is not None:
            raise _Bad(f"price: {_show(value)} is in {currency}, but line {currencies[other]} "
                       f"is in {other}; a quote list is in one currency")
        currencies.setdefault(currency, line)
    return Decimal(f"{whole or '0'}.{cents or '0'}").quantize(CENT)


def _year(raw: str) -> int | None:
    value = _number_text(raw)
    if not value:
        return None
    match = _YEAR.fullmatch(value)
    if match is None:
        raise _Bad(f"year: {_show(value)} is not a year; expected 4 digits, e.g. 2019 "
                   f"({FIRST_YEAR}-{LAST_YEAR})")
    year = int(match[1])
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise _Bad(f"year: {_show(value)} is out of range; expected {FIRST_YEAR}-{LAST_YEAR}")
    return year


def _text(field: str) -> Callable[[str], str | None]:
    def read(raw: str) -> str | None:
        value = raw.strip()
        if not value:
            return None
        if len(value) > MAX_LENGTH[field]:
            raise _Bad(f"{field}: {_show(value)} is {len(value)} characters long; at most "
                       f"{MAX_LENGTH[field]}")
        return value
    return read

