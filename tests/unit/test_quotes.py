"""Vendor quote lists: the files vendors really send read to the same rows, every bad cell
is named by its line and column, and no upload makes the reader raise."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.acquisition.quotes import (
    ALIASES,
    MAX_QUANTITY,
    QuoteRow,
    RowError,
    parse_quote_csv,
)

FIELDS = {*ALIASES, "row", "file"}

NORMAL = (b"isbn,quantity,price,formula,title,author,publisher,year\n"
          b"9787020002207,2,39.90,two,Fortress Besieged,Qian Zhongshu,People's Literature,"
          b"1991\n"
          b"978-7-5442-5399-4 , 1 ,45,,  Shadow  ,,,\n")
NORMAL_ROWS = [
    QuoteRow(row=2, isbn="9787020002207", quantity=2, unit_price=Decimal("39.90"),
             formula="two", title="Fortress Besieged", author="Qian Zhongshu",
             publisher="People's Literature", year=1991),
    QuoteRow(row=3, isbn="978-7-5442-5399-4", quantity=1, unit_price=Decimal("45.00"),
             formula=None, title="Shadow"),
]


def parse(text: str, **kwargs: int) -> tuple[list[QuoteRow], list[RowError]]:
    return parse_quote_csv(text.encode(), **kwargs)


def errors_of(text: str) -> list[tuple[int, str]]:
    return [(e.row, e.field) for e in parse(text)[1]]


def test_a_normal_file_reads_every_column() -> None:
    rows, errors = parse_quote_csv(NORMAL)
    assert (rows, errors) == (NORMAL_ROWS, [])
    assert all(type(r.unit_price) is Decimal and r.unit_price.as_tuple().exponent == -2
               for r in rows)


def test_a_utf8_bom_is_not_part_of_the_first_column_name() -> None:
    assert parse_quote_csv(b"\xef\xbb\xbf" + NORMAL) == (NORMAL_ROWS, [])


def test_crlf_and_lone_cr_line_ends_read_the_same() -> None:
    assert parse_quote_csv(NORMAL.replace(b"\n", b"\r\n")) == (NORMAL_ROWS, [])
    assert parse_quote_csv(NORMAL.replace(b"\n", b"\r")) == (NORMAL_ROWS, [])


def test_a_gb18030_file_with_chinese_headers_and_titles() -> None:
    text = ("ISBN号,数量,单价,分配方案,题名,作者,出版社,出版年\n"
            "9787020024759,3,￥40.00,总馆两册,围城,钱锺书,人民文学出版社,1991\n"
            # Fullwidth digits and point, as a Chinese input method types them.
            "9787544253994,\uff11,\uff13\uff12\uff0e\uff15\uff10元,,影子,,,2019年5月\n")
    data = text.encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    expected = [
        QuoteRow(row=2, isbn="9787020024759", quantity=3, unit_price=Decimal("40.00"),
                 formula="总馆两册", title="围城", author="钱锺书",
                 publisher="人民文学出版社", year=1991),
        QuoteRow(row=3, isbn="9787544253994", quantity=1, unit_price=Decimal("32.50"),
                 formula=None, title="影子", year=2019),
    ]
    assert parse_quote_csv(data) == (expected, [])
    # GB18030's own byte order mark (the encoding of U+FEFF) is dropped too.
    assert parse_quote_csv("\ufeff".encode("gb18030") + data) == (expected, [])
    # Chinese spelled in UTF-8 reads the same.
    assert parse_quote_csv(text.encode()) == (expected, [])


def test_semicolons_with_a_decimal_comma() -> None:
    rows, errors = parse("ISBN;Qty;Unit Price;Distribution\n"
                         "9787020002207;2;39,90;two\n"
                         "9787544253994;1;¥12,5;\n"
                         "9787544253995;1;7,00 CNY;\n"
                         "9787544253996;1;8.25;\n")
    assert errors == []
    assert [(r.row, r.unit_price, r.formula) for r in rows] == [
        (2, Decimal("39.90"), "two"), (3, Decimal("12.50"), None),
        (4, Decimal("7.00"), None), (5, Decimal("8.25"), None)]


def test_tab_separated() -> None:
    rows, errors = parse("EAN\tCopies\tPrice\tTitle\n"
                         "9787020002207\t2\t39,90\tA title, with a comma\n")
    assert errors == []
    assert rows == [QuoteRow(row=2, isbn="9787020002207", quantity=2,
                             unit_price=Decimal("39.90"), formula=None,
                             title="A title, with a comma")]


def test_header_names_are_aliases_in_any_case_and_order() -> None:
    rows, errors = parse("Distribution_Formula,TITLE,Unit_Price,ISBN-13,QTY,Note\n"
                         "f1,T,1.00,9787020002207,4,ignored\n")
    assert errors == []
    assert rows == [QuoteRow(row=2, isbn="9787020002207", quantity=4,
                             unit_price=Decimal("1.00"), formula="f1", title="T")]


def test_a_missing_column_is_named_with_the_header_found() -> None:
    rows, errors = parse("isbn,qty,cost,title\n9787020002207,1,3.00,T\n")
    assert rows == []
    [error] = errors
    assert (error.row, error.field) == (1, "price")
    assert "no price column" in error.message
    assert "'isbn', 'qty', 'cost', 'title'" in error.message

    rows, errors = parse("title\nT\n")
    assert [(e.row, e.field) for e in errors] == [(1, "isbn"), (1, "quantity"), (1, "price")]


def test_a_column_given_twice_is_refused() -> None:
    assert errors_of("isbn,ean,qty,price\n1,2,1,1.00\n") == [(1, "isbn")]


@pytest.mark.parametrize(("cells", "field", "says"), [
    (",1,1.00", "isbn", "isbn: missing"),
    ("9.78702E+12,1,1.00", "isbn", "digits are lost"),
    ("9" * 33 + ",1,1.00", "isbn", "at most 32"),
    ("9787020002207,3.5,1.00", "quantity",
     "quantity: '3.5' is not a whole number of copies (1-10000)"),
    ("9787020002207,two,1.00", "quantity", "'two' is not a whole number"),
    ("9787020002207,0,1.00", "quantity", "'0' is out of range"),
    ("9787020002207,-2,1.00", "quantity", "'-2' is out of range"),
    (f"9787020002207,{MAX_QUANTITY + 1},1.00", "quantity", "out of range"),
    ("9787020002207," + "9" * 5000 + ",1.00", "quantity", "out of range"),
    ("9787020002207,,1.00", "quantity", "quantity: missing"),
    ("9787020002207,1,-3", "price", "price: '-3' is negative"),
    ("9787020002207,1,-0.01", "price", "negative"),
    ("9787020002207,1,abc", "price", "'abc' is not a price"),
    ("9787020002207,1,12.505", "price", "more than 2 decimal places"),
    ("9787020002207,1,NaN", "price", "'NaN' is not a price"),
    ("9787020002207,1,Infinity", "price", "'Infinity' is not a price"),
    ("9787020002207,1,-inf", "price", "not a price"),
    ("9787020002207,1,1e3", "price", "not a price"),
    ("9787020002207,1,1.234.50", "price", "not a price"),
    ('9787020002207,1,"12,50"', "price", "decimal comma in a comma-separated file"),
    ("9787020002207,1,", "price", "price: missing"),
    ("9787020002207,1,1" + "0" * 12, "price", "too large"),
    ("9787020002207,1,¥12.50 USD", "price", "two currencies"),
    ("9787020002207,1,1.00,,,,,999", "year", "year: '999' is not a year"),
    ("9787020002207,1,1.00,,,,,0999", "year", "out of range"),
    ("9787020002207,1,1.00,,,,,2101", "year", "'2101' is out of range; expected 1000-2100"),
    ("9787020002207,1,1.00,,,,,circa 1990", "year", "not a year"),
    ("9787020002207,1,1.00,,," + "a" * 501, "author", "at most 500"),
    ("9787020002207,1,1.00,,,," + "p" * 501 + ",", "publisher", "at most 500"),
    ("9787020002207,1,1.00,," + "t" * 1001, "title", "at most 1000"),
    ("9787020002207,1,1.00," + "f" * 65, "formula", "at most 64"),
])
def test_each_bad_value_is_named_by_row_and_field(cells: str, field: str, says: str) -> None:
    header = "isbn,quantity,price,formula,title,author,publisher,year"
    width = header.count(",") + 1
    cells += "," * (width - len(next(csv.reader([cells]))))
    good = "9787544253994,1,2.00,,,,,"
    rows, errors = parse(f"{header}\n{good}\n{cells}\n{good}\n")
    assert [(r.row, r.isbn) for r in rows] == [(2, "9787544253994"), (4, "9787544253994")]
    [error] = errors
    assert (error.row, error.field) == (3, field)
    assert says in error.message, error.message
    assert error.message.startswith(f"{field}: ")


def test_every_bad_field_of_a_row_is_reported_in_column_order() -> None:
    assert errors_of("year,price,quantity,isbn\n"
                     "1,-1,0,\n"
                     "2019,1.00,1,9787020002207\n") == [
        (2, "year"), (2, "price"), (2, "quantity"), (2, "isbn")]


def test_prices_in_the_forms_vendors_write_them() -> None:
    cases = {"12.50": "12.50", "12.5": "12.50", "12": "12.00", ".5": "0.50", "0": "0.00",
             "¥12.50": "12.50", "￥ 12.50": "12.50", "12.50 CNY": "12.50",
             "CNY 12.50": "12.50", "12.50元": "12.50", "RMB12.50": "12.50",
             "¥12.50 CNY": "12.50", "12.500": "12.50", "00012.50": "12.50",
             "999999999999.99": "999999999999.99"}
    text = "isbn,qty,price\n" + "".join(f"978,1,{given}\n" for given in cases)
    rows, errors = parse(text)
    assert errors == []
    assert [str(r.unit_price) for r in rows] == list(cases.values())


def test_one_file_is_in_one_currency() -> None:
    rows, errors = parse("isbn,qty,price\n978,1,1.00\n978,1,¥2.00\n978,1,3.00 USD\n"
                         "978,1,4.00 CNY\n")
    assert [r.row for r in rows] == [2, 3, 5]
    [error] = errors
    assert (error.row, error.field) == (4, "price")
    assert "USD" in error.message and "line 3 is in CNY" in error.message


def test_quantities_and_years_as_spreadsheets_write_them() -> None:
    rows, errors = parse("isbn,qty,price,year\n"
                         "978,3.0,1,1991.0\n"
                         "978, \uff14 ,1,2019年\n"  # a fullwidth 4
                         "978,+5,1,2019.05\n"
                         f"978,{MAX_QUANTITY},1,\n")
    assert errors == []
    assert [(r.quantity, r.year) for r in rows] == [
        (3, 1991), (4, 2019), (5, 2019), (MAX_QUANTITY, None)]


def test_an_isbn_excel_kept_as_text_is_unwrapped() -> None:
    rows, errors = parse('isbn,qty,price\n="9787020002207",1,1.00\n'
                         '"=""9787020002208""",1,1.00\n')
    assert errors == []
    assert [r.isbn for r in rows] == ["9787020002207", "9787020002208"]


def test_a_row_with_too_many_or_too_few_cells() -> None:
    rows, errors = parse("isbn,qty,price,title\n"
                         "978,1,1.00\n"              # too few
                         "978,1,12,50,T\n"           # too many: an unquoted decimal comma
                         "978,1,1.00,T,,\n"          # empty cells a spreadsheet added
                         "979,1,2.00,T\n")
    assert [(e.row, e.field) for e in errors] == [(2, "row"), (3, "row")]
    assert "3 cells where the header has 4 columns" in errors[0].message
    assert "decimal comma" in errors[1].message
    assert [r.row for r in rows] == [4, 5]


def test_blank_lines_are_skipped_and_rows_keep_their_line_numbers() -> None:
    rows, errors = parse("\n  \nisbn,qty,price\n\n978,1,1.00\n,,\n\n979,2,2.00\n\n")
    assert errors == []
    assert [(r.row, r.isbn) for r in rows] == [(5, "978"), (8, "979")]
    assert errors_of("\nisbn,qty\n") == [(2, "price")]


def test_a_quoted_cell_over_two_lines_is_numbered_by_its_first_line() -> None:
    rows, errors = parse('isbn,qty,price,title\n978,1,1.00,"Two\nlines"\n979,1,1.00,T\n')
    assert errors == []
    assert [(r.row, r.title) for r in rows] == [(2, "Two\nlines"), (4, "T")]


def test_an_unclosed_quote_is_reported() -> None:
    assert errors_of('isbn,qty,price\n978,1,"1.00\n979,1,2.00\n') == [(2, "price")]
    rows, errors = parse('isbn,qty,price\n978,1,1.00\n979,1,"' + "x" * 200_000 + "\n")
    assert [r.row for r in rows] == [2]
    assert [(e.row, e.field) for e in errors] == [(3, "row")]
    assert "left open" in errors[0].message


def test_more_rows_than_allowed_stops_with_one_error() -> None:
    text = "isbn,qty,price\n" + "".join(f"97{i},1,1.00\n\n" for i in range(5))
    rows, errors = parse(text, max_rows=3)
    assert [r.isbn for r in rows] == ["970", "971", "972"]
    assert [(e.row, e.field) for e in errors] == [(8, "file")]
    assert "more than 3 rows" in errors[0].message
    assert parse(text, max_rows=5) == (parse(text)[0], [])
    # Bad rows count too.
    rows, errors = parse("isbn,qty,price\n" + "978,x,1\n" * 4, max_rows=3)
    assert [(e.row, e.field) for e in errors] == [
        (2, "quantity"), (3, "quantity"), (4, "quantity"), (5, "file")]


@pytest.mark.parametrize(("data", "says"), [
    (b"", "no header line"),
    (b"\n\r\n  \n,,,\n", "no header line"),
    (b"isbn,qty,price\n\x80\xff\n", "neither UTF-8 nor GB18030"),
    ("isbn,qty,price\n".encode("utf-16"), "UTF-16"),
    (b"PK\x03\x04\x14\x00\x06\x00", ".xlsx"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ".xls"),
    (b"isbn,qty,price\n978,1\x00,1\n", "NUL"),
])
def test_a_file_that_is_not_csv_text_is_one_error(data: bytes, says: str) -> None:
    rows, errors = parse_quote_csv(data)
    assert rows == []
    [error] = errors
    assert (error.row, error.field) == (0, "file")
    assert says in error.message


def test_a_header_alone_is_no_rows_and_no_errors() -> None:
    assert parse("isbn,qty,price\n") == ([], [])


# --- properties -----------------------------------------------------------------------------

CSV_ALPHABET = list('isbnqtyprcefomula,;\t"\n\r 0123456789.-+eE¥元CNYX=')
CSV_HEADERS = st.sampled_from(["isbn,qty,price,year,title\n", "isbn;qty;price;formula\n",
                               "isbn\tqty\tprice\n", ""])


def check_result(result: tuple[list[QuoteRow], list[RowError]]) -> None:
    rows, errors = result
    for error in errors:
        assert error.row >= 0 and error.message and error.field in FIELDS
    for row in rows:
        assert row.row >= 2 and row.isbn and row.isbn == row.isbn.strip()
        assert 1 <= row.quantity <= MAX_QUANTITY
        assert row.unit_price >= 0 and row.unit_price.as_tuple().exponent == -2
        assert row.year is None or 1000 <= row.year <= 2100


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400)
       | st.tuples(CSV_HEADERS, st.text(alphabet=st.sampled_from(CSV_ALPHABET), max_size=300))
       .map(lambda parts: (parts[0] + parts[1]).encode()))
def test_any_bytes_are_read_or_refused_without_raising(data: bytes) -> None:
    check_result(parse_quote_csv(data))
    check_result(parse_quote_csv(data, max_rows=1))


TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")),
               min_size=1, max_size=20).map(str.strip).filter(bool)
ISBNS = st.from_regex(r"[0-9][0-9 X-]{0,15}[0-9X]", fullmatch=True)
PRICE_FORMS = ["{}", "¥{}", "{} CNY", "{}元", "RMB {}", "￥ {}"]
OPTIONAL = ("formula", "title", "author", "publisher", "year")


@st.composite
def quote_files(draw: st.DrawFn) -> tuple[bytes, list[QuoteRow]]:
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    optional = draw(st.lists(st.sampled_from(OPTIONAL), unique=True))
    extra = draw(st.booleans())
    columns = draw(st.permutations(["isbn", "quantity", "price", *optional]
                                   + (["note"] if extra else [])))
    header = []
    for column in columns:
        name = draw(st.sampled_from(ALIASES.get(column, ("note",))))
        header.append("".join(c.upper() if draw(st.booleans()) else c for c in name))
    expected: list[QuoteRow] = []
    lines = [header]
    for i in range(draw(st.integers(0, 8))):
        cents = draw(st.integers(0, 10**14 - 1))
        amount = f"{cents // 100}.{cents % 100:02d}"
        if delimiter != "," and draw(st.booleans()):
            amount = amount.replace(".", ",")
        row = QuoteRow(
            row=i + 2, isbn=draw(ISBNS), quantity=draw(st.integers(1, MAX_QUANTITY)),
            unit_price=Decimal(cents).scaleb(-2),
            formula=draw(st.none() | TEXT) if "formula" in optional else None,
            title=draw(st.none() | TEXT) if "title" in optional else None,
            author=draw(st.none() | TEXT) if "author" in optional else None,
            publisher=draw(st.none() | TEXT) if "publisher" in optional else None,
            year=draw(st.none() | st.integers(1000, 2100)) if "year" in optional else None)
        cells = {"isbn": row.isbn, "quantity": str(row.quantity),
                 "price": draw(st.sampled_from(PRICE_FORMS)).format(amount),
                 "formula": row.formula, "title": row.title, "author": row.author,
                 "publisher": row.publisher,
                 "year": None if row.year is None else str(row.year),
                 "note": draw(st.none() | TEXT)}
        lines.append([cells[c] or "" for c in columns])
        expected.append(row)
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter,
               lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"]))
    return out.getvalue().encode(encoding), expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quote_files())
def test_a_generated_valid_file_reads_back_to_its_rows(
    case: tuple[bytes, list[QuoteRow]],
) -> None:
    data, expected = case
    assert parse_quote_csv(data) == (expected, [])
