"""EDIFACT ORDERS out and INVOIC in: what we send reads back (with pydifact itself, not only
our reader), a real supplier's INVOIC reads with the right numbers, and nothing a vendor
can upload makes the reader fail with anything but an EdifactError."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydifact.parser import Parser
from pydifact.segmentcollection import Interchange
from pydifact.segments import Segment

from services.acquisition import edifact
from services.acquisition.edifact import (
    EdifactError,
    InvoiceIn,
    InvoiceLineIn,
    OrderLineOut,
    OrderOut,
)

# pydifact has no D96A tables and says so for every segment it validates.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pydifact.exceptions.MissingImplementationWarning")

DATA = Path(__file__).parent / "data" / "edifact"

LINE = OrderLineOut(
    line_ref="L-0001", isbn="9787020024759", title="围城", author="Qian Zhongshu",
    publisher="People's Literature", year=1991, quantity=3, unit_price=Decimal("40.00"),
    distribution=(("A", 2), ("B", 1)))
ORDER = OrderOut(
    order_id="O-2024-0001", issued=date(2024, 3, 5), currency="CNY",
    buyer_id="BRANCHLINE", buyer_qualifier="91",
    supplier_id="6901234567892", supplier_qualifier="14",
    lines=(LINE,
           OrderLineOut(line_ref="L-0002", isbn="0306406152", title="An ISBN-10 only",
                        author=None, publisher=None, year=None, quantity=2,
                        unit_price=Decimal("9.5"), distribution=(("C", 1),))))

INVOICE = InvoiceIn(
    invoice_number="XH-77", issued=date(2024, 4, 1), supplier_id="6901234567892",
    supplier_qualifier="14", currency="CNY", total=Decimal("128.00"),
    lines=(InvoiceLineIn(line_ref="L-0001", isbn="9787020024759", quantity=3,
                         amount=Decimal("108.00"), unit_price=Decimal("36.00"), position=1),
           InvoiceLineIn(line_ref=None, isbn=None, quantity=1, amount=Decimal("20"),
                         unit_price=None, position=2)))


def segments_of(text: str) -> list[Segment]:
    return [s for s in Parser().parse(text) if s.tag != "UNA"]


def component(segment: Segment, element: int, index: int) -> str:
    value = segment.elements[element]
    return value if isinstance(value, str) else value[index]


def lines_per_pydifact(text: str) -> list[dict[str, Any]]:
    """The order lines as pydifact's own Interchange reads them."""
    [message] = list(Interchange.from_str(text).get_messages())
    assert (message.type, message.identifier) == ("ORDERS", ["ORDERS", "D", "96A", "UN",
                                                             "EAN008"])
    lines: list[dict[str, Any]] = []
    for segment in message.segments:
        if segment.tag == "LIN":
            lines.append({"gir": [], "imd": {}})
        elif not lines:
            continue
        line = lines[-1]
        if segment.tag in ("QTY", "PRI", "RFF"):
            line[segment.tag] = component(segment, 0, 1)
        elif segment.tag == "GIR":
            line["gir"].append(component(segment, 1, 0))
        elif segment.tag == "IMD":
            code, parts = segment.elements[1], segment.elements[2]
            line["imd"][code] = line["imd"].get(code, "") + "".join(parts[3:])
    return lines


# --- ORDERS out ------------------------------------------------------------------------------


def test_orders_message_reads_back_with_pydifact_to_the_same_lines() -> None:
    text = edifact.orders_message(ORDER, interchange_ref="0001")
    interchange = Interchange.from_str(text)
    assert interchange.sender == ["BRANCHLINE", "91"]
    assert interchange.recipient == ["6901234567892", "14"]
    assert interchange.control_reference == "0001"
    assert interchange.syntax_identifier == ("UNOW", 4)  # a Chinese title: UTF-8
    lines = lines_per_pydifact(text)
    assert [(ln["QTY"], ln["PRI"], ln["RFF"], ln["gir"]) for ln in lines] == [
        ("3", "40.00", "L-0001", ["A", "A", "B"]),
        ("2", "9.5", "L-0002", ["C"]),
    ]
    assert lines[0]["imd"] == {"009": "Qian Zhongshu", "050": "围城",
                               "109": "People's Literature", "170": "1991"}


def test_the_declared_character_set_is_latin1_when_it_can_be_and_utf8_when_not() -> None:
    latin = replace(ORDER, lines=ORDER.lines[1:])
    text = edifact.orders_message(latin, interchange_ref="0001")
    assert Interchange.from_str(text).syntax_identifier == ("UNOC", 3)
    accented = replace(latin, lines=(replace(latin.lines[0], title="Les Misérables"),))
    data = edifact.encoded(edifact.orders_message(accented, interchange_ref="0001"))
    assert "Misérables".encode("latin-1") in data  # one byte per letter, as UNOC says
    assert edifact.parse_orders(data).lines[0].title == "Les Misérables"
    chinese = edifact.encoded(edifact.orders_message(ORDER, interchange_ref="0001"))
    assert chinese.startswith(b"UNA:+.? 'UNB+UNOW:4+") and "围城".encode() in chinese
    assert edifact.parse_orders(chinese).lines[0].title == "围城"


def test_orders_message_follows_the_profile_segment_by_segment() -> None:
    text = edifact.orders_message(ORDER, interchange_ref="0001")
    assert text.startswith("UNA:+.? 'UNB+UNOW:4+BRANCHLINE:91+6901234567892:14+240305:0000"
                           "+0001++ORDERS'UNH+1+ORDERS:D:96A:UN:EAN008'BGM+220+O-2024-0001+9'"
                           "DTM+137:20240305:102'NAD+BY+BRANCHLINE::91'"
                           "NAD+SU+6901234567892::9'CUX+2:CNY:9'")
    assert ("LIN+1++9787020024759:EN'PIA+5+9787020024759:IB'" in text)
    assert "QTY+21:3'GIR+001+A:LLO'GIR+002+A:LLO'GIR+003+B:LLO'PRI+AAE:40.00:CA'" in text
    assert "RFF+LI:L-0001'" in text
    assert "LIN+2'PIA+5+0306406152:IB'" in text  # not an EAN-13: PIA alone
    assert text.endswith("UNS+S'CNT+2:2'UNT+28+1'UNZ+1+0001'")


def test_unt_counts_every_segment_from_unh_to_unt() -> None:
    text = edifact.orders_message(ORDER, interchange_ref="0001")
    segments = segments_of(text)
    tags = [s.tag for s in segments]
    unh, unt = tags.index("UNH"), tags.index("UNT")
    assert segments[unt].elements == [str(unt - unh + 1), "1"]
    assert segments[-1].elements == ["1", "0001"]  # UNZ: one message
    [cnt] = [s for s in segments if s.tag == "CNT"]
    assert cnt.elements == [["2", "2"]]


def test_orders_round_trip_through_our_reader() -> None:
    assert edifact.parse_orders(edifact.orders_message(ORDER, interchange_ref="R1")) == ORDER


def test_special_characters_survive_escaping() -> None:
    title = "Rock'n'roll + jazz: why? 100% ?? 围城"
    line = replace(LINE, title=title, author="O'Brien, Flann", publisher="A+B: ?'",
                   line_ref="L:1+2'?")
    order = replace(ORDER, lines=(line,))
    text = edifact.orders_message(order, interchange_ref="R1")
    assert "IMD+L+050+:::Rock?'n?'roll ?+ jazz?: why?? 100% ???? 围城'" in text
    assert "RFF+LI:L?:1?+2?'??'" in text
    [read] = lines_per_pydifact(text)
    assert read["RFF"] == "L:1+2'?"
    assert read["imd"] == {"009": "O'Brien, Flann", "050": title, "109": "A+B: ?'",
                           "170": "1991"}
    assert edifact.parse_orders(text) == order


def test_long_text_goes_in_35_character_components_two_per_imd() -> None:
    title = "".join(f"{i:02d}-ab-" for i in range(20))  # 120 characters
    order = replace(ORDER, lines=(replace(LINE, title=title),))
    text = edifact.orders_message(order, interchange_ref="R1")
    imds = [s for s in segments_of(text) if s.tag == "IMD" and s.elements[1] == "050"]
    pieces = [p for s in imds for p in s.elements[2][3:]]
    assert [len(s.elements[2]) for s in imds] == [5, 5]
    assert [len(p) for p in pieces] == [35, 35, 35, 15]
    assert "".join(pieces) == title
    assert edifact.parse_orders(text).lines[0].title == title


def test_control_characters_in_text_become_spaces() -> None:
    order = replace(ORDER, lines=(replace(LINE, title="Line one\nline two\t"),))
    read = edifact.parse_orders(edifact.orders_message(order, interchange_ref="R1"))
    assert read.lines[0].title == "Line one line two "


texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=90)
codes = st.text("ABCDEFGHJK0123-:+?'", min_size=1, max_size=8)


@st.composite
def order_lines(draw: st.DrawFn) -> OrderLineOut:
    quantity = draw(st.integers(1, 12))
    branches = draw(st.lists(codes, unique=True, max_size=3))
    distribution: list[tuple[str, int]] = []
    left = quantity
    for branch in branches:
        copies = draw(st.integers(0, left))
        if copies:
            distribution.append((branch, copies))
            left -= copies
    return OrderLineOut(
        line_ref=draw(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
                              max_size=35)),
        isbn=draw(st.from_regex(r"97[89]\d{10}", fullmatch=True) | codes),
        title=draw(texts), author=draw(st.none() | texts), publisher=draw(st.none() | texts),
        year=draw(st.none() | st.integers(1450, 2100)), quantity=quantity,
        unit_price=Decimal(draw(st.integers(0, 10**8))) / 100,
        distribution=tuple(distribution))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(order_lines(), min_size=1, max_size=4),
       st.sampled_from(["14", "31B", "91", "92"]), st.dates())
def test_any_order_reads_back_the_same(lines: list[OrderLineOut], qualifier: str,
                                       issued: date) -> None:
    order = replace(ORDER, lines=tuple(lines), supplier_qualifier=qualifier, issued=issued)
    text = edifact.orders_message(order, interchange_ref="R1")
    assert edifact.parse_orders(text) == order
    read = lines_per_pydifact(text)
    assert [ln["RFF"] for ln in read] == [ln.line_ref for ln in lines]
    assert [Decimal(ln["PRI"]) for ln in read] == [ln.unit_price for ln in lines]
    assert [int(ln["QTY"]) for ln in read] == [ln.quantity for ln in lines]
    assert [ln["gir"] for ln in read] == [
        [b for b, n in ln.distribution for _ in range(n)] for ln in lines]


@pytest.mark.parametrize(("change", "field"), [
    ({"buyer_qualifier": "ZZ"}, "buyer_qualifier"),
    ({"currency": "yuan"}, "currency"),
    ({"lines": ()}, "lines"),
    ({"lines": (replace(LINE, quantity=0),)}, "lines[0].quantity"),
    ({"lines": (replace(LINE, unit_price=40.0),)},  # type: ignore[arg-type]
     "lines[0].unit_price"),
    ({"lines": (replace(LINE, unit_price=Decimal("NaN")),)}, "lines[0].unit_price"),
    ({"lines": (replace(LINE, distribution=(("A", 4),)),)}, "lines[0].distribution"),
    ({"lines": (replace(LINE, distribution=(("A", 1), ("A", 1))),)},
     "lines[0].distribution"),
    ({"lines": (replace(LINE, line_ref=""),)}, "lines[0].line_ref"),
])
def test_an_order_that_cannot_be_sent_is_refused(change: dict[str, object],
                                                 field: str) -> None:
    with pytest.raises(EdifactError) as caught:
        edifact.orders_message(replace(ORDER, **change), interchange_ref="R1")  # type: ignore[arg-type]
    assert caught.value.field == field


def test_interchange_reference_must_fit_fourteen_characters() -> None:
    with pytest.raises(EdifactError, match="interchange reference"):
        edifact.orders_message(ORDER, interchange_ref="x" * 15)


# --- INVOIC in -------------------------------------------------------------------------------


def test_invoic_written_reads_back_equal() -> None:
    text = edifact.invoic_message(INVOICE, interchange_ref="77")
    assert edifact.parse_invoic(text) == [INVOICE]
    assert edifact.parse_invoic(text.encode("utf-8")) == [INVOICE]
    [message] = list(Interchange.from_str(text).get_messages())
    assert message.type == "INVOIC"


def test_invoic_without_optional_parts_reads_back_equal() -> None:
    bare = InvoiceIn(invoice_number="N1", issued=None, supplier_id=None,
                     supplier_qualifier=None, currency=None, total=None,
                     lines=(InvoiceLineIn(line_ref="L", isbn="0306406152", quantity=0,
                                          amount=Decimal("-3.50"), unit_price=None,
                                          position=7),))
    assert edifact.parse_invoic(edifact.invoic_message(bare, interchange_ref="1")) == [bare]


def test_a_real_supplier_invoic_from_koha_reads_with_its_numbers() -> None:
    """BLSINV337023.CEI from Koha's t/edi_testfiles: six invoices from one supplier."""
    invoices = edifact.parse_invoic((DATA / "BLSINV337023.CEI").read_bytes())
    assert [i.invoice_number for i in invoices] == [
        "01975489", "01975490", "01975491", "01975492", "01975493", "01975494"]
    assert [len(i.lines) for i in invoices] == [1, 8, 3, 1, 33, 10]
    assert {(i.issued, i.supplier_id, i.supplier_qualifier, i.currency) for i in invoices} == {
        (date(2014, 7, 29), "5013546025078", "14", "GBP")}
    assert [i.total for i in invoices] == [Decimal(t) for t in (
        "7.4", "35.260", "30.180", "4.550", "131.910", "28.4")]
    for invoice in invoices:  # MOA+9 (amount payable) is what the lines add up to here
        assert invoice.total == sum((ln.amount for ln in invoice.lines), Decimal(0))
        assert [ln.position for ln in invoice.lines] == list(range(1, len(invoice.lines) + 1))
    assert invoices[0].lines[0] == InvoiceLineIn(
        line_ref="2724/71178", isbn="9780007464593", quantity=1, amount=Decimal("7.4"),
        unit_price=Decimal("7.4"), position=1)
    last = invoices[4].lines[-1]
    assert (last.line_ref, last.isbn, last.amount, last.unit_price) == (
        "2971/79434", "9781781716465", Decimal("5.69"), Decimal("5.69"))


def test_koha_test_file_with_two_interchanges_and_empty_segments_is_refused() -> None:
    """INVOICE.CEI from Koha's t/edi_testfiles is hand-made: a wrong UNT count, an empty
    segment and a second interchange. It is refused whole rather than half read."""
    with pytest.raises(EdifactError) as caught:
        edifact.parse_invoic((DATA / "INVOICE.CEI").read_bytes())
    assert caught.value.segment == 53


BODY = (
    "BGM+380+INV?+1+9", "DTM+137:240401:101", "NAD+SU+S123::31B", "CUX+2:EUR:4",
    "LIN+1", "PIA+1+X:SA", "PIA+5+9780306406157:EN", "QTY+47:2", "MOA+203:19,90",
    "PRI+AAB:9,95", "RFF+LI:O-9",
    "UNS+S", "CNT+2:1", "MOA+79:19,90", "MOA+9:21,89", "MOA+77:21,89")


def handwritten(body: tuple[str, ...] = BODY) -> str:
    """A supplier's INVOIC without UNA (the defaults hold), with comma decimal marks, the
    ISBN in PIA only, and the UNT count made right for `body`."""
    return ("UNB+UNOC:3+5013546025078:14+BUYER:92+240401:1200+9'UNH+M1+INVOIC:D:96A:UN:EAN008'"
            + "".join(f"{s}'" for s in body) + f"UNT+{len(body) + 2}+M1'UNZ+1+9'")


HANDWRITTEN = handwritten()


def test_a_message_without_una_with_comma_decimals_and_pia_ids_reads() -> None:
    [invoice] = edifact.parse_invoic(HANDWRITTEN)
    assert invoice == InvoiceIn(
        invoice_number="INV+1", issued=date(2024, 4, 1), supplier_id="S123",
        supplier_qualifier="31B", currency="EUR", total=Decimal("21.89"),
        lines=(InvoiceLineIn(line_ref="O-9", isbn="9780306406157", quantity=2,
                             amount=Decimal("19.90"), unit_price=Decimal("9.95"),
                             position=1),))


def test_bytes_are_utf8_first_then_latin1() -> None:
    text = HANDWRITTEN.replace("RFF+LI:O-9", "RFF+LI:Café-围城")
    assert edifact.parse_invoic(text.encode("utf-8"))[0].lines[0].line_ref == "Café-围城"
    latin = HANDWRITTEN.replace("RFF+LI:O-9", "RFF+LI:Café").encode("latin-1")
    assert edifact.parse_invoic(latin)[0].lines[0].line_ref == "Café"
    assert edifact.parse_invoic(b"\xef\xbb\xbf" + HANDWRITTEN.encode())[0].invoice_number


def broken(old: str, new: str) -> str:
    """HANDWRITTEN with one body segment changed (or dropped), still counted right."""
    assert any(old in s for s in BODY)
    return handwritten(tuple(s.replace(old, new) for s in BODY if s.replace(old, new)))


@pytest.mark.parametrize(("data", "segment", "field", "words"), [
    ("", None, None, "empty"),
    (b"  \n", None, None, "empty"),
    ("this is not edifact", 1, "UNB", "not EDIFACT"),
    (b"\x00\x01PK\x03\x04", 1, "UNB", "not EDIFACT"),
    (b"\xff\xfeU\x00N\x00", 1, "UNB", "UTF-16"),
    ("UNB+UNOC:3+A:14+B:14+240401:1200+9'UNZ+0+9'", 2, "UNH", "no INVOIC"),
    (broken("BGM+380+INV?+1+9", ""), 3, "BGM", "does not begin with BGM"),
    (HANDWRITTEN.replace("INVOIC:D", "ORDERS:D"), 2, "UNH", "ORDERS, not INVOIC"),
    (broken("BGM+380", "BGM+381"), 3, "BGM", "credit notes"),
    (broken("BGM+380+INV?+1+9", "BGM+380+INV?+1+1"), 3, "BGM", "cancels"),
    (broken("LIN+1", "LIN+one"), 7, "LIN[1]", "not a line number"),
    (broken("CUX+2:EUR", "CUX+2:euro"), 6, "CUX", "currency"),
    (broken("QTY+47:2", "QTY+47:2.5"), 10, "LIN[1].QTY", "not a whole number"),
    (broken("QTY+47:2", ""), 7, "LIN[1].QTY", "no invoiced quantity"),
    (broken("MOA+203:19,90", "MOA+203:19.9.0"), 11, "LIN[1].MOA", "not a decimal"),
    (broken("MOA+77:21,89", "MOA+77:lots"), 18, "MOA+77", "not a decimal"),
    (broken("DTM+137:240401", "DTM+137:240231"), 4, "DTM", "not a date"),
    (broken("DTM+137:240401:101", "DTM+137:20240401:101"), 4, "DTM", "not a date"),
    (HANDWRITTEN.replace("UNT+18", "UNT+15"), 19, "UNT", "counts '15'"),
    (broken("CNT+2:1", "CNT+2:3"), 15, "CNT", "counts '3' lines"),
    (HANDWRITTEN.replace("UNZ+1+9'", ""), 19, "UNZ", "not closed by UNZ"),
    (HANDWRITTEN.replace("UNZ+1+9'", "UNZ+2+9'"), 20, "UNZ", "counts '2'"),
    (HANDWRITTEN.replace("UNZ+1+9'", "UNZ+1+8'"), 20, "UNZ", "UNB opened '9'"),
    (HANDWRITTEN.replace("UNT+18+M1'", ""), 19, "UNT", "not closed by UNT"),
    (HANDWRITTEN.replace("UNT+18+M1'", "UNT+18+M2'"), 19, "UNT", "closes 'M2'"),
    (HANDWRITTEN + HANDWRITTEN, 21, "UNZ", "after UNZ"),
    (HANDWRITTEN[:-1], 20, None, "cannot be read"),
    (HANDWRITTEN.replace("MOA+79", "moa+79"), 16, None, "cannot be read"),
    (HANDWRITTEN.replace("UNB+UNOC", "UNB+UNOW").encode() + b"\xff", 1, "UNB", "UTF-8"),
    ("UNA:::::::UNB", None, "UNA", "service characters"),
])
def test_bad_input_names_its_segment_and_field(data: str | bytes, segment: int | None,
                                               field: str | None, words: str) -> None:
    with pytest.raises(EdifactError, match=words) as caught:
        edifact.parse_invoic(data)
    assert (caught.value.segment, caught.value.field) == (segment, field)
    assert isinstance(caught.value, ValueError)


def test_parse_orders_refuses_an_invoice() -> None:
    with pytest.raises(EdifactError, match="INVOIC, not ORDERS"):
        edifact.parse_orders(HANDWRITTEN)


def mutated(base: str) -> st.SearchStrategy[str]:
    """`base` with a few spans replaced by separators, digits and tag letters: input that
    gets past the first checks and into the envelope and line reading."""
    edit = st.tuples(st.integers(0, len(base)), st.integers(0, 6),
                     st.text(":+.,? '\n?AZ0123456789UNHTSLIQ-", max_size=5))

    def run(edits: list[tuple[int, int, str]]) -> str:
        text = base
        for at, cut, put in edits:
            text = text[:at] + put + text[at + cut:]
        return text

    return st.lists(edit, min_size=1, max_size=4).map(run)


INVOIC_TEXT = edifact.invoic_message(INVOICE, interchange_ref="77")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300) | st.binary(max_size=300)
       | st.text(max_size=200).map(lambda s: "UNA:+.? 'UNB+UNOC:3+" + s)
       | st.text(max_size=200).map(lambda s: "UNA" + s)
       | mutated(INVOIC_TEXT) | mutated(HANDWRITTEN)
       | mutated(INVOIC_TEXT).map(lambda s: s.encode("utf-8")))
def test_any_input_is_read_or_refused_with_edifact_error(data: str | bytes) -> None:
    try:
        invoices = edifact.parse_invoic(data)
    except EdifactError as exc:
        assert str(exc)
        return
    assert all(isinstance(i, InvoiceIn) for i in invoices)
