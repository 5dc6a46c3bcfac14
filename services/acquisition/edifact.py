"""EDIFACT with vendors: ORDERS out, INVOIC in, in the EDItEUR library profile as Koha uses it.

Both messages are UN/EDIFACT D96A with the EAN008 association code, the profile UK and
European library suppliers expect. Everything here is pure: text in, dataclasses out (and
back), so the API can send what `orders_message` writes and the tests can read it back.

Segment choices, and why:

* Copies per branch go out as one `GIR+nnn+<branch>:LLO` per copy, numbered 001, 002, ...
  across the line, not as `LOC+7`/`QTY` pairs. Koha writes one GIR per copy and, when the
  invoice comes back, matches each invoiced copy to a branch by the GIR occurrence, so
  suppliers serving Koha libraries read and echo exactly this. Copies not yet given to a
  branch get no GIR. On reading, a `<n>:LQT` (part order quantity) in a GIR is honoured.
* The ISBN-13 goes in `LIN+n++<isbn>:EN` and, as the profile's product id, in
  `PIA+5+<isbn>:IB`. A number that is not a 13-digit EAN goes in PIA alone; a 13-digit EAN
  that is not an ISBN (not 978/979) goes in LIN alone.
* Text (IMD title 050, author 009, publisher 109, year 170) is cut into 35-character
  components, two per IMD and as many IMDs as needed, as Koha does; the reader joins the
  pieces back without a separator, since the cut falls anywhere in a word.
* `NAD` carries the party's code-list agency: an EAN/GLN (UNB qualifier 14) is agency 9
  there, as Koha writes it; the readers report it as 14 again.
* The invoice total is the summary section's MOA+77 (invoice amount), else 86 (message
  total), 39 (invoice total) or 9 (amount payable), the first present; the net line total
  (79) and the discount base (129) are never taken for it.
* The interchange declares UNOC (ISO 8859-1), as the profile does, when every character
  fits Latin-1. A message carrying text outside it (a Chinese title, as most of a Chinese
  network's orders do) declares UNOW (UTF-8, syntax version 4) instead of transliterating
  the title away; `encoded` gives the bytes in the declared set.

Reading is strict about the envelope (UNB/UNZ and UNH/UNT references and counts), because
a count that does not add up is how a truncated transmission shows. Every problem is an
`EdifactError` naming the 1-based segment number (UNB is segment 1; UNA is not counted)
and a short field name.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal

from pydifact.constants import Element
from pydifact.control.characters import Characters
from pydifact.exceptions import EDISyntaxError, ValidationError
from pydifact.parser import Parser
from pydifact.segmentcollection import Interchange, Message
from pydifact.segments import Segment, SegmentFactory

__all__ = [
    "EdifactError",
    "InvoiceIn",
    "InvoiceLineIn",
    "OrderLineOut",
    "OrderOut",
    "invoic_message",
    "orders_message",
    "parse_invoic",
    "parse_orders",
]

#: Service string advice as the profile (and Koha) writes it: ":" components, "+" elements,
#: "." decimal mark, "?" release character, "'" segment terminator.
UNA = "UNA:+.? '"
SYNTAX = ("UNOC", 3)
#: Declared when some text is not Latin-1.
SYNTAX_UTF8 = ("UNOW", 4)
#: Message identifier after the type: directory D96A, agency UN, EDItEUR/EAN association.
VERSION = ("D", "96A", "UN", "EAN008")
#: Interchange partner qualifiers (0007) a party id may carry: EAN/GLN, SAN, assigned by
#: the supplier, assigned by the buyer.
PARTY_QUALIFIERS = frozenset({"14", "31B", "91", "92"})
CHUNK = 35  # an..35: the width of one text component
#: Summary MOA qualifiers read as the invoice total, best first.
TOTAL_QUALIFIERS = ("77", "86", "39", "9")
#: 8-bit syntax levels whose repertoire is not Latin-1 (bytes that are not UTF-8).
EIGHT_BIT = {"UNOD": "iso8859_2", "UNOE": "iso8859_5", "UNOF": "iso8859_7"}

_INT = re.compile(r"-?[0-9]{1,15}")
_DECIMAL = re.compile(r"-?(?:[0-9]{1,18}(?:[.,][0-9]{0,18})?|[.,][0-9]{1,18})")
_ISBN13 = re.compile(r"[0-9]{13}")


class EdifactError(ValueError):
    """Input that is not a usable message; `.segment` is the 1-based segment number (or None)
    and `.field` a short name like 'BGM' or 'LIN[3].QTY'."""

    def __init__(self, message: str, *, segment: int | None = None,
                 field: str | None = None) -> None:
        where = ", ".join(part for part in (
            f"segment {segment}" if segment is not None else "", field or "") if part)
        super().__init__(f"{message} ({where})" if where else message)
        self.segment = segment
        self.field = field


# --- the messages as data -------------------------------------------------------------------


@dataclass(frozen=True)
class OrderLineOut:
    """One order line as sent. `distribution` goes out as one GIR per copy (see the module
    docstring): Koha-served suppliers match invoiced copies to branches that way."""

    line_ref: str
    isbn: str
    title: str
    author: str | None
    publisher: str | None
    year: int | None
    quantity: int
    unit_price: Decimal
    distribution: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class OrderOut:
    order_id: str
    issued: date
    currency: str
    buyer_id: str
    buyer_qualifier: str
    supplier_id: str
    supplier_qualifier: str
    lines: tuple[OrderLineOut, ...]


@dataclass(frozen=True)
class InvoiceLineIn:
    line_ref: str | None
    isbn: str | None
    quantity: int
    amount: Decimal
    unit_price: Decimal | None
    position: int


@dataclass(frozen=True)
class InvoiceIn:
    invoice_number: str
    issued: date | None
    supplier_id: str | None
    supplier_qualifier: str | None
    currency: str | None
    total: Decimal | None
    lines: tuple[InvoiceLineIn, ...]


# --- writing --------------------------------------------------------------------------------


def orders_message(order: OrderOut, *, interchange_ref: str) -> str:
    """The order as a whole interchange (UNA to UNZ) holding one ORDERS message."""
    _check_order(order)
    body = [
        Segment("BGM", "220", order.order_id, "9"),
        Segment("DTM", ["137", _ccyymmdd(order.issued), "102"]),
        _nad("BY", order.buyer_id, order.buyer_qualifier),
        _nad("SU", order.supplier_id, order.supplier_qualifier),
        Segment("CUX", ["2", order.currency, "9"]),
    ]
    for number, line in enumerate(order.lines, 1):
        body += _order_line(number, line)
    body += [Segment("UNS", "S"), Segment("CNT", ["2", str(len(order.lines))])]
    return _interchange(
        "ORDERS", body, interchange_ref,
        sender=(order.buyer_id, order.buyer_qualifier),
        recipient=(order.supplier_id, order.supplier_qualifier),
        prepared=datetime.combine(order.issued, time()))


def invoic_message(invoice: InvoiceIn, *, interchange_ref: str) -> str:
    """An invoice as a supplier would send it, for tests and demonstrations.

    The buyer is not part of `InvoiceIn`, so the interchange names it BUYER (92); without a
    date the interchange is dated now.
    """
    _check_invoice(invoice)
    body = [Segment("BGM", "380", invoice.invoice_number, "9")]
    if invoice.issued is not None:
        body.append(Segment("DTM", ["137", _ccyymmdd(invoice.issued), "102"]))
    if invoice.supplier_id is not None:
        body.append(_nad("SU", invoice.supplier_id, invoice.supplier_qualifier or ""))
    if invoice.currency is not None:
        body.append(Segment("CUX", ["2", invoice.currency, "4"]))
    for line in invoice.lines:
        body += _item_id(line.position, line.isbn)
        body.append(Segment("QTY", ["47", str(line.quantity)]))
        body.append(Segment("MOA", ["203", _number(line.amount)]))
        if line.unit_price is not None:
            body.append(Segment("PRI", ["AAA", _number(line.unit_price)]))
        if line.line_ref is not None:
            body.append(Segment("RFF", ["LI", line.line_ref]))
    body += [Segment("UNS", "S"), Segment("CNT", ["2", str(len(invoice.lines))])]
    if invoice.total is not None:
        body.append(Segment("MOA", ["77", _number(invoice.total)]))
    qualifier = invoice.supplier_qualifier
    return _interchange(
        "INVOIC", body, interchange_ref,
        sender=(invoice.supplier_id or "SUPPLIER",
                qualifier if qualifier in PARTY_QUALIFIERS else "92"),
        recipient=("BUYER", "92"),
        prepared=datetime.combine(invoice.issued, time()) if invoice.issued else None)


def _interchange(kind: str, body: list[Segment], ref: str, *, sender: tuple[str, str],
                 recipient: tuple[str, str], prepared: datetime | None) -> str:
    if not ref or len(ref) > 14:
        raise EdifactError(f"the interchange reference must be 1 to 14 characters: {ref!r}",
                           field="interchange_ref")
    characters = Characters.from_str(UNA)
    latin = all(_fits_latin1(e) for segment in body for e in segment.elements)
    interchange = Interchange(
        sender=list(sender), recipient=list(recipient), control_reference=ref,
        syntax_identifier=SYNTAX if latin else SYNTAX_UTF8, timestamp=prepared,
        characters=characters,
        extra_header_elements=["", kind])  # no password; application reference
    interchange.has_una_segment = True
    message = Message("1", [kind, *VERSION], characters=characters)
    message.add_segments(body)
    interchange.add_message(message)  # UNT counts UNH..UNT, UNZ the messages
    return interchange.serialize()


def _fits_latin1(element: Element) -> bool:
    if isinstance(element, list):
        return all(_fits_latin1(e) for e in element)
    return element is None or all(ord(c) < 256 for c in element)


def encoded(text: str) -> bytes:
    """The interchange's bytes in the character set its UNB declares."""
    return text.encode("utf-8" if f"UNB+{SYNTAX_UTF8[0]}" in text[:40] else "latin-1")


def _nad(function: str, party: str, qualifier: str) -> Segment:
    agency = "9" if qualifier == "14" else qualifier  # EAN is agency 9 in NAD
    return Segment("NAD", function, [party, "", agency])


def _item_id(position: int, isbn: str | None) -> list[Segment]:
    """LIN with the EAN-13 when there is one; PIA+5 with the ISBN when it is one (or when
    the number is all there is)."""
    if isbn is None:
        return [Segment("LIN", str(position))]
    if _ISBN13.fullmatch(isbn):
        lin = Segment("LIN", str(position), "", [isbn, "EN"])
        if not isbn.startswith(("978", "979")):
            return [lin]
        return [lin, Segment("PIA", "5", [isbn, "IB"])]
    return [Segment("LIN", str(position)), Segment("PIA", "5", [isbn, "IB"])]


def _order_line(number: int, line: OrderLineOut) -> list[Segment]:
    segments = _item_id(number, line.isbn)
    for code, text in (("009", line.author), ("050", line.title), ("109", line.publisher),
                       ("170", None if line.year is None else str(line.year))):
        if text:
            segments += _imd(code, _clean(text))
    segments.append(Segment("QTY", ["21", str(line.quantity)]))
    sequence = 0
    for branch, copies in line.distribution:
        for _ in range(copies):
            sequence += 1
            segments.append(Segment("GIR", f"{sequence:03d}", [branch, "LLO"]))
    segments.append(Segment("PRI", ["AAE", _number(line.unit_price), "CA"]))
    segments.append(Segment("RFF", ["LI", line.line_ref]))
    return segments


def _imd(code: str, text: str) -> list[Segment]:
    chunks = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)]
    return [Segment("IMD", "L", code, ["", "", "", *chunks[i:i + 2]])
            for i in range(0, len(chunks), 2)]


def _clean(text: str) -> str:
    """Control characters (a newline in a MARC title) have no place in EDIFACT text."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def _ccyymmdd(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"  # strftime does not pad year 99


def _number(value: Decimal) -> str:
    return format(abs(value) if value == 0 else value, "f")


def _check_order(order: OrderOut) -> None:
    _text(order.order_id, "order_id", 35)
    _text(order.buyer_id, "buyer_id", 35)
    _text(order.supplier_id, "supplier_id", 35)
    for name, qualifier in (("buyer_qualifier", order.buyer_qualifier),
                            ("supplier_qualifier", order.supplier_qualifier)):
        if qualifier not in PARTY_QUALIFIERS:
            raise EdifactError(f"{name} must be one of {sorted(PARTY_QUALIFIERS)}, "
                               f"not {qualifier!r}", field=name)
    _currency(order.currency, "currency")
    if not order.lines:
        raise EdifactError("an order needs at least one line", field="lines")
    for i, line in enumerate(order.lines):
        where = f"lines[{i}]"
        _text(line.line_ref, f"{where}.line_ref", 35)
        _text(line.isbn, f"{where}.isbn", 35)
        _count(line.quantity, f"{where}.quantity", least=1)
        _money(line.unit_price, f"{where}.unit_price", negative=False)
        seen: set[str] = set()
        for branch, copies in line.distribution:
            _text(branch, f"{where}.distribution", 35)
            _count(copies, f"{where}.distribution", least=1)
            if branch in seen:
                raise EdifactError(f"branch {branch!r} appears more than once",
                                   field=f"{where}.distribution")
            seen.add(branch)
        given = sum(copies for _, copies in line.distribution)
        if given > line.quantity:
            raise EdifactError(f"the distribution gives out {given} copies of "
                               f"{line.quantity}", field=f"{where}.distribution")


def _check_invoice(invoice: InvoiceIn) -> None:
    _text(invoice.invoice_number, "invoice_number", 35)
    if invoice.supplier_id is not None:
        _text(invoice.supplier_id, "supplier_id", 35)
    elif invoice.supplier_qualifier is not None:
        raise EdifactError("a supplier qualifier needs a supplier id",
                           field="supplier_qualifier")
    if invoice.currency is not None:
        _currency(invoice.currency, "currency")
    if invoice.total is not None:
        _money(invoice.total, "total", negative=True)
    for i, line in enumerate(invoice.lines):
        where = f"lines[{i}]"
        _count(line.position, f"{where}.position", least=1)
        _count(line.quantity, f"{where}.quantity", least=0)
        _money(line.amount, f"{where}.amount", negative=True)
        if line.unit_price is not None:
            _money(line.unit_price, f"{where}.unit_price", negative=False)
        if line.isbn is not None:
            _text(line.isbn, f"{where}.isbn", 35)
        if line.line_ref is not None:
            _text(line.line_ref, f"{where}.line_ref", 35)


def _text(value: str, field: str, width: int) -> None:
    if not value or len(value) > width:
        raise EdifactError(f"{field} must be 1 to {width} characters: {value!r}", field=field)


def _currency(value: str, field: str) -> None:
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise EdifactError(f"{field} must be an ISO 4217 code, not {value!r}", field=field)


def _count(value: int, field: str, *, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 10**15:
        raise EdifactError(f"{field} must be a whole number from {least}: {value!r}",
                           field=field)


def _money(value: Decimal, field: str, *, negative: bool) -> None:
    if (not isinstance(value, Decimal) or not value.is_finite()
            or (value < 0 and not negative)
            or sum(c.isdigit() for c in format(value, "f")) > 15):
        raise EdifactError(f"{field} must be a finite Decimal of at most 15 digits"
                           f"{'' if negative else ', not negative'}: {value!r}", field=field)


# --- reading: the envelope ------------------------------------------------------------------


Numbered = tuple[int, Segment]


@dataclass
class _Message:
    number: int  # of its UNH
    reference: str
    type: str
    segments: list[Numbered]  # between UNH and UNT


class _Factory(SegmentFactory):
    """Plain segments, no directory validation: pydifact only warns that it has no D96A
    tables, and the checks that matter here are made on the content."""

    @staticmethod
    def create_segment(name: str, *elements: Element, validate: bool = True,
                       version: str = "", directory: str = "") -> Segment:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Z0-9]{3}", name):
            raise EDISyntaxError(f"{name!r} is not a segment tag")
        return Segment(name, *(elements or ("",)))


def _decode(data: bytes) -> str:
    """UTF-8 first (what most systems send whatever UNB says), else the declared 8-bit set;
    UNOW promises UTF-8, so bytes that are not are refused."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise EdifactError("UTF-16 text is not an EDIFACT encoding", segment=1, field="UNB")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    declared = re.search(rb"UNB.(UNO[A-Z])", data[:300])
    level = declared.group(1).decode("ascii") if declared else "UNOC"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if level == "UNOW":
            raise EdifactError(f"the bytes are not UTF-8, which UNOW declares: {exc}",
                               segment=1, field="UNB") from exc
    try:
        return data.decode(EIGHT_BIT.get(level, "latin-1"))
    except UnicodeDecodeError as exc:  # ISO 8859-7 leaves a few bytes unassigned
        raise EdifactError(f"the bytes are not {level}: {exc}", segment=1,
                           field="UNB") from exc


def _segments(text: str) -> list[Numbered]:
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        raise EdifactError("the input is empty")
    if text.startswith("UNA"):
        advice = text[3:9]
        used = advice[0:2] + advice[3:4] + advice[5:6]
        if len(advice) < 6 or len(set(used)) < 4 or any(c.isalnum() for c in used):
            raise EdifactError(f"UNA declares unusable service characters: {advice!r}",
                               field="UNA")
    elif text.startswith("UNB"):
        text = UNA + text  # also keeps pydifact from looking for a UNA further on
    else:
        raise EdifactError("not EDIFACT: an interchange begins with UNA or UNB", segment=1,
                           field="UNB")
    out: list[Numbered] = []
    try:
        for segment in Parser(factory=_Factory()).parse(text):
            if segment.tag != "UNA":
                out.append((len(out) + 1, segment))
    except (EDISyntaxError, ValidationError, ValueError, IndexError) as exc:
        detail = str(exc).removeprefix("EDIFACT Syntax Error: ")
        raise EdifactError(f"this segment cannot be read as EDIFACT ({detail})",
                           segment=len(out) + 1) from exc
    if not out:
        raise EdifactError("nothing follows UNA", segment=1, field="UNB")
    return out


def _messages(text: str | bytes, kind: str) -> list[_Message]:
    segments = _segments(_decode(text) if isinstance(text, bytes) else text)
    number, unb = segments[0]
    if unb.tag != "UNB":
        raise EdifactError(f"the interchange begins with {unb.tag}, not UNB", segment=number,
                           field="UNB")
    if not _part(unb, 0, 0).startswith("UNO") or not _part(unb, 4):
        raise EdifactError("UNB names no syntax (UNOx) or no interchange reference",
                           segment=number, field="UNB")
    messages: list[_Message] = []
    current: _Message | None = None
    for number, segment in segments[1:]:
        tag = segment.tag
        if current is not None and tag not in ("UNT", "UNH", "UNZ", "UNB"):
            current.segments.append((number, segment))
        elif current is not None and tag == "UNT":
            _close(current, number, segment)
            messages.append(current)
            current = None
        elif current is not None:
            raise EdifactError(f"message {current.reference!r} (segment {current.number}) "
                               "is not closed by UNT", segment=number, field="UNT")
        elif tag == "UNH":
            current = _Message(number, _part(segment, 0), _part(segment, 1, 0), [])
        elif tag == "UNZ":
            _close_interchange(unb, segments, number, segment, len(messages))
            break
        elif tag in ("UNG", "UNE"):
            raise EdifactError("functional groups (UNG/UNE) are not supported",
                               segment=number, field=tag)
        else:
            raise EdifactError(f"{tag} outside a message (UNH ... UNT)", segment=number,
                               field=tag)
    else:
        raise EdifactError("the interchange is not closed by UNZ: cut short?",
                           segment=segments[-1][0], field="UNZ")
    if not messages:
        raise EdifactError(f"the interchange holds no {kind} message (no UNH)",
                           segment=number, field="UNH")
    for message in messages:
        if message.type != kind:
            raise EdifactError(f"message {message.reference!r} is {message.type or 'untyped'}"
                               f", not {kind}", segment=message.number, field="UNH")
        if not message.segments or message.segments[0][1].tag != "BGM":
            raise EdifactError(f"message {message.reference!r} does not begin with BGM",
                               segment=message.number + 1, field="BGM")
    return messages


def _close(message: _Message, number: int, unt: Segment) -> None:
    counted = _part(unt, 0)
    if not _counts(counted, len(message.segments) + 2):
        raise EdifactError(f"UNT counts {counted!r} segments, the message has "
                           f"{len(message.segments) + 2}", segment=number, field="UNT")
    if _part(unt, 1) != message.reference:
        raise EdifactError(f"UNT closes {_part(unt, 1)!r}, the message is "
                           f"{message.reference!r}", segment=number, field="UNT")


def _close_interchange(unb: Segment, segments: list[Numbered], number: int, unz: Segment,
                       messages: int) -> None:
    if number != segments[-1][0]:
        raise EdifactError("segments after UNZ: one interchange per file", segment=number + 1,
                           field="UNZ")
    if not _counts(_part(unz, 0), messages):
        raise EdifactError(f"UNZ counts {_part(unz, 0)!r} messages, the interchange has "
                           f"{messages}", segment=number, field="UNZ")
    if _part(unz, 1) != _part(unb, 4):
        raise EdifactError(f"UNZ closes {_part(unz, 1)!r}, UNB opened {_part(unb, 4)!r}",
                           segment=number, field="UNZ")


def _counts(raw: str, expected: int) -> bool:
    return bool(_INT.fullmatch(raw)) and int(raw) == expected  # "0018" counts 18 too


def _part(segment: Segment, element: int, component: int | None = None) -> str:
    """Element `element` (its component `component`), "" where absent: a simple element
    is its own first component."""
    value = segment.elements[element] if element < len(segment.elements) else ""
    if component is None:
        return value if isinstance(value, str) else (value[0] if value else "")
    if isinstance(value, str):
        return value if component == 0 else ""
    return value[component] if component < len(value) else ""


def _sections(message: _Message) -> tuple[list[Numbered], list[list[Numbered]],
                                          list[Numbered]]:
    """Header (BGM up to the first LIN), one group per LIN, and the summary (from UNS, or
    from CNT where UNS is missing)."""
    header: list[Numbered] = []
    lines: list[list[Numbered]] = []
    summary: list[Numbered] = []
    for numbered in message.segments:
        tag = numbered[1].tag
        if summary or tag in ("UNS", "CNT"):
            summary.append(numbered)
        elif tag == "LIN":
            lines.append([numbered])
        elif lines:
            lines[-1].append(numbered)
        else:
            header.append(numbered)
    for number, segment in summary:
        if segment.tag == "CNT" and _part(segment, 0, 0) == "2":
            if not _counts(_part(segment, 0, 1), len(lines)):
                raise EdifactError(f"CNT+2 counts {_part(segment, 0, 1)!r} lines, the message"
                                   f" has {len(lines)}", segment=number, field="CNT")
    return header, lines, summary


def _find(segments: Sequence[Numbered], tag: str,
          qualifier: str | None = None) -> Iterator[Numbered]:
    """Segments with `tag` whose qualifier (first component of the first element) is
    `qualifier`."""
    for numbered in segments:
        segment = numbered[1]
        if segment.tag == tag and (qualifier is None or _part(segment, 0, 0) == qualifier):
            yield numbered


def _first(segments: Sequence[Numbered], tag: str,
           qualifier: str | None = None) -> Numbered | None:
    return next(_find(segments, tag, qualifier), None)


def _integer(raw: str, number: int, field: str) -> int:
    if not _INT.fullmatch(raw):
        raise EdifactError(f"{raw!r} is not a whole number", segment=number, field=field)
    return int(raw)


def _decimal(raw: str, number: int, field: str) -> Decimal:
    if not _DECIMAL.fullmatch(raw):
        raise EdifactError(f"{raw!r} is not a decimal number", segment=number, field=field)
    return Decimal(raw.replace(",", "."))  # either mark is a decimal mark in EDIFACT


def _date(segment: Numbered, field: str) -> date:
    number, dtm = segment
    value, form = _part(dtm, 0, 1), _part(dtm, 0, 2) or "102"
    patterns = {"102": "%Y%m%d", "101": "%y%m%d", "203": "%Y%m%d%H%M", "204": "%Y%m%d%H%M%S"}
    widths = {"102": 8, "101": 6, "203": 12, "204": 14}
    try:
        if form not in patterns or not re.fullmatch(f"[0-9]{{{widths[form]}}}", value):
            raise ValueError(f"not {widths.get(form, 'a known')} digits of format {form}")
        return datetime.strptime(value, patterns[form]).date()
    except ValueError as exc:
        raise EdifactError(f"{value!r} in format {form!r} is not a date ({exc})",
                           segment=number, field=field) from exc


def _party(header: Sequence[Numbered], function: str) -> tuple[str, str] | None:
    found = _first(header, "NAD", function)
    if found is None:
        return None
    nad = found[1]
    agency = _part(nad, 1, 2)
    return _part(nad, 1, 0), "14" if agency == "9" else agency


def _currency_of(header: Sequence[Numbered]) -> str | None:
    found = _first(header, "CUX")
    if found is None:
        return None
    number, cux = found
    currency = _part(cux, 0, 1)
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise EdifactError(f"{currency!r} is not an ISO 4217 currency", segment=number,
                           field="CUX")
    return currency


def _isbn(lin: Segment, group: Sequence[Numbered]) -> str | None:
    if _part(lin, 2, 1) in ("EN", "IB") and _part(lin, 2, 0):
        return _part(lin, 2, 0)
    for _, pia in sorted(_find(group, "PIA"), key=lambda n: _part(n[1], 0) != "5"):
        for composite in pia.elements[1:]:
            if isinstance(composite, list) and composite[1:2] in (["IB"], ["EN"]):
                return composite[0] or None
    return None


# --- reading: INVOIC ------------------------------------------------------------------------


def parse_invoic(text: str | bytes) -> list[InvoiceIn]:
    """Every INVOIC message of one interchange, in order."""
    return [_invoice(message) for message in _messages(text, "INVOIC")]


def _invoice(message: _Message) -> InvoiceIn:
    header, groups, summary = _sections(message)
    number, bgm = header[0]
    if _part(bgm, 0, 0) != "380":
        raise EdifactError(f"document code {_part(bgm, 0, 0)!r} is not a commercial invoice "
                           "(380); credit notes and others are not read", segment=number,
                           field="BGM")
    if _part(bgm, 2) in ("1", "3"):
        raise EdifactError("the message cancels or deletes an invoice; that is not read",
                           segment=number, field="BGM")
    invoice_number = _part(bgm, 1, 0)
    if not invoice_number:
        raise EdifactError("BGM carries no invoice number", segment=number, field="BGM")
    dtm = _first(header, "DTM", "137")
    supplier = _party(header, "SU")
    total = None
    for qualifier in TOTAL_QUALIFIERS:
        found = _first(summary, "MOA", qualifier)
        if found is not None:
            total = _decimal(_part(found[1], 0, 1), found[0], f"MOA+{qualifier}")
            break
    return InvoiceIn(
        invoice_number=invoice_number,
        issued=None if dtm is None else _date(dtm, "DTM"),
        supplier_id=(supplier[0] or None) if supplier else None,
        supplier_qualifier=(supplier[1] or None) if supplier else None,
        currency=_currency_of(header),
        total=total,
        lines=tuple(_invoice_line(i, group) for i, group in enumerate(groups, 1)))


def _invoice_line(index: int, group: list[Numbered]) -> InvoiceLineIn:
    where = f"LIN[{index}]"
    number, lin = group[0]
    qty = _first(group, "QTY", "47")
    if qty is None:
        raise EdifactError("the line has no invoiced quantity (QTY+47)", segment=number,
                           field=f"{where}.QTY")
    quantity = _integer(_part(qty[1], 0, 1), qty[0], f"{where}.QTY")
    if quantity < 0:
        raise EdifactError(f"negative quantity {quantity}", segment=qty[0],
                           field=f"{where}.QTY")
    moa = _first(group, "MOA", "203")
    if moa is None:
        raise EdifactError("the line has no line amount (MOA+203)", segment=number,
                           field=f"{where}.MOA")
    price = _first(group, "PRI", "AAA") or _first(group, "PRI", "AAB")
    rff = _first(group, "RFF", "LI")
    position = _part(lin, 0)
    if not re.fullmatch(r"[0-9]{1,6}", position):
        raise EdifactError(f"{position!r} is not a line number", segment=number, field=where)
    return InvoiceLineIn(
        line_ref=(_part(rff[1], 0, 1) or None) if rff else None,
        isbn=_isbn(lin, group),
        quantity=quantity,
        amount=_decimal(_part(moa[1], 0, 1), moa[0], f"{where}.MOA"),
        unit_price=None if price is None else _decimal(_part(price[1], 0, 1), price[0],
                                                       f"{where}.PRI"),
        position=int(position))


# --- reading: ORDERS ------------------------------------------------------------------------


def parse_orders(text: str | bytes) -> OrderOut:
    """The one ORDERS message of an interchange: what `orders_message` wrote, read back."""
    messages = _messages(text, "ORDERS")
    if len(messages) != 1:
        raise EdifactError(f"{len(messages)} ORDERS messages; one order is one message",
                           segment=messages[1].number, field="UNH")
    message = messages[0]
    header, groups, _ = _sections(message)
    number, bgm = header[0]
    order_id = _part(bgm, 1, 0)
    if not order_id:
        raise EdifactError("BGM carries no order number", segment=number, field="BGM")
    dtm = _first(header, "DTM", "137")
    if dtm is None:
        raise EdifactError("the order has no date (DTM+137)", segment=number, field="DTM")
    parties = []
    for function in ("BY", "SU"):
        party = _party(header, function)
        if party is None or not party[0] or not party[1]:
            raise EdifactError(f"no party with id and agency in NAD+{function}",
                               segment=number, field=f"NAD+{function}")
        parties.append(party)
    currency = _currency_of(header)
    if currency is None:
        raise EdifactError("the order names no currency (CUX)", segment=number, field="CUX")
    return OrderOut(
        order_id=order_id, issued=_date(dtm, "DTM"), currency=currency,
        buyer_id=parties[0][0], buyer_qualifier=parties[0][1],
        supplier_id=parties[1][0], supplier_qualifier=parties[1][1],
        lines=tuple(_order_line_in(i, group) for i, group in enumerate(groups, 1)))


def _order_line_in(index: int, group: list[Numbered]) -> OrderLineOut:
    where = f"LIN[{index}]"
    number, lin = group[0]
    isbn = _isbn(lin, group)
    if not isbn:
        raise EdifactError("the line names no ISBN or EAN (LIN or PIA)", segment=number,
                           field=f"{where}.PIA")
    qty = _need(group, "QTY", "21", where)
    price = _need(group, "PRI", "AAE", where)
    rff = _need(group, "RFF", "LI", where)
    text: dict[str, str] = {}
    for _, imd in _find(group, "IMD"):
        code = _part(imd, 1)
        text[code] = text.get(code, "") + _part(imd, 2, 3) + _part(imd, 2, 4)
    year = None
    if "170" in text:
        imd_number = next(n for n, imd in _find(group, "IMD") if _part(imd, 1) == "170")
        year = _integer(text["170"], imd_number, f"{where}.IMD")
    copies: dict[str, int] = {}
    for gir_number, gir in _find(group, "GIR"):
        composites = [c for c in gir.elements[1:] if isinstance(c, list)]
        branches = [c[0] for c in composites if c[1:2] == ["LLO"]]
        counts = [c[0] for c in composites if c[1:2] == ["LQT"]]
        if branches:
            count = _integer(counts[0], gir_number, f"{where}.GIR") if counts else 1
            if count < 1:
                raise EdifactError(f"{count} copies for branch {branches[0]!r}",
                                   segment=gir_number, field=f"{where}.GIR")
            copies[branches[0]] = copies.get(branches[0], 0) + count
    return OrderLineOut(
        line_ref=_part(rff[1], 0, 1), isbn=isbn, title=text.get("050", ""),
        author=text.get("009"), publisher=text.get("109"), year=year,
        quantity=_integer(_part(qty[1], 0, 1), qty[0], f"{where}.QTY"),
        unit_price=_decimal(_part(price[1], 0, 1), price[0], f"{where}.PRI"),
        distribution=tuple(copies.items()))


def _need(group: Sequence[Numbered], tag: str, qualifier: str, where: str) -> Numbered:
    found = _first(group, tag, qualifier)
    if found is None:
        raise EdifactError(f"the line has no {tag}+{qualifier}", segment=group[0][0],
                           field=f"{where}.{tag}")
    return found
