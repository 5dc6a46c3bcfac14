"""Reading MARC files (binary ISO 2709) into bib data, with pymarc: MARC 21, and UNIMARC
as China's national agency writes it (CNMARC).

MARC 21: ISBN 020$a, title 245$a, author 100$a, publisher 264$b or 260$b, year 264$c or
260$c. CNMARC: ISBN 010$a, title 200$a, author 700$a (else 701$a, else 200$f), publisher
210$c or 214$c, year 210$d or 214$d. The format is told by the caller or seen in the first
record's directory (a 245 is MARC 21; a 200 without one is UNIMARC). CNMARC is read as
UTF-8, which is how CNMARC is distributed today; MARC 21 follows its leader (MARC-8 or
UTF-8). A record that can't be read or lacks an ISBN or a title becomes a skip reason, so
one bad record never costs the rest of the file.
"""

from __future__ import annotations

import io
from typing import Literal

from pymarc import MARCReader, Record
from pymarc.exceptions import PymarcException

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


def bib_from_record(record: Record) -> domain.BibData | str:
    """The bib data of one record, or why it can't make a bib."""
    isbn = _isbn(record)
    if isbn is None:
        return "no ISBN in 020$a"
    title = domain.clean_marc_text(_first(record, ("245",), "a"))
    if title is None:
        return "no title in 245$a"
    return domain.BibData(
        isbn=isbn,
        title=title,
        author=domain.clean_marc_text(_first(record, ("100",), "a")),
        publisher=domain.clean_marc_text(_first(record, ("264", "260"), "b")),
        year=domain.year_of(_first(record, ("264", "260"), "c")),
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
    return domain.BibData(
        isbn=isbn,
        title=title,
        author=domain.clean_marc_text(author),
        publisher=domain.clean_marc_text(_first(record, ("210", "214"), "c")),
        year=domain.year_of(_first(record, ("210", "214"), "d")),
    )


def read_marc(data: bytes, marc_format: MarcFormat | None = None,
              ) -> list[domain.BibData | str]:
    """One entry per record in the file: its bib data or the reason it is skipped.

    `marc_format` None: seen from the first record. Raises NotMarc when not even the first
    record has an ISO 2709 leader.
    """
    if not data.strip():
        raise NotMarc("not a MARC (ISO 2709) file: it is empty")
    unimarc = (marc_format or detect_format(data)) == "unimarc"
    read = bib_from_unimarc if unimarc else bib_from_record
    reader = MARCReader(io.BytesIO(data), to_unicode=True, force_utf8=unimarc)
    out: list[domain.BibData | str] = []
    try:
        for record in reader:
            if record is None:
                exc = reader.current_exception
                if not out:
                    raise NotMarc(f"not a MARC (ISO 2709) file: {_describe(exc)}")
                out.append(f"unreadable record: {_describe(exc)}")
                continue
            out.append(read(record))
    except PymarcException as exc:  # a broken tail after good records
        if not out:
            raise NotMarc(f"not a MARC (ISO 2709) file: {_describe(exc)}") from exc
        out.append(f"unreadable record: {_describe(exc)}")
    return out


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unreadable"
    return str(exc) or type(exc).__name__
