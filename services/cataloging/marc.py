"""Reading MARC files (binary ISO 2709) into bib data, with pymarc: MARC 21, and UNIMARC
as China's national agency writes it (CNMARC).

MARC 21: ISBN 020$a, title 245$a, author 100$a, publisher 264$b or 260$b, year 264$c or
260$c, language 008/35-37 or 041$a, classification 084$a with $2 clc (中图法), else 082$a
(Dewey), else 050$a $b (LC), subjects 650/600/610/651 $a. CNMARC: ISBN 010$a, title 200$a,
author 700$a (else 701$a, else 200$f), publisher 210$c or 214$c, year 210$d or 214$d,
language 101$a, classification 690$a (中图法), else 676$a, else 680$a, subjects
606/600/601/607 $a. The record itself is kept as ISO 2709.

The format is told by the caller or seen in the first record's directory (a 245 is
MARC 21; a 200 without one is UNIMARC). CNMARC is read as UTF-8, which is how CNMARC is
distributed today; MARC 21 follows its leader (MARC-8 or UTF-8). A record that can't be
read or lacks an ISBN or a title becomes a skip reason, so one bad record never costs the
rest of the file.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO, Literal

from pymarc import Record

from services.cataloging import domain


class NotMarc(ValueError):
    """The upload is not a MARC (ISO 2709) file at all."""


MarcFormat = Literal["marc21", "unimarc"]


def detect_format(data: bytes) -> MarcFormat:
    """MARC 21 or UNIMARC, from the tags in the first record's directory."""
    try:
        base = int(data[12:17])
    except ValueError:
        return "marc21"  # not a leader: the reader says why
    directory = data[24:max(24, base - 1)]
    tags = {directory[i:i + 3] for i in range(0, len(directory) - 11, 12)}
    return "unimarc" if b"200" in tags and b"245" not in tags else "marc21"


def _first(record: Record, tags: tuple[str, ...], code: str) -> str | None:
    for tag in tags:
        for fld in record.get_fields(tag):
            for value in fld.get_subfields(code):
                if value and value.strip():
                    return value
    return None


def _isbn(record: Record, tag: str = "020") -> str | None:
    """The first ISBN field's $a that is a valid ISBN, else the first with any digit."""
    given = [v for fld in record.get_fields(tag) for v in fld.get_subfields("a") if v]
    normalised = [(v, domain.normalize_isbn(v)) for v in given]
    for value, isbn in normalised:
        if isbn is not None and isbn.valid:
            return value
    return next((value for value, isbn in normalised if isbn is not None), None)


def _all(record: Record, tags: tuple[str, ...], code: str) -> tuple[str, ...]:
    """Every non-blank `code` subfield of these tags, cleaned, once each, in record order."""
    seen: dict[str, None] = {}
    for fld in record.get_fields(*tags):
        for value in fld.get_subfields(code):
            cleaned = domain.clean_marc_text(value)
            if cleaned:
                seen.setdefault(cleaned, None)
    return tuple(seen)


def _language(code: str | None) -> str | None:
    code = (code or "").strip().lower()
    return code if len(code) == 3 and code.isalpha() else None


def _marc21_classification(record: Record) -> tuple[str, str] | None:
    for fld in record.get_fields("084"):  # other schemes, named in $2: 中图法 is `clc`
        number = fld.get("a")
        if number and (fld.get("2") or "").strip().lower() == "clc":
            return number.strip(), "clc"
    for tag, scheme in (("082", "ddc"), ("050", "lcc")):
        for fld in record.get_fields(tag):
            number = fld.get("a")
            if number and number.strip():
                item = fld.get("b") if tag == "050" else None
                return (f"{number.strip()} {item.strip()}" if item else number.strip()), scheme
    return None


def _unimarc_classification(record: Record) -> tuple[str, str] | None:
    for tag, scheme in (("690", "clc"), ("676", "ddc"), ("680", "lcc")):
        number = _first(record, (tag,), "a")
        if number:
            return number.strip(), scheme
    return None


def _as_marc(record: Record) -> bytes | None:
    try:
        return record.as_marc()
    except (UnicodeError, ValueError):  # kept only when it can be written back as read
        return None


def bib_from_record(record: Record) -> domain.BibData | str:
    """The bib data of one record, or why it can't make a bib."""
    isbn = _isbn(record)
    if isbn is None:
        return "no ISBN in 020$a"
    title = domain.clean_marc_text(_first(record, ("245",), "a"))
    if title is None:
        return "no title in 245$a"
    fixed = record.get("008")
    language = _language(fixed.data[35:38] if fixed is not None and fixed.data else None)
    classified = _marc21_classification(record)
    return domain.BibData(
        isbn=isbn,
        title=title,
        author=domain.clean_marc_text(_first(record, ("100",), "a")),
        publisher=domain.clean_marc_text(_first(record, ("264", "260"), "b")),
        year=domain.year_of(_first(record, ("264", "260"), "c")),
        language=language or _language(_first(record, ("041",), "a")),
        classification=classified[0] if classified else None,
        classification_scheme=classified[1] if classified else None,
        subjects=_all(record, ("650", "600", "610", "651"), "a"),
        marc=_as_marc(record),
    )


def bib_from_unimarc(record: Record) -> domain.BibData | str:
    """The bib data of one UNIMARC (CNMARC) record, or why it can't make a bib."""
    isbn = _isbn(record, "010")
    if isbn is None:
        return "no ISBN in 010$a"
    title = domain.clean_marc_text(_first(record, ("200",), "a"))
    if title is None:
        return "no title in 200$a"
    author = (_first(record, ("700", "701"), "a") or _first(record, ("200",), "f"))
    classified = _unimarc_classification(record)
    return domain.BibData(
        isbn=isbn,
        title=title,
        author=domain.clean_marc_text(author),
        publisher=domain.clean_marc_text(_first(record, ("210", "214"), "c")),
        year=domain.year_of(_first(record, ("210", "214"), "d")),
        language=_language(_first(record, ("101",), "a")),
        classification=classified[0] if classified else None,
        classification_scheme=classified[1] if classified else None,
        subjects=_all(record, ("606", "600", "601", "607"), "a"),
        marc=_as_marc(record),
    )


END_OF_RECORD = b"\x1d"


def split_records(stream: BinaryIO) -> Iterator[bytes]:
    """Each record's bytes as the stream holds them, by the length in its leader.

    A record whose leader gives no sane length runs to the next end-of-record mark, so a
    broken record costs only itself: the reader finds the next one where it starts.
    """
    source = _Source(stream)
    while True:
        head = source.read(5)
        if not head:
            return
        if head.isdigit() and int(head) >= 24:
            yield head + source.read(int(head) - 5)
            continue
        chunk = bytearray(head)
        while END_OF_RECORD not in chunk:
            more = source.read(4096)
            if not more:
                break
            chunk += more
        cut = chunk.find(END_OF_RECORD)
        if cut < 0:
            yield bytes(chunk)
            return
        yield bytes(chunk[:cut + 1])
        source.put_back(bytes(chunk[cut + 1:]))  # read past the mark: the next record's


class _Source:
    """A stream that can take back bytes read too far."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.head = stream, b""

    def put_back(self, data: bytes) -> None:
        self.head = data + self.head

    def read(self, n: int) -> bytes:
        out, self.head = self.head[:n], self.head[n:]
        if len(out) < n:
            out += self.stream.read(n - len(out))
        return out


def read_marc(data: bytes, marc_format: MarcFormat | None = None,
              ) -> list[domain.BibData | str]:
    """One entry per record in the file: its bib data or the reason it is skipped.

    `marc_format` None: seen from the first record. Raises NotMarc when the file does not
    start with an ISO 2709 leader (or is empty).
    """
    if not data.strip():
        raise NotMarc("not a MARC (ISO 2709) file: it is empty")
    if not data[:5].isdigit():
        raise NotMarc("not a MARC (ISO 2709) file: it does not start with a record length "
                      f"(got {data[:5]!r})")
    unimarc = (marc_format or detect_format(data)) == "unimarc"
    read = bib_from_unimarc if unimarc else bib_from_record
    out: list[domain.BibData | str] = []
    for raw in split_records(io.BytesIO(data)):
        try:
            record = Record()
            record.decode_marc(raw, to_unicode=True, force_utf8=unimarc)
        except Exception as exc:  # noqa: BLE001 — untrusted bytes: any failure rejects the record
            out.append(f"unreadable record: {_describe(exc)}")
            continue
        out.append(read(record))
    return out


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unreadable"
    return str(exc) or type(exc).__name__
