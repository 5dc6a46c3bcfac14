"""Cataloging's pure rules: ISBN normalisation, barcodes, provisional call numbers, MARC text."""

from __future__ import annotations

import pytest

from services.cataloging import domain
from services.cataloging.domain import Isbn


@pytest.mark.parametrize(
    ("given", "isbn13"),
    [
        ("0-306-40615-2", "9780306406157"),
        ("0306406152", "9780306406157"),
        ("978-0-306-40615-7", "9780306406157"),
        ("978 0 306 40615 7", "9780306406157"),
        ("0-8044-2957-X", "9780804429573"),
        ("0-8044-2957-x", "9780804429573"),  # a lower-case check digit is the same ISBN
        ("ISBN 7-02-000220-X", "9787020002207"),  # X check digit
        ("7-02-000220-x", "9787020002207"),
        ("0306406152 (pbk.)", "9780306406157"),  # MARC 020$a with its qualifier
        ("978-7-02-000220-7 : CNY38.00", "9787020002207"),
        ("979-10-90636-07-1", "9791090636071"),  # 979 has no ISBN-10 form; kept as given
    ],
)
def test_isbns_normalise_to_isbn13(given: str, isbn13: str) -> None:
    assert domain.normalize_isbn(given) == Isbn(isbn13, True)


def test_isbn10_and_isbn13_forms_of_one_title_meet() -> None:
    forms = ["7-02-000220-X", "702000220x", "978-7-02-000220-7", "9787020002207"]
    assert {domain.normalize_isbn(f) for f in forms} == {Isbn("9787020002207", True)}


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("978-0-306-40615-8", "9780306406158"),  # wrong check digit
        ("0-306-40615-3", "0306406153"),
        ("12-345", "12345"),
        ("0-8044-2958-x (v. 2)", "080442958X"),  # bad check digit, qualifier dropped
    ],
)
def test_invalid_isbns_are_kept_as_digits_and_marked(given: str, kept: str) -> None:
    assert domain.normalize_isbn(given) == Isbn(kept, False)


@pytest.mark.parametrize("given", [None, "", "   ", "n/a", "(pbk.)"])
def test_no_digits_means_no_isbn(given: str | None) -> None:
    assert domain.normalize_isbn(given) is None


def test_luhn_check_digit_matches_the_standard_example() -> None:
    # The textbook Luhn example: 7992739871 is completed by 3.
    assert domain.luhn_check_digit("7992739871") == 3


def test_barcode_format_is_prefix_serial_and_check_digit() -> None:
    code = domain.format_barcode(1)
    assert code == "JX0000000018"
    assert len(code) == 12 and code.startswith("JX") and code[2:].isdigit()
    assert domain.is_valid_barcode(code)


def test_barcodes_of_distinct_serials_are_distinct_and_valid() -> None:
    codes = [domain.format_barcode(n) for n in range(1, 5001)]
    assert len(set(codes)) == len(codes)
    assert all(domain.is_valid_barcode(c) for c in codes)
    assert domain.is_valid_barcode(domain.format_barcode(domain.MAX_SERIAL))


@pytest.mark.parametrize("serial", [0, -1, domain.MAX_SERIAL + 1])
def test_barcode_serial_out_of_range_is_refused(serial: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        domain.format_barcode(serial)


def test_barcode_validator_catches_typos() -> None:
    code = domain.format_barcode(123456789)
    body = code[2:]
    # every single-digit change is caught
    for position in range(len(body)):
        for digit in "0123456789":
            if digit != body[position]:
                typo = "JX" + body[:position] + digit + body[position + 1:]
                assert not domain.is_valid_barcode(typo), typo
    # and a swap of two different neighbours
    swapped = "JX" + body[1] + body[0] + body[2:]
    assert body[0] != body[1] and not domain.is_valid_barcode(swapped)


@pytest.mark.parametrize(
    "code", ["", "JX", "JX000000001", "JX00000000181", "XJ0000000018", "jx0000000018",
             "JX00000000A8", " JX0000000018"],
)
def test_barcode_validator_rejects_malformed_codes(code: str) -> None:
    assert not domain.is_valid_barcode(code)


def test_call_number_is_provisional_class_author_initial_and_year() -> None:
    assert domain.call_number(author="Qian, Zhongshu", title="Fortress besieged",
                              year=1947) == "TBC/Q1947"
    assert domain.call_number(author="钱钟书", title="围城", year=1947) == "TBC/钱1947"


def test_call_number_falls_back_to_title_and_omits_unknown_year() -> None:
    assert domain.call_number(author=None, title="'Tis a title", year=None) == "TBC/T"
    assert domain.call_number(author="  ", title="", year=2001) == "TBC/X2001"
    assert domain.call_number(author="smith", title="t", year=2001,
                              classification="I247.5") == "I247.5/S2001"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Fortress besieged /", "Fortress besieged"),
        ("Qian, Zhongshu,", "Qian, Zhongshu"),
        ("People's Literature Pub. House,", "People's Literature Pub. House"),
        ("Smith, John A.", "Smith, John A."),
        ("A history of Jiaxing.", "A history of Jiaxing"),
        ("Title :", "Title"),
        (" / ", None),
        (None, None),
    ],
)
def test_marc_text_loses_isbd_punctuation(raw: str | None, clean: str | None) -> None:
    assert domain.clean_marc_text(raw) == clean


@pytest.mark.parametrize(
    ("raw", "year"),
    [("c2004.", 2004), ("[1947?]", 1947), ("2019, c2018.", 2019), ("n.d.", None), (None, None),
     ("12345", None)],
)
def test_year_of_a_marc_date(raw: str | None, year: int | None) -> None:
    assert domain.year_of(raw) == year


@pytest.mark.parametrize(("a", "b"), [
    (("Wei cheng /", "Qian, Zhongshu", 1947), ("WEI CHENG", "Zhongshu Qian", 1947)),
    (("围城", "钱锺书著", 1991), ("围 城", "钱锺书", 1991)),
    # full-width letters and space, as a CJK input method types them
    (("\uff37\uff45\uff49\u3000\uff43\uff48\uff45\uff4e\uff47", "Qian Zhongshu", None),
     ("wei-cheng", "qian zhongshu", None)),
    (("诗经", None, None), ("诗经。", "", None)),
])
def test_match_keys_meet_across_case_width_punctuation_and_name_order(
    a: tuple[str, str | None, int | None], b: tuple[str, str | None, int | None],
) -> None:
    assert domain.match_key(*a) == domain.match_key(*b) is not None


@pytest.mark.parametrize(("a", "b"), [
    (("围城", "钱锺书", 1991), ("围城", "钱锺书", 1980)),  # another edition
    (("围城", "钱锺书", 1991), ("围城", "杨绛", 1991)),
    (("诗经", None, None), ("诗经", "佚名", None)),
])
def test_match_keys_keep_editions_and_authors_apart(
    a: tuple[str, str | None, int | None], b: tuple[str, str | None, int | None],
) -> None:
    assert domain.match_key(*a) != domain.match_key(*b)


def test_no_title_no_key() -> None:
    assert domain.match_key("", "Qian", 1947) is None
    assert domain.match_key("...", "Qian", 1947) is None


BRIEF = domain.Description(title="Wei cheng", author="Qian", year=1947)
FULL = domain.Description(title="围城", author="钱锺书", publisher="人民文学出版社", year=1991,
                          language="chi", classification="I246.5",
                          classification_scheme="clc", subjects=("长篇小说",), marc=b"rec")


@pytest.mark.parametrize("on_match", ["overlay", "keep", "merge"])
def test_a_brief_bib_is_overlaid_by_a_full_record_whatever_is_asked(
    on_match: domain.OnMatch,
) -> None:
    outcome, after = domain.apply_match(BRIEF, FULL, on_match)
    assert (outcome, after) == ("overlaid", FULL)


def test_merge_fills_in_only_what_the_bib_lacks_and_unites_subjects() -> None:
    bib = domain.Description(title="围城", author="钱锺书", year=None, subjects=("小说",),
                             classification="I246", classification_scheme="clc", marc=b"old")
    record = domain.Description(title="Fortress", author="Qian", year=1991, language="chi",
                                subjects=("长篇小说", "小说"), classification="I247.5",
                                classification_scheme="ddc", marc=b"new")
    outcome, after = domain.apply_match(bib, record, "merge")
    assert outcome == "merged"
    assert (after.title, after.author, after.year, after.language) == ("围城", "钱锺书", 1991,
                                                                        "chi")
    assert (after.classification, after.classification_scheme) == ("I246", "clc")
    assert (after.subjects, after.marc) == (("小说", "长篇小说"), b"old")
    assert domain.apply_match(after, record, "merge") == ("kept", after)
    assert domain.apply_match(bib, record, "keep") == ("kept", bib)
    assert domain.apply_match(bib, record, "overlay") == ("overlaid", record)
