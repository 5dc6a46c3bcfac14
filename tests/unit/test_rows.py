"""`Row`, the fast constructor every table uses: what SQLModel's would give, cheaper."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from services.circulation.models import Item, Transfer


def test_a_row_holds_its_values_and_the_field_defaults() -> None:
    item = Item(barcode="B1", site="JX-HN-01")
    assert (item.barcode, item.site, item.status, item.owning_branch) == (
        "B1", "JX-HN-01", "in_processing", None)
    assert item.model_fields_set == {"barcode", "site"}
    assert inspect(item).transient  # a new row, pending once added to a session


def test_a_row_changes_like_any_mapped_object() -> None:
    item = Item(barcode="B1")
    item.status = "available"
    assert item.status == "available"
    assert item.model_dump()["status"] == "available"
    assert inspect(item).attrs.status.history.added == ["available"]


def test_rows_do_not_share_state() -> None:
    a, b = Item(barcode="A"), Item(barcode="B")
    a.site = "X"
    assert b.site is None


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError, match="no field 'shelf'"):
        Transfer(transfer_id="T1", shelf="3")


def test_a_list_default_is_each_rows_own() -> None:
    from services.cataloging.models import Bib

    a = Bib(bib_id="a", title="A")
    b = Bib(bib_id="b", title="B")
    a.subjects.append("Fiction")
    assert (a.subjects, b.subjects, Bib(bib_id="c", title="C").subjects) == (
        ["Fiction"], [], [])
