"""Reading MARC 21 files (binary ISO 2709) into bib data, with pymarc.

Fields read: ISBN 020$a, title 245$a, author 100$a, publisher 260$b or 264$b, year
260$c or 264$c. A record that can't be read or lacks an ISBN or a title becomes a skip
reason, so one bad record never costs the rest of the file.
"""

from __future__ import annotations

import io

from pymarc import MARCReader, Record
from pymarc.exceptions import PymarcException

from services.cataloging import domain


class NotMarc(ValueError):
    """The upload is not a MARC (ISO 2709) file at all."""


def _first(record: Record, tags: tuple[str, ...], code: str) -> str | None:
    for tag in tags:
        for fld in record.get_fields(tag):
            for value in fld.get_subfields(code):
                if value and value.strip():
                    return value
    return None


def _isbn(record: Record) -> str | None:
    """The first 020$a that is a valid ISBN, else the first 020$a with any digit."""
    given = [v for fld in record.get_fields("020") for v in fld.get_subfields("a") if v]
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


def read_marc(data: bytes) -> list[domain.BibData | str]:
    """One entry per record in the file: its bib data or the reason it is skipped.

    Raises NotMarc when not even the first record has an ISO 2709 leader.
    """
    if not data.strip():
        raise NotMarc("not a MARC (ISO 2709) file: it is empty")
    reader = MARCReader(io.BytesIO(data), to_unicode=True)
    out: list[domain.BibData | str] = []
    try:
        for record in reader:
            if record is None:
                exc = reader.current_exception
                if not out:
                    raise NotMarc(f"not a MARC (ISO 2709) file: {_describe(exc)}")
                out.append(f"unreadable record: {_describe(exc)}")
                continue
            out.append(bib_from_record(record))
    except PymarcException as exc:  # a broken tail after good records
        if not out:
            raise NotMarc(f"not a MARC (ISO 2709) file: {_describe(exc)}") from exc
        out.append(f"unreadable record: {_describe(exc)}")
    return out


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unreadable"
    return str(exc) or type(exc).__name__
