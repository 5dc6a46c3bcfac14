"""Which MARC a file holds, from its first record's directory."""

from __future__ import annotations

import io

from pymarc import Field, MARCWriter, Record, Subfield

from services.cataloging import domain, marc


def one(*fields: tuple[str, str]) -> bytes:
    record = Record(force_utf8=True)
    for tag, value in fields:
        record.add_field(Field(tag=tag, indicators=[" ", " "], subfields=[Subfield("a", value)]))
    buffer = io.BytesIO()
    MARCWriter(buffer).write(record)
    return buffer.getvalue()


def test_a_245_is_marc21_and_a_200_without_one_is_unimarc() -> None:
    assert marc.detect_format(one(("020", "9787020002207"), ("245", "Wei cheng"))) == "marc21"
    assert marc.detect_format(one(("010", "9787020002207"), ("200", "围城"))) == "unimarc"
    # a MARC 21 record may carry a local 200 too: its 245 decides
    assert marc.detect_format(one(("200", "x"), ("245", "Wei cheng"))) == "marc21"


def test_what_is_not_a_leader_is_left_to_the_reader() -> None:
    assert marc.detect_format(b"this is not marc at all, not even close") == "marc21"
    assert marc.detect_format(b"") == "marc21"


def test_unimarc_fields_make_the_bib() -> None:
    [bib] = marc.read_marc(one(("010", "7-02-000220-X"), ("200", "围城 /"), ("700", "钱锺书"),
                               ("210", "x")))
    assert not isinstance(bib, str)
    assert (bib.isbn, bib.title, bib.author) == ("7-02-000220-X", "围城", "钱锺书")
    # no ISBN is no longer a reason to skip: the bib is matched by title, author and year
    [no_isbn] = marc.read_marc(one(("200", "无号")), "unimarc")
    assert not isinstance(no_isbn, str)
    assert no_isbn == domain.BibData(isbn=None, title="无号", marc=no_isbn.marc)
    [reason] = marc.read_marc(one(("010", "7-02-000220-X"), ("700", "钱锺书")), "unimarc")
    assert reason == "no title in 200$a"


def record_with(*fields: Field) -> bytes:
    record = Record(force_utf8=True)
    for fld in fields:
        record.add_field(fld)
    buffer = io.BytesIO()
    MARCWriter(buffer).write(record)
    return buffer.getvalue()


def sf(tag: str, *pairs: str) -> Field:
    return Field(tag=tag, indicators=[" ", " "],
                 subfields=[Subfield(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)])


def test_marc21_takes_clc_from_084_before_dewey_and_lc() -> None:
    base = (sf("020", "a", "9787020002207"), sf("245", "a", "Wei cheng /"))
    [bib] = marc.read_marc(record_with(*base, sf("050", "a", "PL2747"), sf("082", "a", "895.1"),
                                       sf("084", "a", "I246", "2", "rvk"),
                                       sf("084", "a", "I246.57", "2", "clc"),
                                       sf("041", "a", "chi"), sf("650", "a", "Satire."),
                                       sf("650", "a", "Satire"), sf("651", "a", "China.")))
    assert not isinstance(bib, str)
    assert (bib.classification, bib.classification_scheme) == ("I246.57", "clc")
    assert (bib.language, bib.subjects) == ("chi", ("Satire", "China"))
    assert bib.marc is not None and marc.read_marc(bib.marc)[0] == bib  # kept as read
    [dewey] = marc.read_marc(record_with(*base, sf("050", "a", "PL2747"), sf("082", "a", "895.1")))
    assert not isinstance(dewey, str) and dewey.classification_scheme == "ddc"
