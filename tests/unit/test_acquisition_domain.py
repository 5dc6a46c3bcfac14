"""Acquisition's rules: distributions, fund checks, receiving against a distribution."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from services.acquisition import domain
from services.acquisition.domain import (
    FundBalance,
    InvalidInput,
    OverBudget,
    OverReceipt,
    PricedLine,
    Share,
    WrongStatus,
)


def counter_ids():
    numbers = itertools.count(1)
    return lambda: f"c{next(numbers)}"


# --- totals and distributions ---------------------------------------------------------------


def test_order_total_is_exact_decimal_sum_of_lines() -> None:
    lines = [PricedLine(Decimal("38.50"), 3), PricedLine(Decimal("0.10"), 3)]
    assert domain.order_total(lines) == Decimal("115.80")
    assert domain.order_total([]) == Decimal("0")


def test_distribution_gives_out_at_most_the_quantity() -> None:
    domain.check_distribution(5, [Share("JX-HN-01", 3), Share("JX-HY-02", 2)])
    domain.check_distribution(5, [Share("JX-HN-01", 3)])  # the rest is unallocated, shown
    with pytest.raises(InvalidInput, match="add up to 6, but the line orders 5"):
        domain.check_distribution(5, [Share("JX-HN-01", 6)])


def test_formulas_stack_after_the_lines_own_entries_and_report_what_did_not_fit() -> None:
    county = ("county", [("A", 2), ("B", 2)])
    towns = ("towns", [("B", 1), ("C", 3)])
    got = domain.allocate(7, [Share("Z", 1)], [county, towns])
    assert [(s.branch, s.copies) for s in got.shares] == [("Z", 1), ("A", 2), ("B", 3),
                                                          ("C", 1)]
    assert got.unallocated == 0
    assert got.not_applied == [("towns", "C", 2)]
    short = domain.allocate(10, [], [county])
    assert (short.unallocated, short.not_applied) == (6, [])


def test_distribution_names_each_branch_once() -> None:
    with pytest.raises(InvalidInput, match="JX-HN-01"):
        domain.check_distribution(4, [Share("JX-HN-01", 2), Share("JX-HN-01", 2)])


@pytest.mark.parametrize(
    ("quantity", "branches", "expected"),
    [
        (7, ["A", "B", "C"], [("A", 3), ("B", 2), ("C", 2)]),
        (6, ["A", "B", "C"], [("A", 2), ("B", 2), ("C", 2)]),
        (2, ["A", "B", "C"], [("A", 1), ("B", 1)]),
        (5, ["A"], [("A", 5)]),
    ],
)
def test_split_copies_evenly_with_remainder_first(quantity: int, branches: list[str],
                                                  expected: list[tuple[str, int]]) -> None:
    shares = domain.split_copies(quantity, branches)
    assert [(s.branch, s.copies) for s in shares] == expected
    domain.check_distribution(quantity, shares)  # always a valid distribution


@pytest.mark.parametrize(("quantity", "branches"), [(0, ["A"]), (3, []), (3, ["A", "A"])])
def test_split_copies_refuses_what_cannot_be_split(quantity: int, branches: list[str]) -> None:
    with pytest.raises(ValueError):
        domain.split_copies(quantity, branches)


# --- funds ----------------------------------------------------------------------------------


def test_opening_encumbers_within_the_budget() -> None:
    fund = FundBalance(Decimal("1000.00"), Decimal("200.00"), Decimal("300.00"), "CNY")
    assert fund.available == Decimal("500.00")
    after = fund.encumber(Decimal("500.00"))  # exactly the rest is fine
    assert after.encumbered == Decimal("700.00")
    assert after.available == Decimal("0.00")


def test_opening_past_the_budget_is_refused_saying_by_how_much() -> None:
    fund = FundBalance(Decimal("1000.00"), Decimal("200.00"), Decimal("300.00"), "CNY",
                       fund_code="ADULT")
    with pytest.raises(OverBudget, match=r"fund 'ADULT'.* by 0\.01 CNY") as refused:
        fund.encumber(Decimal("500.01"))
    assert refused.value.shortfall == Decimal("0.01")


def test_stop_and_warn_percentages() -> None:
    fund = FundBalance(Decimal("1000"), Decimal("0"), Decimal("0"), "CNY",
                       warn_percent=Decimal("80"), stop_percent=Decimal("95"))
    with pytest.raises(OverBudget) as refused:
        fund.encumber(Decimal("950.01"))
    assert refused.value.shortfall == Decimal("0.01")
    assert not fund.encumber(Decimal("800")).warns()
    assert fund.encumber(Decimal("800.01")).warns()
    over = FundBalance(Decimal("1000"), Decimal("0"), Decimal("0"), "CNY",
                       stop_percent=Decimal("110"))
    assert over.encumber(Decimal("1100")).available == Decimal("-100")  # allowed overspend


def test_paying_moves_money_from_encumbered_to_spent() -> None:
    fund = FundBalance(Decimal("100"), Decimal("0"), Decimal("0"), "CNY").encumber(Decimal("60"))
    fund = fund.pay(Decimal("20"), Decimal("21.50"))
    assert (fund.encumbered, fund.spent, fund.available) == (Decimal("40"), Decimal("21.50"),
                                                             Decimal("38.50"))
    fund = fund.release(Decimal("40"))
    assert (fund.encumbered, fund.available) == (Decimal("0"), Decimal("78.50"))


def test_a_line_encumbers_net_of_discount_and_pays_with_a_variance() -> None:
    price = domain.net_price(Decimal("39.90"), Decimal("15"))
    assert price == Decimal("33.92")  # 33.915 rounded half up
    line = domain.LineMoney(price, 10).opened()
    assert line.encumbered == Decimal("339.20")
    line, released = line.cancel(2)
    assert (released, line.encumbered, line.live) == (Decimal("67.84"), Decimal("271.36"), 8)
    line, relieved = line.pay(8, Decimal("280.00"))
    assert (relieved, line.encumbered, line.spent) == (Decimal("271.36"), Decimal("0.00"),
                                                       Decimal("280.00"))
    with pytest.raises(domain.OverInvoice):
        line.pay(1, Decimal("1"))


def test_cancelling_takes_copies_from_the_last_branch_back() -> None:
    shares = [Share("A", 2, received=1), Share("B", 2), Share("C", 1)]
    after = domain.cancel_copies(shares, 3)
    assert [(s.branch, s.remaining) for s in after] == [("A", 1), ("B", 0), ("C", 0)]
    with pytest.raises(domain.OverCancel):
        domain.cancel_copies(shares, 5)


def test_an_order_settles_by_what_its_lines_say() -> None:
    P = domain.LineProgress
    assert domain.settled_status([P(3, 0, 0)], Decimal("10")) == "open"
    assert domain.settled_status([P(3, 1, 0)], Decimal("10")) == "partially_received"
    assert domain.settled_status([P(3, 1, 2)], Decimal("5")) == "received"
    assert domain.settled_status([P(3, 3, 0)], Decimal("0")) == "closed"
    assert domain.settled_status([P(3, 0, 3)], Decimal("0")) == "cancelled"


def test_large_runs_are_split_under_the_budget() -> None:
    runs = domain.chunks(list(range(10)), lambda n: 3, 10)
    assert runs == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert domain.chunks([], lambda n: 1, 10) == []
    assert domain.chunks(["big"], lambda s: 99, 10) == [["big"]]


# --- order status ---------------------------------------------------------------------------


def test_staff_move_an_order_from_draft_to_open_or_cancel_it() -> None:
    assert domain.transition("draft", "open") == "open"
    assert domain.transition("open", "cancelled") == "cancelled"
    assert domain.transition("draft", "cancelled") == "cancelled"


@pytest.mark.parametrize(("status", "to"), [("open", "open"), ("closed", "open"),
                                             ("draft", "closed"), ("cancelled", "open"),
                                             ("received", "cancelled")])
def test_order_refuses_other_moves(status: str, to: str) -> None:
    with pytest.raises(WrongStatus, match=status):
        domain.transition(status, to)


# --- receiving ------------------------------------------------------------------------------


def test_receipt_fills_each_branch_share_before_the_next() -> None:
    shares = [Share("JX-HN-01", 2), Share("JX-HY-02", 1)]
    receipt = domain.receive(shares, 3, counter_ids())
    assert [(c.copy_id, c.owning_branch) for c in receipt.copies] == [
        ("c1", "JX-HN-01"), ("c2", "JX-HN-01"), ("c3", "JX-HY-02")]
    assert [s.received for s in receipt.shares] == [2, 1]
    assert all(s.remaining == 0 for s in receipt.shares)


def test_partial_receipts_continue_where_the_last_one_stopped() -> None:
    shares = [Share("A", 2), Share("B", 2), Share("C", 1)]
    first = domain.receive(shares, 3, counter_ids())
    assert [c.owning_branch for c in first.copies] == ["A", "A", "B"]
    assert any(s.remaining for s in first.shares)
    second = domain.receive(first.shares, 1, counter_ids())
    assert [c.owning_branch for c in second.copies] == ["B"]
    third = domain.receive(second.shares, 1, counter_ids())
    assert [c.owning_branch for c in third.copies] == ["C"]
    assert [(s.branch, s.received) for s in third.shares] == [("A", 2), ("B", 2), ("C", 1)]
    assert all(s.remaining == 0 for s in third.shares)


def test_receiving_more_than_remains_is_refused() -> None:
    shares = [Share("A", 2, received=2), Share("B", 1)]
    with pytest.raises(OverReceipt, match="only 1 remain") as refused:
        domain.receive(shares, 2)
    assert (refused.value.asked, refused.value.remaining) == (2, 1)
    with pytest.raises(OverReceipt):
        domain.receive([Share("A", 1, received=1)], 1)


def test_receiving_nothing_is_refused() -> None:
    with pytest.raises(InvalidInput):
        domain.receive([Share("A", 1)], 0)


def test_generated_copy_ids_are_unique() -> None:
    receipt = domain.receive([Share("A", 50)], 50)
    assert len({c.copy_id for c in receipt.copies}) == 50


# --- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["9787020002207", "978-7-02-000220-7", "7-02-000220-X"])
def test_isbns_are_stored_as_isbn13(given: str) -> None:
    assert domain.normalise_isbn(given) == "9787020002207"


def test_isbn10_converts_to_its_isbn13() -> None:
    assert domain.normalise_isbn("0-306-40615-2") == "9780306406157"


@pytest.mark.parametrize("given", ["9787020002208", "7-02-000220-8", "not an isbn"])
def test_numbers_that_do_not_check_out_are_kept_as_given(given: str) -> None:
    assert domain.normalise_isbn(f" {given} ") == given
