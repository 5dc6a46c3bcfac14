"""Reading MARC files as a stream: ISO 2709 and MARCXML, broken records, legacy holdings."""

from __future__ import annotations

import codecs
import io
import itertools
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path

import isbnlib
import pytest
from pymarc import Field, Indicators, MARCWriter, Record, Subfield, XMLWriter
from pymarc import record_to_xml as pymarc_record_to_xml

from services.cataloging import domain, marc
from services.cataloging.domain import Holding

DATA = Path(__file__).parent / "data" / "marc"
MB = 1024 * 1024

# Real books: 围城 (Fortress Besieged) by 钱锺书, 人民文学出版社 1991, and its English
# translation by Jeanne Kelly and Nathan K. Mao, New Directions 2004; 三体, 重庆出版社 2008.
WEICHENG_1991 = "9787020024759"
FORTRESS_BESIEGED = "9780811215671"
SANTI = "9787536692930"


def test_the_isbns_used_here_are_valid() -> None:
    for isbn in (WEICHENG_1991, FORTRESS_BESIEGED, SANTI, "7-02-002475-0"):
        assert isbnlib.is_isbn13(isbn) or isbnlib.is_isbn10(isbnlib.canonical(isbn))


# --- building records ------------------------------------------------------------------------

def sf(tag: str, *pairs: str, ind: str = "  ") -> Field:
    return Field(tag=tag, indicators=Indicators(ind[0], ind[1]),
                 subfields=[Subfield(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)])


def record(*fields: Field, leader: str | None = None) -> Record:
    rec = Record(force_utf8=True)
    if leader is not None:
        rec.leader = leader
    for fld in fields:
        rec.fields.append(fld)
    return rec


def iso(*records: Record) -> bytes:
    buffer = io.BytesIO()
    writer = MARCWriter(buffer)
    for rec in records:
        writer.write(rec)
    return buffer.getvalue()


def record_to_xml(rec: Record, namespace: bool = False) -> bytes:
    """One record as MARCXML, without the XML declaration or a collection around it."""
    out: bytes = pymarc_record_to_xml(rec, namespace=namespace)  # type: ignore[no-untyped-call]
    return out


def xml(*records: Record) -> bytes:
    """A MARCXML collection in the MARC 21 slim namespace, as pymarc writes it."""
    buffer = io.BytesIO()
    writer = XMLWriter(buffer)
    for rec in records:
        writer.write(rec)
    writer.close(close_fh=False)
    return buffer.getvalue()


def fortress_besieged(*extra: Field) -> Record:
    """The New Directions edition, as the Library of Congress would catalogue it."""
    fixed = "040130s2004    nyu" + " " * 17 + "eng d"
    return record(
        Field(tag="001", data="fb-2004-0001"),
        Field(tag="008", data=fixed),
        sf("020", "a", f"{FORTRESS_BESIEGED} (pbk.)"),
        sf("041", "a", "eng", "h", "chi", ind="1 "),
        sf("082", "a", "895.1/351", "2", "22", ind="04"),
        sf("100", "a", "Qian, Zhongshu,", "d", "1910-1998.", ind="1 "),
        sf("245", "a", "Fortress besieged /",
           "c", "Qian Zhongshu ; translated by Jeanne Kelly and Nathan K. Mao.", ind="10"),
        sf("260", "a", "New York :", "b", "New Directions,", "c", "2004."),
        sf("650", "a", "Intellectuals", "z", "China", "v", "Fiction.", ind=" 0"),
        *extra,
    )


def weicheng(*extra: Field, isbn: str | None = "7-02-002475-0") -> Record:
    """人民文学出版社 1991, as CNMARC (UNIMARC), the way China's national agency writes it."""
    return record(
        Field(tag="001", data="wc-1991-0001"),
        *([sf("010", "a", isbn)] if isbn else []),
        sf("101", "a", "chi", ind="0 "),
        sf("200", "a", "围城", "9", "wei cheng", "f", "钱锺书著", ind="1 "),
        sf("210", "a", "北京", "c", "人民文学出版社", "d", "1991"),
        sf("606", "a", "长篇小说", "y", "中国", "z", "现代", ind="0 "),
        sf("690", "a", "I246.57", "v", "4"),
        sf("700", "a", "钱锺书", "4", "著", ind=" 0"),
        *extra,
        leader="00000nam0 2200000   450 ",
    )


def santi() -> Record:
    return record(sf("020", "a", SANTI), sf("100", "a", "刘慈欣"), sf("245", "a", "三体 /"),
                  sf("260", "b", "重庆出版社,", "c", "2008."))


def bibs(entries: Iterable[domain.BibData | str]) -> list[domain.BibData]:
    out = []
    for entry in entries:
        assert not isinstance(entry, str), entry
        out.append(entry)
    return out


# --- ISO 2709 and MARCXML --------------------------------------------------------------------

def test_a_marc21_record_makes_the_bib_with_its_koha_items() -> None:
    items = (sf("952", "a", "JX-HN-01", "b", "JX-HN-02", "o", "895.1 QIA", "p", "31234000123456"),
             sf("952", "b", "JX-HN-03", "p", " 31234000123457 ", "o", "  "),
             sf("952", "a", "  ", "p", "31234000123458"))  # no branch: not a holding
    [bib] = bibs(marc.iter_marc(io.BytesIO(iso(fortress_besieged(*items)))))
    assert (bib.isbn, bib.title, bib.author, bib.publisher, bib.year) == (
        f"{FORTRESS_BESIEGED} (pbk.)", "Fortress besieged", "Qian, Zhongshu", "New Directions",
        2004)
    assert (bib.language, bib.classification, bib.classification_scheme, bib.subjects) == (
        "eng", "895.1/351", "ddc", ("Intellectuals",))
    assert bib.holdings == (Holding("JX-HN-01", "31234000123456", "895.1 QIA"),
                            Holding("JX-HN-03", "31234000123457", None))


def test_marc_holdings_852_take_the_sublocation_and_the_call_number_parts() -> None:
    holdings = (sf("852", "a", "JX", "b", "JX-HN-02", "h", "895.1/351", "i", "Q1f",
                   "p", "31234000123459", ind="0 "),
                sf("852", "a", "JX-HN-03", "h", "895.1/351"),
                sf("852", "a", "JX-HN-04", "i", "Q1f"),
                sf("852", "h", "895.1/351", "p", "31234000123460"))  # no branch
    [bib] = bibs(marc.read_marc(iso(fortress_besieged(*holdings))))
    assert bib.holdings == (Holding("JX-HN-02", "31234000123459", "895.1/351 Q1f"),
                            Holding("JX-HN-03", None, "895.1/351"),
                            Holding("JX-HN-04", None, "Q1f"))


def test_cnmarc_holdings_905_join_class_number_and_book_mark() -> None:
    copies = (sf("905", "a", "JX-HN-01", "b", "00125437", "d", "I246.57", "e", "Q52", "f", "1"),
              sf("905", "a", "JX-HN-02", "b", "00098310", "d", "I246.57"),
              sf("905", "a", "JX-HN-03", "e", "Q52"),
              sf("905", "b", "00098311", "d", "I246.57"))  # no holding library
    [bib] = bibs(marc.read_marc(iso(weicheng(*copies))))
    assert (bib.isbn, bib.title, bib.author, bib.publisher, bib.year, bib.language) == (
        "7-02-002475-0", "围城", "钱锺书", "人民文学出版社", 1991, "chi")
    assert (bib.classification, bib.classification_scheme, bib.subjects) == (
        "I246.57", "clc", ("长篇小说",))
    assert bib.holdings == (Holding("JX-HN-01", "00125437", "I246.57/Q52"),
                            Holding("JX-HN-02", "00098310", "I246.57"),
                            Holding("JX-HN-03", None, None))


def test_holdings_fields_of_the_other_format_are_not_read() -> None:
    [marc21] = bibs(marc.read_marc(iso(fortress_besieged(sf("905", "a", "JX-HN-01")))))
    [cnmarc] = bibs(marc.read_marc(iso(weicheng(sf("952", "a", "JX-HN-01")))))
    assert marc21.holdings == cnmarc.holdings == ()


def test_a_record_without_an_isbn_makes_a_bib_without_one() -> None:
    no_isbn = record(sf("100", "a", "Qian, Zhongshu."), sf("245", "a", "Wei cheng /"),
                     sf("260", "c", "[1947?]"))
    no_title = record(sf("020", "a", WEICHENG_1991), sf("100", "a", "Qian, Zhongshu."))
    blank_isbn = fortress_besieged()
    blank_isbn.remove_fields("020")
    blank_isbn.add_ordered_field(sf("020", "q", "pbk."))
    first, second, reason = marc.read_marc(iso(no_isbn, blank_isbn, no_title))
    assert isinstance(first, domain.BibData) and isinstance(second, domain.BibData)
    assert (first.isbn, first.title, first.author, first.year) == (
        None, "Wei cheng", "Qian, Zhongshu", 1947)
    assert (second.isbn, second.title) == (None, "Fortress besieged")
    assert reason == "no title in 245$a"
    [cnmarc] = bibs(marc.read_marc(iso(weicheng(isbn=None))))
    assert (cnmarc.isbn, cnmarc.title) == (None, "围城")


def test_marcxml_reads_as_its_iso_2709_does() -> None:
    records = [fortress_besieged(sf("952", "a", "JX-HN-01", "p", "31234000123456")), santi()]
    from_xml = bibs(marc.iter_marc(io.BytesIO(xml(*records))))
    assert from_xml == bibs(marc.read_marc(iso(*records)))
    assert [b.title for b in from_xml] == ["Fortress besieged", "三体"]
    assert from_xml[0].holdings == (Holding("JX-HN-01", "31234000123456", None),)
    for bib in from_xml:  # the record is kept as ISO 2709, UTF-8, and reads back the same
        assert bib.marc is not None and bib.marc[9:10] == b"a"
        assert marc.read_marc(bib.marc) == [bib]


def test_marcxml_without_namespace_with_a_bom_and_leading_space() -> None:
    body = b"".join(record_to_xml(r) for r in (fortress_besieged(), santi()))
    upload = (b"\xef\xbb\xbf\n\n  <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<collection>"
              + body + b"</collection>\n")
    titles = [b.title for b in bibs(marc.read_marc(upload))]
    assert titles == ["Fortress besieged", "三体"]
    # a lone record, namespaced, with no collection around it
    [lone] = bibs(marc.read_marc(record_to_xml(santi(), namespace=True)))
    assert (lone.isbn, lone.title, lone.author) == (SANTI, "三体", "刘慈欣")


def test_marcxml_of_cnmarc_is_seen_as_unimarc() -> None:
    upload = (DATA / "weicheng-cnmarc.xml").read_bytes()
    assert upload.startswith(b"\xef\xbb\xbf")
    [bib] = bibs(marc.iter_marc(io.BytesIO(upload)))
    assert (bib.isbn, bib.title, bib.author, bib.publisher, bib.year) == (
        "7-02-002475-0", "围城", "钱锺书", "人民文学出版社", 1991)
    assert (bib.classification, bib.classification_scheme) == ("I246.57", "clc")
    assert bib.holdings == (Holding("JX-HN-01", "00125437", "I246.57/Q52"),
                            Holding("JX-HN-02", "00098310", "I246.57"))
    assert bib.marc is not None and marc.read_marc(bib.marc, "unimarc") == [bib]
    # told the format, the caller wins: as MARC 21 the record has no 245
    assert marc.read_marc(upload, "marc21") == ["no title in 245$a"]


@pytest.mark.parametrize("encoding", ["GBK", "GB18030", "gb2312"])
def test_marcxml_in_a_chinese_encoding_is_converted_as_it_is_read(encoding: str) -> None:
    utf8 = (DATA / "weicheng-cnmarc.xml").read_bytes().removeprefix(b"\xef\xbb\xbf")
    upload = utf8.decode().replace('encoding="UTF-8"', f'encoding="{encoding}"').encode(encoding)
    assert marc.read_marc(upload) == marc.read_marc(utf8)
    # a byte that is not of the encoding ends the reading, and says so
    broken = upload.replace(">人民文学".encode(encoding), b">\xff\xff", 1)
    [reason] = marc.read_marc(broken)
    assert reason == (f"MARCXML is not the {codecs.lookup(encoding).name} it declares (byte "
                      "b'\\xff' at line 21), in the record from line 5: the rest of the file "
                      "is not read")


def test_marcxml_in_a_wrapper_and_in_marcxchange_is_read() -> None:
    sru = (b'<searchRetrieveResponse xmlns="http://www.loc.gov/zing/srw/"><records><record>'
           b"<recordData>" + record_to_xml(fortress_besieged(), namespace=True)
           + b"</recordData></record></records></searchRetrieveResponse>")
    [bib] = bibs(marc.read_marc(sru))
    assert bib.title == "Fortress besieged"
    marcxchange = (xml(weicheng()).replace(b"http://www.loc.gov/MARC21/slim",
                                           b"info:lc/xmlns/marcxchange-v2"))
    [cn] = bibs(marc.read_marc(marcxchange))
    assert (cn.title, cn.author) == ("围城", "钱锺书")


# --- what is not MARC, and broken records ----------------------------------------------------

@pytest.mark.parametrize("upload, why", [
    (b"", "empty"), (b" \r\n\t \n", "empty"), (b"\xef\xbb\xbf\n", "empty"),
    (b"title,author\n", "neither"), (b"0123x00000", "neither"), (b"\xef\xbb\xbf01234", "neither"),
])
def test_what_is_not_marc_is_refused_when_the_reader_is_made(upload: bytes, why: str) -> None:
    with pytest.raises(marc.NotMarc, match=why):
        marc.iter_marc(io.BytesIO(upload))  # not iterated: refused at once
    with pytest.raises(marc.NotMarc, match=why):
        marc.read_marc(upload)


def test_a_truncated_iso_record_costs_only_itself() -> None:
    first, second, third = (iso(r) for r in (fortress_besieged(), weicheng(), santi()))
    for keep in (30, len(second) // 2, len(second) - 1):  # cut in the directory, data, mark
        [a, broken, c] = marc.read_marc(first + second[:keep] + third)
        assert isinstance(a, domain.BibData) and a.title == "Fortress besieged"
        assert isinstance(broken, str) and broken.startswith("unreadable record")
        assert isinstance(c, domain.BibData) and c.title == "三体"
    # cut short at the end of the file
    assert marc.read_marc(first + third[:-20])[1] == (
        "unreadable record: Record length in leader is greater than the length of data")


def test_a_truncated_record_longer_than_a_read_still_finds_the_next_leader() -> None:
    long_note = sf("500", "a", "围城" * 3000)  # 18 kB of UTF-8: the search crosses reads
    big, last = iso(fortress_besieged(long_note)), iso(santi())
    for cut in range(4096 * 3 - 30, 4096 * 3 + 2, 3):  # the next leader spans a read's end
        entries = marc.read_marc(big[:cut] + last)
        assert entries[0] == ("unreadable record: Record length in leader is greater than "
                              "the length of data"), cut
        assert [b.title for b in bibs(entries[1:])] == ["三体"]


def test_a_bad_leader_or_a_wrong_length_in_the_middle_costs_only_itself() -> None:
    first, second, third = (iso(r) for r in (fortress_besieged(), santi(), santi()))
    bad_leader = b"abcde" + second[5:]
    too_long = b"%05d" % (len(second) + 40) + second[5:]
    for middle in (bad_leader, too_long):
        [a, broken, c] = marc.read_marc(first + middle + third)
        assert isinstance(broken, str) and broken.startswith("unreadable record")
        assert isinstance(a, domain.BibData) and isinstance(c, domain.BibData)
        assert (a.title, c.title) == ("Fortress besieged", "三体")
    # a length too short ends before the record's mark: the record runs to it, and reads
    too_short = b"%05d" % (len(second) - 40) + second[5:]
    titles = [b.title for b in bibs(marc.read_marc(first + too_short + third))]
    assert titles == ["Fortress besieged", "三体", "三体"]


def test_white_space_between_and_after_iso_records_is_not_a_record() -> None:
    first, third = iso(fortress_besieged()), iso(santi())
    entries = marc.read_marc(first + b"\r\n" + third + b"\n\n")
    assert [b.title for b in bibs(entries)] == ["Fortress besieged", "三体"]


def xml_of(*records: bytes) -> bytes:
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<collection xmlns="http://www.loc.gov/MARC21/slim">\n'
            + b"\n".join(records) + b"\n</collection>\n")


BAD_RECORDS = {
    "datafield tag '24'": b'<datafield tag="24" ind1=" " ind2=" "><subfield code="a">x'
                          b"</subfield></datafield>",
    "subfield code 'ab'": b'<datafield tag="245" ind1="1" ind2="0"><subfield code="ab">x'
                          b"</subfield></datafield>",
    "subfield code ''": b'<datafield tag="245" ind1="1" ind2="0"><subfield>x</subfield>'
                        b"</datafield>",
    "indicators '10'": b'<datafield tag="245" ind1="10" ind2="0"><subfield code="a">x'
                       b"</subfield></datafield>",
    "controlfield tag '245'": b'<controlfield tag="245">x</controlfield>',
    "datafield tag '001'": b'<datafield tag="001"><subfield code="a">x</subfield></datafield>',
    "is not 24 ASCII characters": b"<leader>00000nam</leader>",
    "'00000nam a2200000 a 450é'": b"<leader>00000nam a2200000 a 450\xc3\xa9</leader>",
    "a record inside a record": b"<record><leader>00000nam a2200000 a 4500</leader></record>",
    "<b> inside <subfield>": b'<datafield tag="245" ind1="1" ind2="0"><subfield code="a">'
                             b"<b>x</b></subfield></datafield>",
    "longer than an ISO 2709 record": b'<datafield tag="500" ind1=" " ind2=" ">'
                                      b'<subfield code="a">' + b"x" * 100_000
                                      + b"</subfield></datafield>",
}


@pytest.mark.parametrize("why", list(BAD_RECORDS))
def test_a_bad_marcxml_record_costs_only_itself(why: str) -> None:
    bad = b"<record>" + BAD_RECORDS[why] + b"</record>"
    entries = marc.read_marc(xml_of(record_to_xml(fortress_besieged()), bad,
                                    record_to_xml(santi())))
    assert len(entries) == 3
    assert isinstance(entries[1], str) and entries[1].startswith("bad MARCXML record from line 4")
    assert why in entries[1]
    assert [b.title for b in bibs((entries[0], entries[2]))] == ["Fortress besieged", "三体"]


def test_an_empty_marcxml_record_is_a_reason_and_a_local_control_field_is_passed_over() -> None:
    aleph = record_to_xml(santi()).replace(b"</leader>",
                                           b'</leader><controlfield tag="FMT">BK</controlfield>')
    entries = marc.read_marc(xml_of(b"<record/>", aleph))
    assert entries[0] == "bad MARCXML record from line 3: no fields"
    [bib] = bibs(entries[1:])
    assert bib.title == "三体" and bib.marc is not None and b"FMT" not in bib.marc


def test_xml_that_stops_being_well_formed_ends_the_reading_there() -> None:
    good, next_one = record_to_xml(fortress_besieged()), record_to_xml(santi())
    broken = record_to_xml(weicheng()).replace(b"</datafield>", b"</datafeld>", 1)
    [bib, reason] = marc.read_marc(xml_of(good, broken, next_one))
    assert isinstance(bib, domain.BibData) and bib.title == "Fortress besieged"
    assert isinstance(reason, str) and reason.startswith("MARCXML not well-formed at line 4, ")
    assert reason.endswith("(mismatched tag), in the record from line 4: the rest of the file "
                           "is not read")
    # a file cut short in a record: what came before is read, the cut record is the reason
    [first, cut] = marc.read_marc(xml_of(good, next_one)[:-200])
    assert isinstance(first, domain.BibData) and first.title == "Fortress besieged"
    assert isinstance(cut, str) and "not well-formed" in cut and "record from line 4" in cut


def test_xml_that_declares_entities_is_not_expanded() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE collection [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><collection>'
            + record_to_xml(santi()).replace(b"\xe4\xb8\x89", b"&b;") + b"</collection>")
    [reason] = marc.read_marc(bomb)
    assert isinstance(reason, str) and reason.startswith("MARCXML declares an entity at line 1")


# --- streaming -------------------------------------------------------------------------------

class GeneratedStream(io.RawIOBase):
    """A file that is never whole in memory: its bytes come from a generator, a few at a
    time (at most `most` per read, as a pipe or socket may give them)."""

    def __init__(self, chunks: Iterator[bytes], most: int = 1 << 30) -> None:
        self.chunks, self.left, self.most = chunks, b"", most

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self.left:
            self.left = next(self.chunks, b"")
            if not self.left:
                return 0
        n = min(len(buffer), len(self.left), self.most)
        buffer[:n], self.left = self.left[:n], self.left[n:]
        return n


def test_a_raw_stream_giving_a_few_bytes_a_read_reads_the_same() -> None:
    for upload in (iso(fortress_besieged(), weicheng(), santi()),
                   xml(fortress_besieged(), santi())):
        assert list(marc.iter_marc(GeneratedStream(iter([upload]), most=7))) == (
            marc.read_marc(upload))


def stream_of(one: Record, kind: str, count: int, made: list[int] | None = None,
              ) -> io.BufferedReader:
    """`count` copies of the record as a file made while it is read; `made` counts them."""
    body = iso(one) if kind == "iso2709" else record_to_xml(one)

    def chunks() -> Iterator[bytes]:
        if kind == "marcxml":
            yield b'<?xml version="1.0"?><collection xmlns="http://www.loc.gov/MARC21/slim">'
        for _ in range(count):
            if made is not None:
                made[0] += 1
            yield body
        if kind == "marcxml":
            yield b"</collection>"

    return io.BufferedReader(GeneratedStream(chunks()))


@pytest.mark.parametrize("kind", ["iso2709", "marcxml"])
def test_a_million_record_file_is_read_as_it_comes(kind: str) -> None:
    made = [0]
    entries = marc.iter_marc(stream_of(santi(), kind, 1_000_000, made))
    first = list(itertools.islice(entries, 1000))
    assert [b.title for b in bibs(first)] == ["三体"] * 1000
    assert made[0] < 1000 + 300  # a few chunks ahead of the reader, not the whole file


@pytest.mark.parametrize("kind", ["iso2709", "marcxml"])
def test_a_large_file_is_read_in_constant_memory(kind: str) -> None:
    # Records near ISO 2709's largest (99,999 bytes), so a few hundred make a file that
    # would not fit: tracemalloc slows each allocation, and a record makes many.
    count = 150
    notes = [sf("500", "a", f"{n}. " + "钱锺书《围城》 " * 360) for n in range(8)]
    one = fortress_besieged(*notes, sf("952", "a", "JX-HN-01", "p", "31234000123456"))
    size = len(iso(one))
    assert 60_000 < size <= marc.MAX_RECORD
    assert size * count > 8 * MB  # the file, or the bibs made of it, would not fit
    stream = stream_of(one, kind, count)
    tracemalloc.start()
    try:
        read = skipped = 0
        for entry in marc.iter_marc(stream):
            read += 1
            skipped += isinstance(entry, str)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (read, skipped) == (count, 0)
    assert peak < 2 * MB, f"peak {peak / MB:.1f} MB"
