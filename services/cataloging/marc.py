"""Reading MARC files into bib data, with pymarc: MARC 21, and UNIMARC as China's national
agency writes it (CNMARC), each either binary ISO 2709 or MARCXML.

MARC 21: ISBN 020$a, title 245$a, author 100$a, publisher 264$b or 260$b, year 264$c or
260$c, language 008/35-37 or 041$a, classification 084$a with $2 clc (中图法), else 082$a
(Dewey), else 050$a $b (LC), subjects 650/600/610/651 $a. CNMARC: ISBN 010$a, title 200$a,
author 700$a (else 701$a, else 200$f), publisher 210$c or 214$c, year 210$d or 214$d,
language 101$a, classification 690$a (中图法), else 676$a, else 680$a, subjects
606/600/601/607 $a. The record itself is kept as ISO 2709 (a MARCXML record too, as UTF-8).

Copies a legacy system lists in a record become its holdings, one per field that names a
branch: MARC 21 952 (Koha items: branch $a home branch, else $b holding branch; barcode $p;
call number $o) and 852 (MARC holdings: branch $b sublocation, else $a institution; barcode
$p; call number $h and $i); CNMARC 905 as Chinese systems export it (branch $a 收藏单位代码;
barcode $b 登录号; call number $d 分类号 "/" $e 书次号, or $d alone; $f 卷册 is not read).

A file is read as a stream, one record at a time, in constant memory (`iter_marc`). It is
MARCXML when its first byte that is not white space (after a UTF-8 byte order mark) is
`<`: records in the MARC 21 slim namespace (or MarcXchange's, ISO 25577) or in none,
anywhere in the document (so a MARCXML `collection`, a lone `record`, or records inside an
SRU or OAI-PMH answer). It is ISO 2709 when it starts with the five digits of a record
length. Anything else is not MARC.

The format is told by the caller or seen in the first record's tags (a 245 is MARC 21; a
200 without one is UNIMARC). CNMARC is read as UTF-8, which is how CNMARC is distributed
today; MARC 21 follows its leader (MARC-8 or UTF-8). A record without an ISBN makes a bib
with no ISBN (it is matched by title, author and year elsewhere). A record that can't be
read or lacks a title becomes a skip reason, so one bad record never costs the rest of the
file: an ISO 2709 record whose length is wrong or which is cut short ends at its
end-of-record mark or where the next leader starts; a MARCXML record that breaks the MARC
structure costs itself. Only XML that stops being well-formed ends the reading, with a
reason that says so.
"""

from __future__ import annotations

import codecs
import io
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal, Protocol
from xml.parsers import expat

from pymarc import Field, Indicators, Record
from pymarc.leader import Leader

from services.cataloging import domain


class NotMarc(ValueError):
    """The upload is not a MARC file (ISO 2709 or MARCXML) at all."""


MarcFormat = Literal["marc21", "unimarc"]


class Readable(Protocol):
    """Where bytes come from: a binary file, or anything with its `read`."""

    def read(self, size: int, /) -> bytes: ...


MAX_RECORD = 99_999  # ISO 2709: the record length has five digits
CHUNK = 64 * 1024  # bytes read from the stream at a time
MARCXML_NS = "http://www.loc.gov/MARC21/slim"
# MARC's elements: in the MARCXML namespace, in MarcXchange's (ISO 25577, the same elements,
# as UNIMARC is often sent), or in none.
_MARC_SPACES = ("", MARCXML_NS, "info:lc/xmlns/marcxchange-v1", "info:lc/xmlns/marcxchange-v2")
_BOM = b"\xef\xbb\xbf"


def detect_format(data: bytes) -> MarcFormat:
    """MARC 21 or UNIMARC, from the tags in the first record's directory."""
    try:
        base = int(data[12:17])
    except ValueError:
        return "marc21"  # not a leader: the reader says why
    directory = data[24:max(24, base - 1)]
    tags = {directory[i:i + 3] for i in range(0, len(directory) - 11, 12)}
    return "unimarc" if b"200" in tags and b"245" not in tags else "marc21"


def _format_of(record: Record) -> MarcFormat:
    """MARC 21 or UNIMARC, from a record's tags, as `detect_format` tells it."""
    tags = {fld.tag for fld in record.fields}
    return "unimarc" if "200" in tags and "245" not in tags else "marc21"


class _Field(Protocol):
    """What reading a bib asks of a field: pymarc's Field, or a `_LeanField`."""

    tag: str
    control_field: bool
    data: str | None

    def get_subfields(self, *codes: str) -> list[str]: ...

    def get(self, code: str, default: str | None = None) -> str | None: ...


class _Indexed:
    """A record's fields by tag, gathered once: reading a bib asks for a dozen tags, and
    pymarc's `get_fields` walks every field each time."""

    __slots__ = ("by_tag", "fields")

    def __init__(self, fields: list[_Field]) -> None:
        self.fields = fields
        self.by_tag: dict[str, list[_Field]] = {}
        for fld in fields:
            self.by_tag.setdefault(fld.tag, []).append(fld)

    def get_fields(self, *tags: str) -> list[_Field]:
        """The fields with these tags, in record order."""
        if len(tags) == 1:
            return self.by_tag.get(tags[0], [])
        return [fld for fld in self.fields if fld.tag in tags]

    def get(self, tag: str) -> _Field | None:
        found = self.by_tag.get(tag)
        return found[0] if found else None


class _Declined(Exception):
    """A record the lean reader leaves to pymarc (see `_lean`)."""


class _LeanField:
    """One field of a UTF-8 ISO 2709 record, its subfields decoded when first asked for:
    a bib reads a dozen of a record's fields, and only their subfields."""

    __slots__ = ("_raw", "_subfields", "control_field", "data", "tag")

    def __init__(self, tag: str, raw: bytes) -> None:
        self.tag = tag
        self._raw = raw
        self._subfields: list[tuple[str, str]] | None = None
        self.control_field = tag < "010" and tag.isdigit()
        self.data = raw.decode("utf-8") if self.control_field else None

    def subfields(self) -> list[tuple[str, str]]:
        if self._subfields is None:
            out = []
            for part in self._raw.split(b"\x1f")[1:]:
                if part:
                    if part[0] >= 0x80:
                        raise _Declined  # a subfield code pymarc repairs its own way
                    out.append((chr(part[0]), part[1:].decode("utf-8")))
            self._subfields = out
        return self._subfields

    def get_subfields(self, *codes: str) -> list[str]:
        if self.control_field:
            return []
        return [value for code, value in self.subfields() if code in codes]

    def get(self, code: str, default: str | None = None) -> str | None:
        if self.control_field:
            return default
        for have, value in self.subfields():
            if have == code:
                return value
        return default


#: A subfield mark followed by a byte that is not ASCII: a code pymarc has to repair.
_NON_ASCII_CODE = re.compile(rb"\x1f[\x80-\xff]")


def _lean(raw: bytes) -> _Indexed:
    """The fields of a UTF-8 ISO 2709 record, read straight from its directory.

    pymarc builds an object per field and per subfield of every field; a bib needs a
    dozen fields. This reads only the directory and leaves each field's bytes until asked
    for, and it is the reading for well-formed UTF-8 records only: anything else (MARC-8,
    a directory entry that is not digits, bytes that are not UTF-8, no fields) raises
    `_Declined`, and pymarc reads the record, accepting or refusing it as it does. The
    fields and values are pymarc's own (tests/unit/test_marc_lean.py checks that).
    """
    if len(raw) < 25 or not raw[:24].isascii():
        raise _Declined
    base = raw[12:17]
    if not (base.isdigit() and raw[:5].isdigit()):
        raise _Declined
    start = int(base)
    if not 0 < start < len(raw) or len(raw) < int(raw[:5]):
        raise _Declined
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Declined from None
    directory = raw[24:start - 1]
    if not directory or len(directory) % 12 or not directory.isdigit():
        raise _Declined  # (tags too: a letter in a tag is pymarc's to read)
    if _NON_ASCII_CODE.search(raw, start):
        # A subfield code that is not ASCII, in any field (pymarc reads every field, and
        # repairs such a code or refuses the record for it), not only in those a bib reads.
        raise _Declined
    fields: list[_Field] = []
    for at in range(0, len(directory), 12):
        offset = start + int(directory[at + 7:at + 12])
        end = offset + int(directory[at + 3:at + 7]) - 1
        # Each field between field terminators: then, the record being UTF-8, so is each
        # field, and each value cut from it at a subfield mark.
        if end >= len(raw) or raw[offset - 1] != 0x1E or raw[end] != 0x1E:
            raise _Declined
        tag = directory[at:at + 3].decode("ascii")
        data = raw[offset:end]
        if tag >= "010":
            mark = data.find(b"\x1f")
            if not (data[:mark] if mark >= 0 else data).isascii():
                raise _Declined  # indicators pymarc refuses: it says why
        fields.append(_LeanField(tag, data))
    return _Indexed(fields)


def _first(record: _Indexed, tags: tuple[str, ...], code: str) -> str | None:
    for tag in tags:
        for fld in record.get_fields(tag):
            for value in fld.get_subfields(code):
                if value and value.strip():
                    return value
    return None


def _isbn(record: _Indexed, tag: str = "020") -> str | None:
    """The first ISBN field's $a that is a valid ISBN, else the first with any digit."""
    given = [v for fld in record.get_fields(tag) for v in fld.get_subfields("a") if v]
    normalised = [(v, domain.normalize_isbn(v)) for v in given]
    for value, isbn in normalised:
        if isbn is not None and isbn.valid:
            return value
    return next((value for value, isbn in normalised if isbn is not None), None)


def _all(record: _Indexed, tags: tuple[str, ...], code: str) -> tuple[str, ...]:
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


def _marc21_classification(record: _Indexed) -> tuple[str, str] | None:
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


def _unimarc_classification(record: _Indexed) -> tuple[str, str] | None:
    for tag, scheme in (("690", "clc"), ("676", "ddc"), ("680", "lcc")):
        number = _first(record, (tag,), "a")
        if number:
            return number.strip(), scheme
    return None


def _subfield(fld: _Field, code: str) -> str | None:
    """The field's first `code` subfield that is not blank, stripped."""
    for value in fld.get_subfields(code):
        if value and value.strip():
            return str(value).strip()
    return None


def _holdings(record: _Indexed, tags: tuple[str, ...]) -> tuple[domain.Holding, ...]:
    """The copies the record's 952, 852 or 905 fields list: one per field with a branch."""
    out: list[domain.Holding] = []
    sub = _subfield
    for fld in record.get_fields(*tags):
        if fld.control_field:
            continue
        if fld.tag == "952":  # Koha: $a home branch, $b holding branch, $p barcode, $o call
            branch = sub(fld, "a") or sub(fld, "b")
            barcode, call = sub(fld, "p"), sub(fld, "o")
        elif fld.tag == "852":  # $a institution, $b sublocation, $h class, $i item part
            branch = sub(fld, "b") or sub(fld, "a")
            barcode = sub(fld, "p")
            call = " ".join(part for part in (sub(fld, "h"), sub(fld, "i")) if part) or None
        else:  # CNMARC 905: $a holding library, $b barcode, $d class no., $e book mark
            branch, barcode = sub(fld, "a"), sub(fld, "b")
            number, mark = sub(fld, "d"), sub(fld, "e")
            call = f"{number}/{mark}" if number and mark else number
        if branch:
            out.append(domain.Holding(branch=branch, barcode=barcode, call_number=call))
    return tuple(out)


def _as_marc(record: Record) -> bytes | None:
    try:
        data: bytes = record.as_marc()
    except (UnicodeError, ValueError):  # kept only when it can be written back as read
        return None
    return data if len(data) <= MAX_RECORD else None  # longer has no ISO 2709 leader


def bib_from_record(marc_record: Record, *, keep: bool = True,
                    raw: bytes | None = None) -> domain.BibData | str:
    """The bib data of one MARC 21 record, or why it can't make a bib; `keep` adds the
    record itself: `raw` when it was read from those bytes, else written out by pymarc."""
    return _marc21(_Indexed(list(marc_record.fields)),
                   lambda: raw if raw is not None else _as_marc(marc_record) if keep else None)


def _marc21(record: _Indexed, marc: Callable[[], bytes | None]) -> domain.BibData | str:
    title = domain.clean_marc_text(_first(record, ("245",), "a"))
    if title is None:
        return "no title in 245$a"
    fixed = record.get("008")
    language = _language(fixed.data[35:38] if fixed is not None and fixed.data else None)
    classified = _marc21_classification(record)
    return domain.BibData(
        isbn=_isbn(record),
        title=title,
        author=domain.clean_marc_text(_first(record, ("100",), "a")),
        publisher=domain.clean_marc_text(_first(record, ("264", "260"), "b")),
        year=domain.year_of(_first(record, ("264", "260"), "c")),
        language=language or _language(_first(record, ("041",), "a")),
        classification=classified[0] if classified else None,
        classification_scheme=classified[1] if classified else None,
        subjects=_all(record, ("650", "600", "610", "651"), "a"),
        marc=marc(),
        holdings=_holdings(record, ("852", "952")),
    )


def bib_from_unimarc(marc_record: Record, *, keep: bool = True,
                     raw: bytes | None = None) -> domain.BibData | str:
    """The bib data of one UNIMARC (CNMARC) record, or why it can't make a bib; `keep`
    adds the record itself: `raw` when it was read from those bytes, else written out by
    pymarc."""
    return _unimarc(_Indexed(list(marc_record.fields)),
                    lambda: raw if raw is not None else _as_marc(marc_record) if keep else None)


def _unimarc(record: _Indexed, marc: Callable[[], bytes | None]) -> domain.BibData | str:
    title = domain.clean_marc_text(_first(record, ("200",), "a"))
    if title is None:
        return "no title in 200$a"
    author = (_first(record, ("700", "701"), "a") or _first(record, ("200",), "f"))
    classified = _unimarc_classification(record)
    return domain.BibData(
        isbn=_isbn(record, "010"),
        title=title,
        author=domain.clean_marc_text(author),
        publisher=domain.clean_marc_text(_first(record, ("210", "214"), "c")),
        year=domain.year_of(_first(record, ("210", "214"), "d")),
        language=_language(_first(record, ("101",), "a")),
        classification=classified[0] if classified else None,
        classification_scheme=classified[1] if classified else None,
        subjects=_all(record, ("606", "600", "601", "607"), "a"),
        marc=marc(),
        holdings=_holdings(record, ("905",)),
    )


def _bib(record: Record, marc_format: MarcFormat, *, keep: bool = True,
         raw: bytes | None = None) -> domain.BibData | str:
    read = bib_from_unimarc if marc_format == "unimarc" else bib_from_record
    return read(record, keep=keep, raw=raw)


# --- the stream ------------------------------------------------------------------------------

def iter_marc(stream: BinaryIO | Readable, marc_format: MarcFormat | None = None,
              ) -> Iterator[domain.BibData | str]:
    """One entry per record, in file order: its bib data or the reason it is skipped.

    Reads the stream a chunk at a time and holds one record at a time, so a file of any
    size costs the same memory. `marc_format` None: seen from the first record. Raises
    NotMarc at once (not when iterated) when the stream is empty or starts with neither an
    ISO 2709 record length nor `<`.
    """
    head = _read(stream, CHUNK)
    if head[:5].isdigit():
        source = _Source(stream)
        source.put_back(head)
        return _iter_iso2709(source, marc_format)
    text, skipped_lines = head.removeprefix(_BOM), 0
    while not (start := text.lstrip()):
        skipped_lines += text.count(b"\n")
        text = _read(stream, CHUNK)
        if not text:
            raise NotMarc("not a MARC file: it is empty")
    skipped_lines += text.count(b"\n", 0, len(text) - len(start))
    if not start.startswith(b"<"):
        raise NotMarc("not a MARC file: it starts with neither an ISO 2709 record length "
                      f"nor the `<` of MARCXML (got {start[:8]!r})")
    return _iter_marcxml(start, stream, marc_format, skipped_lines)


def read_marc(data: bytes, marc_format: MarcFormat | None = None,
              ) -> list[domain.BibData | str]:
    """`iter_marc` over bytes in memory, as a list."""
    return list(iter_marc(io.BytesIO(data), marc_format))


def _read(stream: BinaryIO | Readable, n: int) -> bytes:
    """`n` bytes, fewer only at the end: a raw stream may give less than asked."""
    out = stream.read(n)
    while 0 < len(out) < n:
        more = stream.read(n - len(out))
        if not more:
            break
        out += more
    return out


# --- ISO 2709 --------------------------------------------------------------------------------

END_OF_RECORD = b"\x1d"
# Where a record starts: five digits of length, then leader/10-11 "22" (indicator and
# subfield code counts), the base address, and leader/20-23 "4500" (UNIMARC: "450 ").
_LEADER = re.compile(rb"\d{5}[^\x1d\x1e\x1f]{5}22\d{5}[^\x1d\x1e\x1f]{3}45[0 ][0 ]")


def _iter_iso2709(source: _Source, marc_format: MarcFormat | None,
                  ) -> Iterator[domain.BibData | str]:
    records = split_records(source)
    first = next(records, None)
    if first is None:
        return
    seen_format = marc_format or detect_format(first)
    for raw in itertools.chain((first,), records):
        yield _bib_from_iso2709(raw, seen_format)


def _bib_from_iso2709(raw: bytes, marc_format: MarcFormat) -> domain.BibData | str:
    unimarc = marc_format == "unimarc"
    if unimarc or raw[9:10] == b"a":  # UTF-8 (CNMARC is read as UTF-8 whatever it says)
        try:
            return (_unimarc if unimarc else _marc21)(_lean(raw), lambda: raw)
        except (_Declined, UnicodeDecodeError):
            pass  # pymarc reads it, and accepts or refuses it in its own words
    try:
        record = Record(force_utf8=unimarc)
        record.decode_marc(raw, to_unicode=True, force_utf8=unimarc)
    except Exception as exc:  # noqa: BLE001 — untrusted bytes: any failure rejects the record
        return f"unreadable record: {_describe(exc)}"
    # The record is kept as the agency sent it: the bytes read, not pymarc writing it again
    # (which costs as much as reading it, and may not round-trip a MARC-8 record).
    return _bib(record, marc_format, raw=raw)


def split_records(stream: BinaryIO | Readable) -> Iterator[bytes]:
    """Each record's bytes as the stream holds them, by the length in its leader.

    A record whose leader gives no sane length, or whose length does not end on its one
    end-of-record mark (the length is wrong, or the record was cut short), runs to its first
    end-of-record mark or to where the next leader starts, whichever comes first: a broken
    record costs only itself. White space between records (a newline after each, or at
    the end of the file) is not a record. No piece is longer than MAX_RECORD plus a chunk.
    """
    source = stream if isinstance(stream, _Source) else _Source(stream)
    while True:
        head = source.read(5)
        if not head:
            return
        if head[:1].isspace():
            source.put_back(head.lstrip())
            continue
        if head.isdigit() and int(head) >= 24:
            raw = head + source.read(int(head) - 5)
            if len(raw) == int(head) and raw.find(END_OF_RECORD) == len(raw) - 1:
                yield raw  # its one end-of-record mark, where its length says
                continue
            head = raw
        source.put_back(head)
        yield _cut(source)


def _cut(source: _Source) -> bytes:
    """The bytes to the first end-of-record mark or the next leader, at most MAX_RECORD."""
    chunk = bytearray()
    while True:
        searched = len(chunk)
        more = source.read(4096)
        chunk += more
        end = chunk.find(END_OF_RECORD, searched)
        stop = end + 1 if end >= 0 else len(chunk)
        # a leader past the first byte, complete before the mark: the next record's
        leader = _LEADER.search(chunk, max(1, searched - 23), stop)
        if leader is not None:
            cut = leader.start()
        elif end >= 0:
            cut = end + 1
        elif not more or len(chunk) >= MAX_RECORD:
            cut = len(chunk)
        else:
            continue
        source.put_back(bytes(chunk[cut:]))
        return bytes(chunk[:cut])


class _Source:
    """A stream that can take back bytes read too far."""

    def __init__(self, stream: BinaryIO | Readable) -> None:
        self.stream, self.head, self.at = stream, b"", 0

    def put_back(self, data: bytes) -> None:
        self.head, self.at = data + self.head[self.at:], 0

    def read(self, n: int) -> bytes:
        if self.at >= len(self.head):
            return _read(self.stream, n)
        out = self.head[self.at:self.at + n]
        self.at += len(out)
        if len(out) < n:
            out += _read(self.stream, n - len(out))
        return out


# --- MARCXML ---------------------------------------------------------------------------------

def _iter_marcxml(start: bytes, stream: BinaryIO | Readable, marc_format: MarcFormat | None,
                  skipped_lines: int) -> Iterator[domain.BibData | str]:
    reader = _MarcXml(skipped_lines)
    seen_format = marc_format
    encoding = _encoding_to_convert(start)
    if encoding is None:
        chunks = _chunks(start, stream)
    else:  # expat reads UTF-8, UTF-16 and one-byte encodings only: the rest is converted
        chunks = _as_utf8(_chunks(_declared_utf8(start), stream), encoding)
    while True:
        try:
            chunk = next(chunks, None)
        except _Undecodable as exc:
            broken: str | None = reader.stop(f"is not the {encoding} it declares (byte "
                                             f"{exc.byte!r} at line {reader.line()})")
        else:
            broken = reader.feed(chunk or b"", final=chunk is None)
        for item in reader.take():
            if isinstance(item, str):
                yield item
                continue
            seen_format = seen_format or _format_of(item)
            yield _bib(item, seen_format)
        if broken is not None:
            yield broken
            return
        if chunk is None:
            return


def _chunks(start: bytes, stream: BinaryIO | Readable) -> Iterator[bytes]:
    yield start
    while chunk := _read(stream, CHUNK):
        yield chunk


_DECLARED_ENCODING = re.compile(rb"""<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_EXPAT_ENCODINGS = {"utf-8", "utf-16", "utf-16-le", "utf-16-be", "iso8859-1", "ascii"}


def _encoding_to_convert(start: bytes) -> str | None:
    """The encoding the XML declares when expat can't read it (GBK, GB18030, Big5 ...)."""
    declared = _DECLARED_ENCODING.match(start)
    if declared is None:
        return None
    try:
        name = codecs.lookup(declared[1].decode("ascii")).name
        multibyte = len("\u4e2d".encode(name, errors="replace")) > 1
    except LookupError:  # not an encoding Python has (or not a text one): expat says so
        return None
    return name if multibyte and name not in _EXPAT_ENCODINGS else None


def _declared_utf8(start: bytes) -> bytes:
    declared = _DECLARED_ENCODING.match(start)
    assert declared is not None
    return start[:declared.start(1)] + b"UTF-8" + start[declared.end(1):]


class _Undecodable(Exception):
    """A byte that is not of the encoding the XML declares."""

    def __init__(self, byte: bytes) -> None:
        super().__init__(byte)
        self.byte = byte


def _as_utf8(chunks: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    """The chunks as UTF-8; what comes before a byte not of `encoding`, then _Undecodable."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
    for chunk in itertools.chain(chunks, (None,)):
        text = decoder.decode(chunk or b"", final=chunk is None)
        try:
            yield text.encode()
        except UnicodeEncodeError as exc:  # a byte escaped to a lone surrogate
            yield text[:exc.start].encode()
            raise _Undecodable(bytes([ord(text[exc.start]) - 0xDC00])) from None


class _Refused(Exception):
    """XML this reader will not parse (it declares entities)."""


class _MarcXml:
    """MARCXML to pymarc records, each made as soon as its end tag is parsed.

    Elements are MARC's when in the MARC 21 slim or the MarcXchange namespace or in none;
    others are passed over. A record breaking MARC's structure (a bad tag, indicator,
    subfield code or leader, a record in a record, more text than ISO 2709 can hold)
    becomes a reason.
    """

    def __init__(self, skipped_lines: int) -> None:
        self.skipped_lines = skipped_lines
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.buffer_text = True
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._characters
        parser.EntityDeclHandler = self._entity  # no entities: no expansion bombs
        self.parser = parser
        self.done: list[Record | str] = []
        self.record: Record | None = None
        self.record_line = 0
        self.problem: str | None = None
        self.stack: list[str] = []  # elements open in the record; "" is a foreign one
        self.field: Field | None = None
        self.code: str | None = None
        self.text: list[str] | None = None  # the leader's, control field's or subfield's
        self.size = 0  # characters in the record so far, as ISO 2709 would count them

    def feed(self, data: bytes, final: bool) -> str | None:
        """Parse the next bytes; why the reading stops, if it must."""
        try:
            self.parser.Parse(data, final)
        except expat.ExpatError as exc:
            where = f"line {exc.lineno + self.skipped_lines}, column {exc.offset + 1}"
            return self.stop(f"not well-formed at {where} ({expat.ErrorString(exc.code)})")
        except _Refused as exc:
            return self.stop(str(exc))
        except (LookupError, ValueError) as exc:  # an encoding neither expat nor Python has
            return self.stop(f"can't be read: {exc}")
        return None

    def take(self) -> list[Record | str]:
        done, self.done = self.done, []
        return done

    def stop(self, why: str) -> str:
        inside = (f", in the record from line {self.record_line}"
                  if self.record is not None else "")
        return f"MARCXML {why}{inside}: the rest of the file is not read"

    def line(self) -> int:
        """The line the parser is at."""
        return self.parser.CurrentLineNumber + self.skipped_lines

    def _entity(self, *_: object) -> None:
        raise _Refused(f"declares an entity at line {self.line()}, which MARCXML has no "
                       "use for and this reader does not expand")

    def _fail(self, problem: str) -> None:
        if self.problem is None:
            self.problem = f"{problem} (line {self.line()})"
        self.field, self.code, self.text = None, None, None

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        space, _, local = name.rpartition(" ")
        local = local if space in _MARC_SPACES else ""
        if self.record is None:
            if local == "record":
                self.record, self.record_line, self.problem = Record(), self.line(), None
                self.stack, self.size = ["record"], 24
            return
        parent = self.stack[-1]
        self.stack.append(local)
        if self.problem is not None or not local:
            return
        if self.text is not None:
            self._fail(f"<{local}> inside <{parent}>")
        elif local == "record":
            self._fail("a record inside a record")
        elif parent == "record" and local in ("leader", "controlfield"):
            self.text = []
            if local == "controlfield":
                tag = attrs.get("tag", "")
                if not (len(tag) == 3 and tag.isalnum()) or ("010" <= tag <= "999"):
                    self._fail(f"controlfield tag {tag!r} is not a control field's")
                elif tag.isdigit():
                    self.field = Field(tag=tag, data="")
                # else a local control field ("FMT" from Aleph): not kept
        elif parent == "record" and local == "datafield":
            tag, ind1, ind2 = (attrs.get(key, "") for key in ("tag", "ind1", "ind2"))
            if not (len(tag) == 3 and tag.isalnum()) or (tag < "010" and tag.isdigit()):
                self._fail(f"datafield tag {tag!r} is not a data field's")
            elif len(ind1) > 1 or len(ind2) > 1:
                self._fail(f"datafield {tag} has indicators {ind1!r} {ind2!r}, not one "
                           "character each")
            else:
                self.field = Field(tag=tag, indicators=Indicators(ind1 or " ", ind2 or " "))
                self.size += 12 + 3  # directory entry, indicators, end of field
        elif parent == "datafield" and local == "subfield" and self.field is not None:
            code = attrs.get("code", "")
            if len(code) != 1 or code.isspace():
                self._fail(f"subfield code {code!r} in {self.field.tag} is not one character")
            else:
                self.code, self.text, self.size = code, [], self.size + 2

    def _characters(self, data: str) -> None:
        if self.text is None:
            return
        self.size += len(data)
        if self.size > MAX_RECORD:
            self._fail(f"longer than an ISO 2709 record can be ({MAX_RECORD} bytes)")
        else:
            self.text.append(data)

    def _end(self, name: str) -> None:
        if self.record is None:
            return
        local = self.stack.pop()
        if not self.stack:
            self._finish(self.record)
            return
        parent = self.stack[-1]
        if self.problem is not None or not local:
            return
        text = "".join(self.text) if self.text is not None else None
        if parent == "record" and local == "leader" and text is not None:
            if len(text) != 24 or not text.isascii():
                self._fail(f"leader {text!r} is not 24 ASCII characters")
            else:
                self.record.leader = Leader(text)
        elif parent == "record" and local == "controlfield":
            if self.field is not None and text is not None:
                self.field.data = text
                self.record.fields.append(self.field)
                self.size += 12 + 1
        elif parent == "record" and local == "datafield" and self.field is not None:
            self.record.fields.append(self.field)
        elif local == "subfield" and self.field is not None and self.code is not None:
            self.field.add_subfield(self.code, text or "")
        if local in ("leader", "controlfield", "subfield"):
            self.text, self.code = None, None
        if local in ("controlfield", "datafield"):
            self.field = None

    def _finish(self, record: Record) -> None:
        problem = self.problem
        if problem is None and not record.fields:
            problem = "no fields"
        self.done.append(f"bad MARCXML record from line {self.record_line}: {problem}"
                         if problem is not None else record)
        self.record, self.problem, self.field, self.code, self.text = None, None, None, None, None


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unreadable"
    return str(exc) or type(exc).__name__


# --- batches, for import jobs ------------------------------------------------------------------

Batch = list[tuple[int, "domain.Prepared | str"]]


def batches(stream: BinaryIO, marc_format: MarcFormat | None, *, skip: int, size: int,
            ) -> Iterator[tuple[Batch, int]]:
    """(records with their positions in the file, bytes read so far), `size` at a time,
    after the first `skip` records (a resumed job has them already). Each readable record
    comes prepared for matching (domain.prepare)."""
    records = enumerate(iter_marc(stream, marc_format))
    for _ in itertools.islice(records, skip):
        pass
    while chunk := list(itertools.islice(records, size)):
        yield ([(pos, r if isinstance(r, str) else domain.prepare(r)) for pos, r in chunk],
               stream.tell())


def read_into(queue: Any, path: str, marc_format: MarcFormat | None, skip: int,
              size: int) -> None:
    """A reader process's work: put each batch of the file on `queue`, then ("end",).

    Reading MARC is the CPU-heavy half of an import; in a process of its own it runs on
    another core while the service writes the batch before. Errors go on the queue too,
    as ("not_marc" | "error", message).
    """
    try:
        with open(path, "rb") as stream:
            for batch, done in batches(stream, marc_format, skip=skip, size=size):
                queue.put(("batch", batch, done))
        queue.put(("end", None, 0))
    except NotMarc as exc:
        queue.put(("not_marc", str(exc), 0))
    except Exception as exc:  # noqa: BLE001 — reported to the job, which fails with it
        queue.put(("error", f"{type(exc).__name__}: {exc}", 0))
